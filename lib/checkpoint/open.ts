/**
 * A checkpoint is a model folder or a single weight file, in any format behind the seam (formats.ts):
 * safetensors (`model.safetensors`, shards named by `model.safetensors.index.json`, a lone
 * `*.safetensors`, or one `.safetensors` file) or PyTorch (`pytorch_model.bin`, shards named by
 * `pytorch_model.bin.index.json`, or one `.bin`/`.pt`/`.pth`/`.ckpt` file) or a PEFT LoRA adapter (a
 * folder with `adapter_config.json`: lib/adapter/). Whatever the format, it
 * becomes one tensor table — name, dtype, shape, file, byte offset, byte length — that the plan and the
 * engine read. Every weight file is validated, and cross-checked against the index, before any tensor is
 * read.
 */
import { open, readdir, stat } from 'node:fs/promises';
import * as path from 'node:path';
import { ModelStockError } from '../errors';
import { ChunkedList, ChunkedMap } from '../util/chunkedMap';
import { CHECK_EVERY, runSliced, type Sliced } from '../util/sliced';
import { chooseWeights, shadowedWarning } from './folder';
import { FORMATS } from './formats';
import { readIndexFile } from './indexFile';
import type { Checkpoint, CheckpointFormat, FormatRead, OpenOptions, TensorInfo } from './types';

export type { OpenOptions } from './types';

export async function openCheckpoint(target: string, options: OpenOptions = {}): Promise<Checkpoint> {
  const abs = path.resolve(target);
  const st = await stat(abs).catch((cause: unknown) => {
    throw new ModelStockError('IO_ERROR', `cannot open checkpoint: ${(cause as Error).message}`, {
      file: abs,
      cause,
    });
  });

  if (!st.isDirectory()) {
    const format = await formatOfFile(abs);
    const read = await format.read(abs, [abs], options);
    return assemble(format, abs, path.dirname(abs), read, undefined, []);
  }

  const names = await readdir(abs).catch((cause: unknown) => {
    throw new ModelStockError('IO_ERROR', `cannot list folder: ${(cause as Error).message}`, {
      file: abs,
      cause,
    });
  });
  const files = new Set<string>();
  for (const name of names) if (await isFile(path.join(abs, name))) files.add(name);
  const choice = chooseWeights(files);
  if (choice.kind === 'none') throw new ModelStockError(choice.code, choice.why, { file: abs });
  const shadowed = shadowedWarning(abs, choice);
  const warnings = shadowed === undefined ? [] : [shadowed];
  const chosen = path.join(abs, choice.file);
  if (choice.kind === 'index') return openSharded(choice.format, abs, chosen, options, warnings);
  return assemble(
    choice.format,
    abs,
    abs,
    await choice.format.read(abs, [chosen], options),
    undefined,
    warnings,
  );
}

/** The format of a weight file named directly: by its name, else by its first bytes. */
async function formatOfFile(file: string): Promise<CheckpointFormat> {
  const claimed = FORMATS.find((f) => f.claims(file));
  if (claimed !== undefined) return claimed;
  const head = new Uint8Array(16);
  try {
    const handle = await open(file, 'r');
    try {
      await handle.read(head, 0, head.byteLength, 0);
    } finally {
      await handle.close();
    }
  } catch (cause) {
    throw new ModelStockError('IO_ERROR', `cannot read: ${(cause as Error).message}`, { file, cause });
  }
  // Neither name nor bytes: read as safetensors, as before there were other formats (its header says what is wrong).
  return (
    FORMATS.find((f) => f.sniff(head)) ?? (FORMATS.find((f) => f.name === 'safetensors') as CheckpointFormat)
  );
}

async function openSharded(
  format: CheckpointFormat,
  dir: string,
  indexFile: string,
  options: OpenOptions,
  warnings: readonly string[],
): Promise<Checkpoint> {
  const fail = (message: string, tensor?: string) =>
    new ModelStockError(
      'INVALID_INDEX',
      message,
      tensor === undefined ? { file: indexFile } : { file: indexFile, tensor },
    );

  const { weightMap, shards: shardNames } = await readIndexFile(indexFile);
  // Sorted names: HF's model-0000i-of-0000n names then sort in shard order.
  const shards = [...shardNames.keys()].sort();
  const files: string[] = [];
  for (const shard of shards) {
    const file = path.join(dir, shard);
    if (!(await isFile(file))) {
      throw fail(`weight_map puts it in "${shard}", which does not exist in ${dir}`, shardNames.get(shard));
    }
    files.push(file);
  }
  const checkpoint = await assemble(
    format,
    dir,
    dir,
    await format.read(dir, files, options),
    indexFile,
    warnings,
  );
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

/** Files in shard order, each file's tensors in the order its format gives; a name in two shards is an error. */
function assemble(
  format: CheckpointFormat,
  target: string,
  dir: string,
  read: FormatRead,
  indexFile: string | undefined,
  warnings: readonly string[],
): Promise<Checkpoint> {
  return runSliced(assembleSteps(format, target, dir, read, indexFile, warnings));
}

function* assembleSteps(
  format: CheckpointFormat,
  target: string,
  dir: string,
  read: FormatRead,
  indexFile: string | undefined,
  warnings: readonly string[],
): Sliced<Checkpoint> {
  const tensors = new ChunkedMap<TensorInfo>();
  const order = new ChunkedList<string>();
  const { files } = read;
  for (const f of files) {
    for (let k = 0; k < f.tensors.length; k++) {
      if (k % CHECK_EVERY === CHECK_EVERY - 1) yield;
      const t = f.tensors[k] as TensorInfo;
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
    format: format.name,
    path: target,
    dir,
    files: files.map((f) => f.file),
    identities: new Map(files.map((f) => [f.file, f.identity])),
    indexFile,
    tensors,
    order: yield* order.toArray(),
    // HF writes the same __metadata__ into every shard; the first shard's speaks for the model.
    metadata: files[0]?.metadata,
    warnings: [...warnings, ...read.warnings],
    ...(read.adapter !== undefined ? { adapter: read.adapter } : {}),
  };
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}
