/**
 * A checkpoint is a folder (one `model.safetensors`, shards named by `model.safetensors.index.json`,
 * or a lone `*.safetensors` file) or a single `.safetensors` file. Every shard's header is validated
 * and cross-checked against the index before any tensor is read.
 */
import { readdir, stat } from 'node:fs/promises';
import * as path from 'node:path';
import { ModelStockError } from '../errors';
import { readSafetensorsFile } from '../safetensors/file';
import { readIndexFile } from './indexFile';
import { ChunkedList, ChunkedMap } from '../util/chunkedMap';
import { CHECK_EVERY, runSliced, sortIndices, type Sliced } from '../util/sliced';
import type { SafetensorsFile } from '../safetensors/types';
import type { Checkpoint, TensorInfo } from './types';

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

export async function openCheckpoint(target: string): Promise<Checkpoint> {
  const abs = path.resolve(target);
  const st = await stat(abs).catch((cause: unknown) => {
    throw new ModelStockError('IO_ERROR', `cannot open checkpoint: ${(cause as Error).message}`, {
      file: abs,
      cause,
    });
  });

  if (!st.isDirectory()) {
    const file = await readSafetensorsFile(abs);
    return assemble(abs, path.dirname(abs), [file], undefined);
  }

  const indexFile = path.join(abs, INDEX_FILE);
  if (await isFile(indexFile)) {
    return openSharded(abs, indexFile);
  }
  if (await isFile(path.join(abs, SINGLE_FILE))) {
    return assemble(abs, abs, [await readSafetensorsFile(path.join(abs, SINGLE_FILE))], undefined);
  }

  const names = await readdir(abs).catch((cause: unknown) => {
    throw new ModelStockError('IO_ERROR', `cannot list folder: ${(cause as Error).message}`, {
      file: abs,
      cause,
    });
  });
  const candidates: string[] = [];
  for (const name of names.filter((n) => n.endsWith('.safetensors')).sort()) {
    if (await isFile(path.join(abs, name))) candidates.push(name);
  }
  const [only] = candidates;
  if (only === undefined) {
    throw new ModelStockError('NO_CHECKPOINT', `no ${SINGLE_FILE}, ${INDEX_FILE} or *.safetensors file`, {
      file: abs,
    });
  }
  if (candidates.length > 1) {
    // Without an index we cannot know whether these are shards of one model or several models.
    throw new ModelStockError(
      'INVALID_INDEX',
      `${candidates.length} .safetensors files (${candidates.join(', ')}) but no ${INDEX_FILE} to say how they fit together`,
      { file: abs },
    );
  }
  return assemble(abs, abs, [await readSafetensorsFile(path.join(abs, only))], undefined);
}

async function openSharded(dir: string, indexFile: string): Promise<Checkpoint> {
  const fail = (message: string, tensor?: string) =>
    new ModelStockError(
      'INVALID_INDEX',
      message,
      tensor === undefined ? { file: indexFile } : { file: indexFile, tensor },
    );

  const { weightMap, shards: shardNames } = await readIndexFile(indexFile);
  // Sorted names: HF's model-0000i-of-0000n names then sort in shard order.
  const shards = [...shardNames.keys()].sort();
  const files: SafetensorsFile[] = [];
  for (const shard of shards) {
    const file = path.join(dir, shard);
    if (!(await isFile(file))) {
      throw fail(`weight_map puts it in "${shard}", which does not exist in ${dir}`, shardNames.get(shard));
    }
    files.push(await readSafetensorsFile(file));
  }

  const checkpoint = await assemble(dir, dir, files, indexFile);
  await runSliced(crossCheck(checkpoint, weightMap, fail));
  return checkpoint;
}

function* crossCheck(
  checkpoint: Checkpoint,
  weightMap: ReadonlyMap<string, string>,
  fail: (message: string, tensor?: string) => ModelStockError,
): Sliced<void> {
  let i = 0;
  for (const [tensor, shard] of weightMap) {
    if (++i % CHECK_EVERY === 0) yield;
    const info = checkpoint.tensors.get(tensor);
    if (info === undefined) throw fail(`weight_map puts it in "${shard}", which does not hold it`, tensor);
    if (path.basename(info.file) !== shard) {
      throw fail(`weight_map puts it in "${shard}" but it is in "${path.basename(info.file)}"`, tensor);
    }
  }
  for (const info of checkpoint.tensors.values()) {
    if (++i % CHECK_EVERY === 0) yield;
    if (!weightMap.has(info.name)) {
      throw fail(`is in "${path.basename(info.file)}" but not in weight_map`, info.name);
    }
  }
}

/** Files in shard order; each file's tensors are put in data-offset order. */
function assemble(
  target: string,
  dir: string,
  files: readonly SafetensorsFile[],
  indexFile: string | undefined,
): Promise<Checkpoint> {
  return runSliced(assembleSteps(target, dir, files, indexFile));
}

function* assembleSteps(
  target: string,
  dir: string,
  files: readonly SafetensorsFile[],
  indexFile: string | undefined,
): Sliced<Checkpoint> {
  const tensors = new ChunkedMap<TensorInfo>();
  const order = new ChunkedList<string>();
  for (const f of files) {
    const offsets = new Float64Array(f.tensors.length);
    f.tensors.forEach((t, i) => (offsets[i] = t.offset));
    yield;
    const byOffset = yield* sortIndices(
      offsets.length,
      (a, b) => (offsets[a] as number) - (offsets[b] as number),
    );
    for (let k = 0; k < byOffset.length; k++) {
      if (k % CHECK_EVERY === CHECK_EVERY - 1) yield;
      const t = f.tensors[byOffset[k] as number] as TensorInfo;
      const other = tensors.get(t.name);
      if (other !== undefined) {
        throw new ModelStockError('DUPLICATE_KEY', `is in both ${other.file} and ${t.file}`, {
          file: indexFile ?? t.file,
          tensor: t.name,
        });
      }
      tensors.set(t.name, t);
      order.push(t.name);
    }
  }
  return {
    format: 'safetensors',
    path: target,
    dir,
    files: files.map((f) => f.file),
    identities: new Map(files.map((f) => [f.file, f.identity])),
    indexFile,
    tensors,
    order: yield* order.toArray(),
    // HF writes the same __metadata__ into every shard; the first shard's speaks for the model.
    metadata: files[0]?.metadata,
  };
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}
