/**
 * model.safetensors.index.json: which shard holds each tensor. Read with a size cap and parsed in
 * slices, like headers: an index is as untrusted as the shards it names.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { ModelStockError } from '../errors';
import { ChunkedMap } from '../util/chunkedMap';
import { CHECK_EVERY, runSliced, runSync, type Sliced } from '../util/sliced';
import { isValidUtf8 } from '../safetensors/header';
import { JsonObject, JsonSyntaxError, parseJson } from '../safetensors/json';

/**
 * Transformers' index for a 1M-tensor model is ~60 MB; real ones are a few hundred KB. A bigger file
 * is refused before it is read, as headers over 100 MB are.
 */
export const MAX_INDEX_SIZE = 64 * 1024 * 1024;

export interface ParsedIndex {
  /** tensor → shard file name, in the index's order. */
  readonly weightMap: ReadonlyMap<string, string>;
  /** shard file name → the first tensor the index puts there (to name in errors about the shard). */
  readonly shards: ReadonlyMap<string, string>;
}

/** Validates the index bytes; `file` names it in errors. */
export function parseIndex(bytes: Uint8Array, file: string): ParsedIndex {
  return runSync(indexSteps(bytes, file));
}

/** Reads and validates `file` in slices of a few ms. */
export async function readIndexFile(file: string): Promise<ParsedIndex> {
  const bytes = await readCapped(file);
  return runSliced(indexSteps(bytes, file));
}

function* indexSteps(bytes: Uint8Array, file: string): Sliced<ParsedIndex> {
  const fail = (message: string, tensor?: string) =>
    new ModelStockError('INVALID_INDEX', message, tensor === undefined ? { file } : { file, tensor });

  if (!(yield* isValidUtf8(bytes))) throw fail('not valid UTF-8');
  let parsed;
  try {
    parsed = yield* parseJson(bytes);
  } catch (cause) {
    if (!(cause instanceof JsonSyntaxError)) throw cause;
    throw new ModelStockError('INVALID_INDEX', `not valid JSON (${cause.message})`, { file, cause });
  }
  const { root, duplicate } = parsed;
  if (duplicate !== undefined) {
    throw new ModelStockError(
      'DUPLICATE_KEY',
      `key ${JSON.stringify(duplicate.key.slice(0, 200))} appears more than once in the index`,
      { file },
    );
  }
  const map = root instanceof JsonObject ? root.get('weight_map') : undefined;
  if (!(map instanceof JsonObject)) throw fail('must be a JSON object with a "weight_map" object');

  const weightMap = new ChunkedMap<string>();
  const shards = new Map<string, string>();
  for (let i = 0; i < map.keys.length; i++) {
    if (i % CHECK_EVERY === CHECK_EVERY - 1) yield;
    const tensor = map.keys[i] as string;
    const shard = map.values[i];
    if (typeof shard !== 'string') {
      throw fail(`weight_map value must be a file name, found ${typeof shard}`, tensor);
    }
    // Shards must be plain file names inside the folder: an index must not reach elsewhere on disk.
    if (shard === '' || shard === '.' || shard === '..' || /[/\\]/.test(shard) || shard.includes('..')) {
      throw fail(
        `shard name ${JSON.stringify(shard.slice(0, 200))} is not a plain file name inside the folder`,
        tensor,
      );
    }
    weightMap.set(tensor, shard);
    if (!shards.has(shard)) shards.set(shard, tensor);
  }
  if (shards.size === 0) throw fail('weight_map names no tensor');
  return { weightMap, shards };
}

async function readCapped(file: string): Promise<Uint8Array> {
  const ioError = (what: string, cause: unknown) =>
    new ModelStockError('IO_ERROR', `${what}: ${(cause as Error).message}`, { file, cause });
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch (cause) {
    throw ioError('cannot read', cause);
  }
  try {
    const size = (await handle.stat()).size;
    if (size > MAX_INDEX_SIZE) {
      throw new ModelStockError(
        'INDEX_TOO_LARGE',
        `index is ${size} bytes, over the limit of ${MAX_INDEX_SIZE} bytes (64 MiB)`,
        { file },
      );
    }
    // Reads what the size said, no more: a file that grows meanwhile cannot get past the cap.
    const bytes = new Uint8Array(size);
    let done = 0;
    while (done < size) {
      const { bytesRead } = await handle.read(bytes, done, size - done, done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return bytes.subarray(0, done);
  } catch (cause) {
    if (cause instanceof ModelStockError) throw cause;
    throw ioError('cannot read', cause);
  } finally {
    await handle.close().catch(() => undefined);
  }
}
