/**
 * Validation of a safetensors header, rule for rule after the reference crate
 * (huggingface/safetensors `safetensors/src/tensor.rs`: `read_metadata` and `Metadata::validate`).
 *
 * Where the crate is lenient we are stricter, because a merge that silently reads the wrong bytes is
 * worse than a refusal:
 * - duplicate keys: serde's HashMap keeps the last one; we reject them (DUPLICATE_KEY);
 * - extra keys in a tensor entry: the crate's `TensorInfo` does not deny unknown fields; we do
 *   (INVALID_HEADER), so a typo such as `data_offset` cannot pass unnoticed;
 * - a UTF-8 byte-order mark is kept (not stripped) so it fails JSON parsing, as in serde_json.
 *
 * A header may be 100 MB (1.5M tensors): it is parsed by lib/safetensors/json.ts and checked in
 * slices, entries as they are parsed, so the event loop keeps turning (JSON.parse of such a header
 * held it for 12 s). The order in which rules speak is the whole-text order of the reference: a
 * syntax error anywhere, then a non-object, then a duplicate key anywhere, then the first entry (in
 * text order) that breaks a rule, then offsets and sizes in data order.
 */
import { isUtf8 } from 'node:buffer';
import { ModelStockError, type ErrorCode } from '../errors';
import { DTYPE_BITS, DTYPE_SIZES, dtypeBits, isKnownDType, type DType } from '../dtype';
import { ChunkedList } from '../util/chunkedMap';
import { CHECK_EVERY, runSliced, runSync, sortIndices, type Sliced } from '../util/sliced';
import { JsonObject, JsonSyntaxError, parseJson, type JsonValue } from './json';
import type { TensorInfo } from '../checkpoint/types';

export interface ParsedHeader {
  /** In header (JSON) order. */
  tensors: TensorInfo[];
  metadata: Record<string, string> | undefined;
}

const METADATA_KEY = '__metadata__';
const ENTRY_KEYS = ['dtype', 'shape', 'data_offsets'] as const;
/** Distinct shapes remembered for sharing; a hostile header with more gets the rest unshared. */
const MAX_SHARED_SHAPES = 1 << 16;
/** Strings a header repeats for every tensor: shared rather than held once per tensor. */
const HEADER_WORDS = [METADATA_KEY, ...ENTRY_KEYS, ...Object.keys(DTYPE_SIZES), ...Object.keys(DTYPE_BITS)];

/**
 * Validates the header bytes of `file` (the N bytes after the length prefix). `fileSize` and
 * `dataStart` (8 + N) let it check that the data section ends exactly at the end of the file.
 * Synchronous: for headers read from disk, `parseHeaderSliced` gives the event loop turns.
 */
export function parseHeader(
  json: Uint8Array,
  file: string,
  fileSize: number,
  dataStart: number,
): ParsedHeader {
  return runSync(headerSteps(json, file, fileSize, dataStart));
}

/** `parseHeader` in slices of a few ms, so that a 100 MB header does not stall the event loop. */
export function parseHeaderSliced(
  json: Uint8Array,
  file: string,
  fileSize: number,
  dataStart: number,
): Promise<ParsedHeader> {
  return runSliced(headerSteps(json, file, fileSize, dataStart));
}

function* headerSteps(
  json: Uint8Array,
  file: string,
  fileSize: number,
  dataStart: number,
): Sliced<ParsedHeader> {
  const fail = (code: ErrorCode, message: string, tensor?: string) =>
    new ModelStockError(code, message, tensor === undefined ? { file } : { file, tensor });

  if (!(yield* isValidUtf8(json))) {
    throw new ModelStockError('INVALID_HEADER_UTF8', 'header is not valid UTF-8', { file });
  }

  // Entries are validated as the parser hands them over, but their errors wait: a syntax error or a
  // duplicate key anywhere in the text outranks them, as when the whole text was parsed first.
  // Of the member errors, the first in text order wins.
  const tensors = new ChunkedList<TensorInfo>();
  let members = 0;
  let entryError: { member: number; error: ModelStockError } | undefined;
  let metadataMember: { member: number; value: JsonValue } | undefined;
  // Tensors share shape arrays: a model has few distinct shapes, and each array kept per tensor is
  // two more objects for every full GC to mark (with 1.5M tensors, a marking pause of hundreds of ms
  // on a busy 2-core machine, where the GC's concurrent markers get no core).
  const shapes = new Map<string, readonly number[]>();
  const shared = (shape: number[]): readonly number[] => {
    if (shape.length > 8) return shape;
    const key = shape.join(',');
    const known = shapes.get(key);
    if (known !== undefined) return known;
    if (shapes.size < MAX_SHARED_SHAPES) shapes.set(key, shape);
    return shape;
  };
  const record = (member: number, name: string, checked: CheckedEntry | ModelStockError): void => {
    if (checked instanceof ModelStockError) {
      entryError = { member, error: checked };
      return;
    }
    tensors.push({
      name,
      dtype: checked.dtype,
      shape: shared(checked.shape),
      offset: dataStart + checked.begin,
      byteLength: checked.end - checked.begin,
      file,
    });
  };
  const onMember = (name: string, value: JsonValue): Sliced<void> | void => {
    const member = members++;
    if (entryError !== undefined) return;
    if (name === METADATA_KEY) {
      // Checked after the parse, in slices: __metadata__ may hold a million strings.
      metadataMember ??= { member, value };
      return;
    }
    const shape = value instanceof JsonObject ? value.get('shape') : undefined;
    if (Array.isArray(shape) && shape.length > LONG_SHAPE) {
      return (function* () {
        record(member, name, yield* checkLongEntry(name, value, shape, fail));
      })();
    }
    record(member, name, checkEntry(name, value, fail, true));
  };

  let parsed;
  try {
    parsed = yield* parseJson(json, { onTopLevelMember: onMember, intern: HEADER_WORDS });
  } catch (cause) {
    if (!(cause instanceof JsonSyntaxError)) throw cause;
    throw new ModelStockError('INVALID_HEADER', `header is not valid JSON (${cause.message})`, {
      file,
      cause,
    });
  }
  const { root, duplicate: dup } = parsed;
  if (!(root instanceof JsonObject)) {
    throw fail('INVALID_HEADER', `header must be a JSON object, found ${describe(root)}`);
  }
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
  if (
    metadataMember !== undefined &&
    (entryError === undefined || metadataMember.member < entryError.member)
  ) {
    metadata = yield* parseMetadata(metadataMember.value, fail);
  }
  if (entryError !== undefined) throw entryError.error;

  // The crate sorts by (begin, end) and requires each tensor to start where the previous one ended,
  // starting at 0: this rules out gaps (hidden bytes) and overlaps (aliased tensors) alike.
  const count = tensors.length;
  const begins = new Float64Array(count);
  const ends = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const t = tensors.get(i);
    const begin = t.offset - dataStart;
    begins[i] = begin;
    ends[i] = begin + t.byteLength;
    if (i % CHECK_EVERY === CHECK_EVERY - 1) yield;
  }
  const byOffset = yield* sortIndices(
    count,
    (a, b) => (begins[a] as number) - (begins[b] as number) || (ends[a] as number) - (ends[b] as number),
  );
  let expected = 0;
  let previous: string | undefined;
  for (let k = 0; k < byOffset.length; k++) {
    if (k % CHECK_EVERY === CHECK_EVERY - 1) yield;
    const i = byOffset[k] as number;
    const t = tensors.get(i);
    const begin = begins[i] as number;
    const end = ends[i] as number;
    if (begin !== expected) {
      const after =
        previous === undefined ? 'the data section starts at 0' : `"${previous}" ends at ${expected}`;
      const kind = begin > expected ? 'gap' : 'overlap';
      throw fail(
        'INVALID_OFFSET',
        `data_offsets [${begin}, ${end}] begin at ${begin} but ${after} (${kind})`,
        t.name,
      );
    }
    expected = end;
    previous = t.name;
    const sizeError =
      t.shape.length > LONG_SHAPE
        ? yield* checkLongSize(t.dtype, t.shape, begin, end)
        : checkSize(t.dtype, t.shape, begin, end);
    if (sizeError !== undefined) throw fail('TENSOR_INVALID_INFO', sizeError, t.name);
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
  return { tensors: yield* tensors.toArray(), metadata };
}

type Fail = (code: ErrorCode, message: string, tensor?: string) => ModelStockError;

/** Shapes with more dimensions than this are checked in pieces, with checkpoints. */
const LONG_SHAPE = 1 << 16;

interface CheckedEntry {
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * One tensor entry's own rules, in the order the reference checks them; the error is returned.
 * `checkDims` false leaves out the scan of the shape's dimensions (done in pieces for long shapes).
 */
function checkEntry(
  name: string,
  value: JsonValue,
  fail: Fail,
  checkDims: boolean,
): CheckedEntry | ModelStockError {
  if (!(value instanceof JsonObject)) {
    return fail('INVALID_HEADER', `entry must be an object, found ${describe(value)}`, name);
  }
  for (const key of ENTRY_KEYS) {
    if (!value.has(key)) return fail('INVALID_HEADER', `entry has no "${key}"`, name);
  }
  if (value.keys.length > ENTRY_KEYS.length) {
    const extra = value.keys.filter((k) => !(ENTRY_KEYS as readonly string[]).includes(k));
    return fail(
      'INVALID_HEADER',
      `unexpected key(s) ${extra
        .slice(0, 8)
        .map((k) => `"${clipText(k)}"`)
        .join(', ')}${extra.length > 8 ? `, … (${extra.length})` : ''} in entry`,
      name,
    );
  }

  const dtype = value.get('dtype');
  if (typeof dtype !== 'string') {
    return fail('INVALID_HEADER', `dtype must be a string, found ${describe(dtype)}`, name);
  }
  if (!isKnownDType(dtype)) {
    return fail('UNKNOWN_DTYPE', `unknown dtype ${clip(dtype)}`, name);
  }

  const shape = value.get('shape');
  if (!Array.isArray(shape) || (checkDims && !shape.every(isNonNegativeSafeInteger))) {
    return invalidShape(name, shape, fail);
  }

  const offsets = value.get('data_offsets');
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every(isNonNegativeSafeInteger) ||
    (offsets[0] as number) > (offsets[1] as number)
  ) {
    return fail(
      'INVALID_OFFSETS',
      `data_offsets must be [begin, end] with 0 <= begin <= end, found ${clip(offsets)}`,
      name,
    );
  }
  return { dtype, shape: shape as number[], begin: offsets[0] as number, end: offsets[1] as number };
}

/** checkEntry for a shape of millions of dimensions: the same rules in the same order. */
function* checkLongEntry(
  name: string,
  value: JsonValue,
  shape: JsonValue[],
  fail: Fail,
): Sliced<CheckedEntry | ModelStockError> {
  const early = checkEntry(name, value, fail, false);
  // Only the rule checked after the shape's can have spoken before the dimensions are scanned.
  if (early instanceof ModelStockError && early.code !== 'INVALID_OFFSETS') return early;
  for (let i = 0; i < shape.length; i++) {
    if (!isNonNegativeSafeInteger(shape[i])) return invalidShape(name, shape, fail);
    if (i % LONG_SHAPE === LONG_SHAPE - 1) yield;
  }
  return early;
}

function invalidShape(name: string, shape: JsonValue | undefined, fail: Fail): ModelStockError {
  return fail('INVALID_SHAPE', `shape must be an array of non-negative integers, found ${clip(shape)}`, name);
}

/** Elements × bits must be whole bytes and exactly end − begin; the message when not. */
function checkSize(dtype: DType, shape: readonly number[], begin: number, end: number): string | undefined {
  const bits = dtypeBits(dtype);
  // Doubles while the product stays exact, the usual case; exact integers past that.
  let elements = 1;
  for (const d of shape) {
    elements *= d;
    if (elements > Number.MAX_SAFE_INTEGER)
      return sizeVerdict(dtype, shape, begin, end, exactElements(shape));
  }
  if (elements * bits > Number.MAX_SAFE_INTEGER) {
    return sizeVerdict(dtype, shape, begin, end, exactElements(shape));
  }
  const total = elements * bits;
  if (total % 8 !== 0) {
    return `${shapeText(dtype, shape)} is ${elements} elements × ${bits} bits, not a whole number of bytes`;
  }
  if (end - begin !== total / 8) {
    return `data_offsets [${begin}, ${end}] hold ${end - begin} bytes but ${shapeText(dtype, shape)} needs ${total / 8}`;
  }
  return undefined;
}

function* checkLongSize(
  dtype: DType,
  shape: readonly number[],
  begin: number,
  end: number,
): Sliced<string | undefined> {
  const acc = newProduct();
  for (let from = 0; from < shape.length; from += LONG_SHAPE) {
    multiply(acc, shape, from, Math.min(shape.length, from + LONG_SHAPE));
    yield;
  }
  return sizeVerdict(dtype, shape, begin, end, acc);
}

/**
 * The element count as an exact integer, without BigInt products of thousands of factors (a shape of
 * 10M twos would take minutes): dimensions of 1 change nothing, a 0 makes it 0, and past 64 factors
 * of 2 or more the count is over 2^64, so only how many factors of 2 it has still matters (for
 * sub-byte dtypes, whose sizes must come out in whole bytes).
 */
interface Product {
  zero: boolean;
  /** The product of the first MAX_FACTORS dimensions ≥ 2. */
  value: bigint;
  factors: number;
  /** Factors of 2 in the whole product (capped: only ≥ 3 matters). */
  twos: number;
}

const MAX_FACTORS = 64;

function newProduct(): Product {
  return { zero: false, value: 1n, factors: 0, twos: 0 };
}

function multiply(acc: Product, shape: readonly number[], from: number, to: number): void {
  for (let i = from; i < to; i++) {
    const d = shape[i] as number;
    if (d === 1) continue;
    if (d === 0) {
      acc.zero = true;
      continue;
    }
    if (acc.factors < MAX_FACTORS) acc.value *= BigInt(d);
    acc.factors++;
    if (acc.twos < 8) for (let x = d; x % 2 === 0 && acc.twos < 8; x /= 2) acc.twos++;
  }
}

function exactElements(shape: readonly number[]): Product {
  const acc = newProduct();
  multiply(acc, shape, 0, shape.length);
  return acc;
}

/** The reference's three size rules, in its order, on an exact element count. */
function sizeVerdict(
  dtype: DType,
  shape: readonly number[],
  begin: number,
  end: number,
  p: Product,
): string | undefined {
  const bitsPer = dtypeBits(dtype);
  const held = end - begin;
  if (p.factors > MAX_FACTORS && !p.zero) {
    // Over 2^64 elements: too many to print, and far over 2^53 bytes whatever the dtype.
    const twosOfBits = p.twos + Math.log2(bitsPer & -bitsPer);
    if (twosOfBits < 3) {
      return `${shapeText(dtype, shape)} is over 2^64 elements × ${bitsPer} bits, not a whole number of bytes`;
    }
    return `${shapeText(dtype, shape)} needs over 2^53 bytes: the size overflows`;
  }
  const elements = p.zero ? 0n : p.value;
  const bits = elements * BigInt(bitsPer);
  if (bits % 8n !== 0n) {
    return `${shapeText(dtype, shape)} is ${elements} elements × ${bitsPer} bits, not a whole number of bytes`;
  }
  const needed = bits / 8n;
  if (needed > BigInt(Number.MAX_SAFE_INTEGER)) {
    return `${shapeText(dtype, shape)} needs ${needed} bytes: the size overflows`;
  }
  if (BigInt(held) !== needed) {
    return `data_offsets [${begin}, ${end}] hold ${held} bytes but ${shapeText(dtype, shape)} needs ${needed}`;
  }
  return undefined;
}

/** "F32 [2, 3]"; a shape of thousands of dimensions is shortened. */
function shapeText(dtype: DType, shape: readonly number[]): string {
  const dims =
    shape.length > 16 ? `${shape.slice(0, 16).join(', ')}, … (${shape.length} dimensions)` : shape.join(', ');
  return `${dtype} [${dims}]`;
}

function* parseMetadata(value: JsonValue, fail: Fail): Sliced<Record<string, string> | undefined> {
  // The crate's `Option<HashMap<String, String>>` reads `null` as absent.
  if (value === null) return undefined;
  if (!(value instanceof JsonObject)) {
    throw fail('INVALID_METADATA', `__metadata__ must be an object of strings, found ${describe(value)}`);
  }
  const out: Record<string, string> = {};
  for (let i = 0; i < value.keys.length; i++) {
    if (i % CHECK_EVERY === CHECK_EVERY - 1) yield;
    const k = value.keys[i] as string;
    const v = value.values[i];
    if (typeof v !== 'string') {
      throw fail(
        'INVALID_METADATA',
        `__metadata__ value for "${clipText(k)}" must be a string, found ${describe(v)}`,
      );
    }
    // defineProperty: a key "__proto__" is data like any other, not the object's prototype.
    Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/**
 * UTF-8 checked in chunks cut at character starts: each chunk is then valid on its own exactly when
 * the whole is. (A UTF-8 byte-order mark is valid here and then fails JSON parsing, as in serde_json.)
 */
export function* isValidUtf8(bytes: Uint8Array): Sliced<boolean> {
  const chunk = 8 << 20;
  for (let from = 0; from < bytes.length;) {
    let to = Math.min(bytes.length, from + chunk);
    // At most 3 continuation bytes follow a lead byte; a longer run is invalid wherever it is cut.
    for (let back = 0; back < 3 && to < bytes.length && ((bytes[to] as number) & 0xc0) === 0x80; back++) to--;
    if (!isUtf8(bytes.subarray(from, to))) return false;
    from = to;
    yield;
  }
  return true;
}

export interface KeyScan {
  /** Keys of the top-level object in text order (JS objects put integer-like keys first). */
  topLevel: string[];
  /** The first key that occurs twice in one object; `within` names the enclosing objects' keys. */
  duplicate: { key: string; within: string[] } | undefined;
}

/** Scans a JSON text already known to be valid for its top-level key order and duplicate keys. */
export function scanKeys(text: string): KeyScan {
  const topLevel: string[] = [];
  // One frame per open container: the keys seen so far for an object, null for an array.
  const seen: (Set<string> | null)[] = [];
  const lastKey: string[] = [];
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      let escaped = false;
      for (;;) {
        const d = text.charCodeAt(j);
        if (d === 0x5c /* \ */) {
          escaped = true;
          j += 2;
        } else if (d === 0x22) break;
        else j++;
      }
      const raw = text.slice(i, j + 1);
      i = j + 1;
      let k = i;
      while (isJsonWhitespace(text.charCodeAt(k))) k++;
      // In valid JSON a string followed by ':' is an object key.
      if (text.charCodeAt(k) === 0x3a /* : */) {
        // Escapes are decoded so that "a" and "\u0061" count as the same key.
        const key = escaped ? (JSON.parse(raw) as string) : raw.slice(1, -1);
        const depth = seen.length - 1;
        const keys = seen[depth];
        if (keys) {
          if (keys.has(key)) {
            return {
              topLevel,
              duplicate: { key, within: lastKey.slice(0, depth).filter((k) => k !== undefined) },
            };
          }
          keys.add(key);
        }
        if (depth === 0) topLevel.push(key);
        lastKey[depth] = key;
        i = k + 1;
      }
    } else if (c === 0x7b /* { */) {
      seen.push(new Set());
      i++;
    } else if (c === 0x5b /* [ */) {
      seen.push(null);
      i++;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      seen.pop();
      lastKey.length = Math.min(lastKey.length, seen.length);
      i++;
    } else {
      i++;
    }
  }
  return { topLevel, duplicate: undefined };
}

function isJsonWhitespace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

function isNonNegativeSafeInteger(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function describe(v: JsonValue | undefined): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof JsonObject) return 'an object';
  return `${typeof v} ${clip(v)}`;
}

const CLIP = 80;

/**
 * JSON of a value, shortened to CLIP characters: a hostile header can make any field huge, or nest
 * arrays 200k deep (JSON.stringify would then overflow the stack). Each level of nesting writes a
 * character, so the walk never goes deeper than CLIP levels.
 */
export function clip(v: JsonValue | undefined): string {
  let out = '';
  const emit = (x: JsonValue): void => {
    if (Array.isArray(x)) {
      out += '[';
      for (let i = 0; i < x.length && out.length <= CLIP; i++) {
        if (i > 0) out += ',';
        emit(x[i] as JsonValue);
      }
      out += ']';
    } else if (x instanceof JsonObject) {
      out += '{';
      for (let i = 0; i < x.keys.length && out.length <= CLIP; i++) {
        if (i > 0) out += ',';
        out += `${JSON.stringify(clipText(x.keys[i] as string))}:`;
        if (out.length <= CLIP) emit(x.values[i] as JsonValue);
      }
      out += '}';
    } else if (typeof x === 'string') {
      out += JSON.stringify(clipText(x));
    } else {
      out += JSON.stringify(x);
    }
  };
  if (v === undefined) return 'undefined';
  emit(v);
  return out.length > CLIP ? `${out.slice(0, CLIP - 3)}...` : out;
}

/** A string cut to a little over CLIP characters: enough for any message that shows it. */
function clipText(s: string): string {
  return s.length > CLIP + 1 ? s.slice(0, CLIP + 1) : s;
}
