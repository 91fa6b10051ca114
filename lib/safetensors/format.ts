/**
 * safetensors behind the checkpoint seam: `model.safetensors`, shards named by
 * `model.safetensors.index.json`, or a lone `*.safetensors` file. Each file's tensors are put in
 * data-offset order, the order its bytes lie on disk.
 */
import type { CheckpointFormat, TensorInfo, WeightFile } from '../checkpoint/types';
import { CHECK_EVERY, runSliced, sortIndices, type Sliced } from '../util/sliced';
import { readSafetensorsFile } from './file';
import type { SafetensorsFile } from './types';

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

export const safetensorsFormat: CheckpointFormat = {
  name: 'safetensors',
  indexFile: INDEX_FILE,
  singleFile: SINGLE_FILE,
  isLoneFile: (name) => name.endsWith('.safetensors'),
  claims: (file) => file.endsWith('.safetensors'),
  // An 8-byte header length, then the JSON header's "{".
  sniff: (head) => head.byteLength >= 9 && head[8] === 0x7b && head[6] === 0 && head[7] === 0,
  async read(_target, files) {
    const read: WeightFile[] = [];
    for (const file of files) read.push(await runSliced(inOffsetOrder(await readSafetensorsFile(file))));
    return { files: read, warnings: [] };
  },
};

function* inOffsetOrder(f: SafetensorsFile): Sliced<WeightFile> {
  const offsets = new Float64Array(f.tensors.length);
  for (let i = 0; i < f.tensors.length; i++) {
    if (i % CHECK_EVERY === CHECK_EVERY - 1) yield;
    offsets[i] = (f.tensors[i] as TensorInfo).offset;
  }
  const byOffset = yield* sortIndices(
    offsets.length,
    (a, b) => (offsets[a] as number) - (offsets[b] as number),
  );
  const tensors = new Array<TensorInfo>(byOffset.length);
  for (let k = 0; k < byOffset.length; k++) {
    if (k % CHECK_EVERY === CHECK_EVERY - 1) yield;
    tensors[k] = f.tensors[byOffset[k] as number] as TensorInfo;
  }
  return { file: f.file, identity: f.identity, tensors, metadata: f.metadata };
}
