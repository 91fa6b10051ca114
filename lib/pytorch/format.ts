/**
 * PyTorch checkpoints behind the checkpoint seam: `pytorch_model.bin`, shards named by
 * `pytorch_model.bin.index.json` (transformers' layouts), or one `.bin`, `.pt`, `.pth` or `.ckpt` file
 * named directly. What the files' pickles referenced beyond torch's tensors is said once per checkpoint.
 */
import type { CheckpointFormat } from '../checkpoint/types';
import { readPytorchFile, type PytorchFile } from './archive';

export const PYTORCH_INDEX_FILE = 'pytorch_model.bin.index.json';
export const PYTORCH_SINGLE_FILE = 'pytorch_model.bin';

const ZIP_MAGIC = [0x50, 0x4b, 0x03, 0x04];
const LEGACY_MAGIC = [0x80, 0x02, 0x8a, 0x0a];

export const pytorchFormat: CheckpointFormat = {
  name: 'pytorch',
  indexFile: PYTORCH_INDEX_FILE,
  singleFile: PYTORCH_SINGLE_FILE,
  claims: (file) => /\.(bin|pt|pth|ckpt)$/i.test(file),
  sniff: (head) => [ZIP_MAGIC, LEGACY_MAGIC].some((magic) => magic.every((b, i) => head[i] === b)),
  async read(target, files, options) {
    const read: PytorchFile[] = [];
    for (const file of files) read.push(await readPytorchFile(file, options));
    return { files: read, warnings: pytorchWarnings(target, read) };
  },
};

const NAMES_SHOWN = 6;

function named(names: readonly string[]): string {
  return (
    names.slice(0, NAMES_SHOWN).join(', ') +
    (names.length > NAMES_SHOWN ? `, … (${names.length} in all)` : '')
  );
}

/** One warning per kind for the whole checkpoint (its shards' findings together). */
export function pytorchWarnings(target: string, files: readonly PytorchFile[]): string[] {
  const warnings: string[] = [];
  const dangerous = new Set<string>();
  const foreign = new Set<string>();
  for (const f of files) {
    for (const [name, meaning] of f.globals) {
      if (meaning.kind === 'dangerous') dangerous.add(name);
      else if (meaning.kind === 'foreign') foreign.add(name);
    }
  }
  if (dangerous.size > 0) {
    warnings.push(
      `${target}: its pickle names ${named([...dangerous])}, which torch.load would call, running code or ` +
        'commands: NOT run — model-stock interprets pickles as data and never calls anything — but this ' +
        'file was made to run something when loaded: do not load it with torch.load, and check where it came from',
    );
  }
  if (foreign.size > 0) {
    warnings.push(
      `${target}: its pickle references ${named([...foreign])}, beside torch's tensors: recorded, not ` +
        'created (nothing is imported or called); the weights do not need them',
    );
  }
  const first = files[0];
  if (first !== undefined) {
    const ignored = files.reduce((n, f) => n + f.stateDict.ignored, 0);
    const { key } = first.stateDict;
    if (ignored > 0 || key !== undefined) {
      const count = files.reduce((n, f) => n + f.stateDict.count, 0);
      warnings.push(
        `${target}: read the ${count} tensor(s) of ${key === undefined ? 'the top-level dict' : `"${key}"`}` +
          (ignored > 0
            ? `; left out ${ignored} other entr${ignored === 1 ? 'y' : 'ies'} (${first.stateDict.ignoredNames.join(', ')}` +
              `${ignored > first.stateDict.ignoredNames.length ? ', …' : ''}) — optimizer state, ` +
              'step counts, settings and other values are not weights'
            : '') +
          first.stateDict.alternatives
            .map((k) => `; "${k}" holds tensors too: --state-dict-key ${k} (API: stateDictKey) reads those`)
            .join(''),
      );
    }
    if (files.some((f) => f.stateDict.strippedPrefix)) {
      warnings.push(
        `${target}: every tensor name starts with "module." (saved from DistributedDataParallel): read without it`,
      );
    }
  }
  return warnings;
}
