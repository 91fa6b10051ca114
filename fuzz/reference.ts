/**
 * The oracles the fuzz targets compare against: the header and index validation as they were before
 * the sliced parser (JSON.parse + a key scan), kept verbatim apart from names. They are slow and stall
 * on big inputs and overflow the stack on deep ones, which is why they were replaced, but on the
 * small inputs of a fuzz run they define what every input must give: the same parse, or an error
 * with the same code. (scanKeys, the key scan, is unchanged in lib/safetensors/header.ts.)
 */
import { ModelStockError, type ErrorCode } from '../lib/errors';
import { dtypeBits, isKnownDType, type DType } from '../lib/dtype';
import { scanKeys } from '../lib/safetensors/header';
import type { TensorInfo } from '../lib/checkpoint/types';

interface ParsedHeader {
  /** In header (JSON) order. */
  tensors: TensorInfo[];
  metadata: Record<string, string> | undefined;
}

const METADATA_KEY = '__metadata__';
const ENTRY_KEYS = ['dtype', 'shape', 'data_offsets'] as const;

/**
 * Validates the header bytes of `file` (the N bytes after the length prefix). `fileSize` and
 * `dataStart` (8 + N) let it check that the data section ends exactly at the end of the file.
 */
export function referenceParseHeader(
  json: Uint8Array,
  file: string,
  fileSize: number,
  dataStart: number,
): ParsedHeader {
  const fail = (code: ErrorCode, message: string, tensor?: string) =>
    new ModelStockError(code, message, tensor === undefined ? { file } : { file, tensor });

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(json);
  } catch (cause) {
    throw new ModelStockError('INVALID_HEADER_UTF8', 'header is not valid UTF-8', { file, cause });
  }

  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (cause) {
    throw new ModelStockError('INVALID_HEADER', `header is not valid JSON (${(cause as Error).message})`, {
      file,
      cause,
    });
  }
  if (!isPlainObject(root)) {
    throw fail('INVALID_HEADER', `header must be a JSON object, found ${describe(root)}`);
  }

  // JSON.parse keeps the last of duplicate keys without a word; look at the text itself.
  const scan = scanKeys(text);
  const dup = scan.duplicate;
  if (dup !== undefined) {
    const [first] = dup.within;
    if (first === undefined) {
      throw fail('DUPLICATE_KEY', `key appears more than once in the header`, dup.key);
    }
    const where = [...dup.within, dup.key].map((k) => JSON.stringify(k)).join(' → ');
    const tensor = first === METADATA_KEY ? undefined : first;
    throw fail('DUPLICATE_KEY', `key ${where} appears more than once in the header`, tensor);
  }

  let metadata: Record<string, string> | undefined;
  const entries: { name: string; dtype: DType; shape: number[]; begin: number; end: number }[] = [];
  for (const name of scan.topLevel) {
    const value = root[name];
    if (name === METADATA_KEY) {
      metadata = parseMetadata(value, fail);
      continue;
    }
    if (!isPlainObject(value)) {
      throw fail('INVALID_HEADER', `entry must be an object, found ${describe(value)}`, name);
    }
    for (const key of ENTRY_KEYS) {
      if (!Object.prototype.hasOwnProperty.call(value, key)) {
        throw fail('INVALID_HEADER', `entry has no "${key}"`, name);
      }
    }
    const extra = Object.keys(value).filter((k) => !(ENTRY_KEYS as readonly string[]).includes(k));
    if (extra.length > 0) {
      throw fail(
        'INVALID_HEADER',
        `unexpected key(s) ${extra.map((k) => `"${k}"`).join(', ')} in entry`,
        name,
      );
    }

    const dtype = value['dtype'];
    if (typeof dtype !== 'string') {
      throw fail('INVALID_HEADER', `dtype must be a string, found ${describe(dtype)}`, name);
    }
    if (!isKnownDType(dtype)) {
      throw fail('UNKNOWN_DTYPE', `unknown dtype ${JSON.stringify(dtype)}`, name);
    }

    const shape = value['shape'];
    if (!Array.isArray(shape) || !shape.every(isNonNegativeSafeInteger)) {
      throw fail(
        'INVALID_SHAPE',
        `shape must be an array of non-negative integers, found ${clip(shape)}`,
        name,
      );
    }

    const offsets = value['data_offsets'];
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every(isNonNegativeSafeInteger) ||
      (offsets[0] as number) > (offsets[1] as number)
    ) {
      throw fail(
        'INVALID_OFFSETS',
        `data_offsets must be [begin, end] with 0 <= begin <= end, found ${clip(offsets)}`,
        name,
      );
    }
    entries.push({
      name,
      dtype,
      shape: shape as number[],
      begin: offsets[0] as number,
      end: offsets[1] as number,
    });
  }

  // The crate sorts by (begin, end) and requires each tensor to start where the previous one ended,
  // starting at 0: this rules out gaps (hidden bytes) and overlaps (aliased tensors) alike.
  const byOffset = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expected = 0;
  let previous: string | undefined;
  for (const e of byOffset) {
    if (e.begin !== expected) {
      const after =
        previous === undefined ? 'the data section starts at 0' : `"${previous}" ends at ${expected}`;
      const kind = e.begin > expected ? 'gap' : 'overlap';
      throw fail(
        'INVALID_OFFSET',
        `data_offsets [${e.begin}, ${e.end}] begin at ${e.begin} but ${after} (${kind})`,
        e.name,
      );
    }
    expected = e.end;
    previous = e.name;

    // BigInt: a shape such as [2**40, 2**40] overflows doubles silently (the crate: ValidationOverflow).
    const elements = e.shape.reduce((n, d) => n * BigInt(d), 1n);
    const bits = elements * BigInt(dtypeBits(e.dtype));
    const held = e.end - e.begin;
    const shapeText = `${e.dtype} [${e.shape.join(', ')}]`;
    if (bits % 8n !== 0n) {
      throw fail(
        'TENSOR_INVALID_INFO',
        `${shapeText} is ${elements} elements × ${dtypeBits(e.dtype)} bits, not a whole number of bytes`,
        e.name,
      );
    }
    const needed = bits / 8n;
    if (needed > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw fail('TENSOR_INVALID_INFO', `${shapeText} needs ${needed} bytes: the size overflows`, e.name);
    }
    if (BigInt(held) !== needed) {
      throw fail(
        'TENSOR_INVALID_INFO',
        `data_offsets [${e.begin}, ${e.end}] hold ${held} bytes but ${shapeText} needs ${needed}`,
        e.name,
      );
    }
  }

  // The last tensor must end exactly at the end of the file: no trailing bytes, no truncation.
  if (dataStart + expected !== fileSize) {
    const dataBytes = fileSize - dataStart;
    const why = dataBytes > expected ? `${dataBytes - expected} trailing bytes` : 'the file is truncated';
    throw fail(
      'METADATA_INCOMPLETE_BUFFER',
      `tensors end at data offset ${expected} but the data section holds ${dataBytes} bytes (${why})`,
    );
  }

  return {
    tensors: entries.map((e) => ({
      name: e.name,
      dtype: e.dtype,
      shape: e.shape,
      offset: dataStart + e.begin,
      byteLength: e.end - e.begin,
      file,
    })),
    metadata,
  };
}

function parseMetadata(
  value: unknown,
  fail: (code: 'INVALID_METADATA', message: string) => ModelStockError,
): Record<string, string> | undefined {
  // The crate's `Option<HashMap<String, String>>` reads `null` as absent.
  if (value === null) return undefined;
  if (!isPlainObject(value)) {
    throw fail('INVALID_METADATA', `__metadata__ must be an object of strings, found ${describe(value)}`);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') {
      throw fail('INVALID_METADATA', `__metadata__ value for "${k}" must be a string, found ${describe(v)}`);
    }
    out[k] = v;
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isNonNegativeSafeInteger(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${clip(v)}`;
}

/** JSON of a value, shortened: a hostile header can make any field huge. */
function clip(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** The index checks of openSharded before any shard is opened (the text decoded as readFile did). */
export function referenceParseIndex(
  bytes: Uint8Array,
  indexFile: string,
): { weightMap: Map<string, string>; shards: Map<string, string> } {
  const fail = (message: string, tensor?: string) =>
    new ModelStockError(
      'INVALID_INDEX',
      message,
      tensor === undefined ? { file: indexFile } : { file: indexFile, tensor },
    );
  const text = Buffer.from(bytes).toString('utf8');
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (cause) {
    throw new ModelStockError('INVALID_INDEX', `not valid JSON (${(cause as Error).message})`, {
      file: indexFile,
      cause,
    });
  }
  const dup = scanKeys(text).duplicate;
  if (dup !== undefined) {
    throw new ModelStockError('DUPLICATE_KEY', `key "${dup.key}" appears more than once in the index`, {
      file: indexFile,
    });
  }
  if (!isPlainObject(root) || !isPlainObject(root['weight_map'])) {
    throw fail('must be a JSON object with a "weight_map" object');
  }

  const weightMap = new Map<string, string>();
  const shardNames = new Map<string, string>();
  for (const [tensor, shard] of Object.entries(root['weight_map'])) {
    if (typeof shard !== 'string')
      throw fail(`weight_map value must be a file name, found ${typeof shard}`, tensor);
    if (shard === '' || shard === '.' || shard === '..' || /[/\\]/.test(shard) || shard.includes('..')) {
      throw fail(`shard name ${JSON.stringify(shard)} is not a plain file name inside the folder`, tensor);
    }
    weightMap.set(tensor, shard);
    if (!shardNames.has(shard)) shardNames.set(shard, tensor);
  }
  if (shardNames.size === 0) throw fail('weight_map names no tensor');
  return { weightMap, shards: shardNames };
}
