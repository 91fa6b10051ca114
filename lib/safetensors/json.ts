/**
 * A strict JSON parser for untrusted headers and index files. It accepts exactly what JSON.parse
 * accepts (RFC 8259; string escapes and number conversion are done by the engine itself), but
 * - it reads UTF-8 bytes (validated beforehand) rather than a string, so a 100 MB header is never
 *   copied into one 100 MB string (60 ms in one piece here), and each name is its own small string;
 * - it is a sliced generator (lib/util/sliced.ts): the event loop gets turns, and no single token — a
 *   string, number or whitespace run of 90 MB — is scanned in one go;
 * - it has no recursion: nesting is bounded only by the input's size, never by the call stack;
 * - objects are JsonObject, members in text order with duplicates kept, so a key such as "__proto__"
 *   or "10" is an ordinary key; the first duplicate key of any object is reported;
 * - the members of the top-level object can be handed to a callback instead of being kept, so a
 *   header's million entries are validated as they arrive rather than held as one tree.
 */
import { ChunkedSet } from '../util/chunkedMap';
import type { Sliced } from '../util/sliced';

export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;

export class JsonObject {
  constructor(
    readonly keys: readonly string[],
    readonly values: readonly JsonValue[],
  ) {}

  /** The value of the last member named `key`, the one JSON.parse would keep. */
  get(key: string): JsonValue | undefined {
    for (let i = this.keys.length - 1; i >= 0; i--) if (this.keys[i] === key) return this.values[i];
    return undefined;
  }

  has(key: string): boolean {
    return this.keys.includes(key);
  }
}

export class JsonSyntaxError extends SyntaxError {
  constructor(
    message: string,
    /** Byte offset in the input. */
    readonly position: number,
  ) {
    super(message);
    this.name = 'JsonSyntaxError';
  }
}

/** The first key that occurs twice in one object; `within` names the enclosing objects' keys. */
export interface JsonDuplicate {
  readonly key: string;
  readonly within: readonly string[];
}

export interface ParsedJson {
  /** With `onTopLevelMember`, a top-level object comes back without members. */
  readonly root: JsonValue;
  readonly duplicate: JsonDuplicate | undefined;
}

export interface ParseJsonOptions {
  /**
   * Receives each member of the top-level object, in text order, duplicates included. It may return
   * more work to run, with checkpoints, before the parse goes on (for a member of millions of values).
   */
  readonly onTopLevelMember?: (key: string, value: JsonValue) => Sliced<void> | void;
  /** ASCII strings returned as these constants rather than allocated (a header repeats "dtype", "F32", …). */
  readonly intern?: readonly string[];
}

/** Values parsed between checkpoints. */
const VALUES_PER_CHECK = 4096;
/** Bytes of one token (string, number, whitespace run) scanned between checkpoints. */
const BYTES_PER_CHECK = 1 << 20;
/** Containers with more members than this are collected in chunks of this many. */
const SPILL = 1 << 16;
/** Objects with more members than this check duplicates with a Set instead of a scan. */
const SMALL_OBJECT = 16;
/** Integer literals of up to 15 digits are exact in a double: converted here, without a string. */
const EXACT_DIGITS = 15;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const MINUS = 0x2d;
const ZERO = 0x30;
const NINE = 0x39;

const ARRAY = 0;
const OBJECT = 1;

/** What the scanners carry across checkpoints of one parse (never module-level: parses interleave). */
interface ScanState {
  /** The string scanned last had an escape / a byte ≥ 0x80. */
  escaped: boolean;
  nonAscii: boolean;
  /** Where a number scan stands in the number grammar. */
  numberState: number;
}

/** Parses UTF-8 `bytes`, which the caller has checked to be valid UTF-8. */
export function* parseJson(bytes: Uint8Array, opts: ParseJsonOptions = {}): Sliced<ParsedJson> {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = b.length;
  const onTop = opts.onTopLevelMember;
  const intern = internTable(opts.intern ?? []);
  const st: ScanState = { escaped: false, nonAscii: false, numberState: 0 };

  // One entry per open container, in parallel stacks. Elements and members collect on the shared
  // `values`/`keys` stacks (tops kept apart: setting an array's length is a slow runtime call) and
  // are cut into exact-size arrays when their container closes.
  const kinds: number[] = [];
  const valueStarts: number[] = [];
  const keyStarts: number[] = [];
  const currentKeys: string[] = [];
  const keySets: (ChunkedSet | undefined)[] = [];
  const spills: (JsonValue[][] | undefined)[] = [];
  const keySpills: (string[][] | undefined)[] = [];
  const keys: string[] = [];
  const values: JsonValue[] = [];
  let keyTop = 0;
  let valueTop = 0;
  let duplicate: JsonDuplicate | undefined;

  let budget = VALUES_PER_CHECK;
  let expectKey = false;
  let value: JsonValue = null;
  let pos = skipWs(b, 0);
  while (pos < 0) {
    yield;
    pos = skipWs(b, ~pos);
  }

  for (;;) {
    if (--budget === 0) {
      budget = VALUES_PER_CHECK;
      yield;
    }

    if (expectKey) {
      // A member: "key" : value. `pos` is at the key's opening quote.
      expectKey = false;
      if (b[pos] !== QUOTE) throw unexpected(b, pos, 'a string key');
      st.escaped = st.nonAscii = false;
      let end = scanString(b, pos + 1, st);
      while (end < 0) {
        yield;
        end = scanString(b, ~end, st);
      }
      const key =
        end - pos > BYTES_PER_CHECK
          ? yield* longString(b, pos, end, st.escaped)
          : stringAt(b, pos, end, st, intern);
      pos = skipWs(b, end + 1);
      while (pos < 0) {
        yield;
        pos = skipWs(b, ~pos);
      }
      if (b[pos] !== COLON) throw unexpected(b, pos, '":"');
      pos = skipWs(b, pos + 1);
      while (pos < 0) {
        yield;
        pos = skipWs(b, ~pos);
      }
      const depth = kinds.length - 1;
      const streamed = depth === 0 && onTop !== undefined;
      if (duplicate === undefined && isDuplicate(key, depth, streamed, keys, keyTop, keyStarts, keySets)) {
        duplicate = { key, within: enclosingKeys(kinds, currentKeys) };
      }
      currentKeys[depth] = key;
      if (!streamed) keys[keyTop++] = key;
    }

    // One value starts at `pos`.
    const c = b[pos];
    if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      const isObject = c === OPEN_BRACE;
      pos = skipWs(b, pos + 1);
      while (pos < 0) {
        yield;
        pos = skipWs(b, ~pos);
      }
      if (b[pos] === (isObject ? CLOSE_BRACE : CLOSE_BRACKET)) {
        pos++;
        value = isObject ? new JsonObject([], []) : [];
      } else {
        kinds.push(isObject ? OBJECT : ARRAY);
        valueStarts.push(valueTop);
        keyStarts.push(keyTop);
        currentKeys.push('');
        keySets.push(undefined);
        spills.push(undefined);
        keySpills.push(undefined);
        expectKey = isObject;
        continue;
      }
    } else if (c === QUOTE) {
      st.escaped = st.nonAscii = false;
      let end = scanString(b, pos + 1, st);
      while (end < 0) {
        yield;
        end = scanString(b, ~end, st);
      }
      value =
        end - pos > BYTES_PER_CHECK
          ? yield* longString(b, pos, end, st.escaped)
          : stringAt(b, pos, end, st, intern);
      pos = end + 1;
    } else if (c === MINUS || (c !== undefined && c >= ZERO && c <= NINE)) {
      const start = pos;
      st.numberState = N_START;
      pos = scanNumber(b, pos, st);
      while (pos < 0) {
        yield;
        pos = scanNumber(b, ~pos, st);
      }
      value = pos - start > BYTES_PER_CHECK ? yield* longNumber(b, start, pos) : numberAt(b, start, pos);
    } else if (c === 0x74 && isWord(b, pos, 'true')) {
      value = true;
      pos += 4;
    } else if (c === 0x66 && isWord(b, pos, 'false')) {
      value = false;
      pos += 5;
    } else if (c === 0x6e && isWord(b, pos, 'null')) {
      value = null;
      pos += 4;
    } else {
      throw unexpected(b, pos, 'a value');
    }

    // The value is complete: hand it to its container, closing containers that end here.
    for (;;) {
      pos = skipWs(b, pos);
      while (pos < 0) {
        yield;
        pos = skipWs(b, ~pos);
      }
      const depth = kinds.length - 1;
      if (depth < 0) {
        if (pos !== n) throw unexpected(b, pos, 'the end of the input');
        return { root: value, duplicate };
      }
      const kind = kinds[depth];
      if (kind === OBJECT && depth === 0 && onTop !== undefined) {
        const more = onTop(currentKeys[0] as string, value);
        if (more !== undefined) yield* more;
      } else {
        values[valueTop++] = value;
        const vStart = valueStarts[depth] as number;
        if (valueTop - vStart === SPILL) {
          // A container this large moves its members off the shared stacks, whose growth would copy
          // tens of MB in one go (the object's keys and values are in step here: a value just ended).
          (spills[depth] ??= []).push(values.slice(vStart, valueTop));
          valueTop = vStart;
          if (kind === OBJECT) {
            const kStart = keyStarts[depth] as number;
            (keySpills[depth] ??= []).push(keys.slice(kStart, keyTop));
            keyTop = kStart;
          }
          yield;
        }
      }

      const d = b[pos];
      if (d === COMMA) {
        pos = skipWs(b, pos + 1);
        while (pos < 0) {
          yield;
          pos = skipWs(b, ~pos);
        }
        expectKey = kind === OBJECT;
        break;
      }
      if (d !== (kind === OBJECT ? CLOSE_BRACE : CLOSE_BRACKET)) {
        throw unexpected(b, pos, kind === OBJECT ? '"," or "}"' : '"," or "]"');
      }
      pos++;
      const vStart = valueStarts.pop() as number;
      const kStart = keyStarts.pop() as number;
      kinds.pop();
      currentKeys.pop();
      keySets.pop();
      const spilled = spills.pop();
      const keysSpilled = keySpills.pop();
      const lastValues = values.slice(vStart, valueTop);
      const elements = spilled === undefined ? lastValues : yield* concatSliced(spilled, lastValues);
      if (kind === OBJECT) {
        const lastKeys = keys.slice(kStart, keyTop);
        const names = keysSpilled === undefined ? lastKeys : yield* concatSliced(keysSpilled, lastKeys);
        value = new JsonObject(names, elements);
        keyTop = kStart;
      } else {
        value = elements;
      }
      valueTop = vStart;
    }
  }
}

/** `chunks` and then `last` in one array, filled with checkpoints. */
function* concatSliced<T>(chunks: readonly T[][], last: readonly T[]): Sliced<T[]> {
  const out = new Array<T>(chunks.reduce((n, c) => n + c.length, last.length));
  let i = 0;
  for (const chunk of [...chunks, last]) {
    for (const item of chunk) out[i++] = item;
    yield;
  }
  return out;
}

/** The string between the quotes at `open` and `close` (at most BYTES_PER_CHECK bytes). */
function stringAt(
  b: Buffer,
  open: number,
  close: number,
  st: ScanState,
  intern: readonly (readonly string[])[],
): string {
  if (st.escaped) return JSON.parse(`"${b.toString('utf8', open + 1, close)}"`) as string;
  if (st.nonAscii) return b.toString('utf8', open + 1, close);
  const candidates = intern[close - open - 1];
  if (candidates !== undefined) {
    for (const word of candidates) if (isWord(b, open + 1, word)) return word;
  }
  return b.toString('latin1', open + 1, close);
}

/**
 * A string of more than BYTES_PER_CHECK bytes, decoded in pieces cut at character starts and, when
 * it has escapes, between escapes. A piece may end between the two halves of an escaped surrogate
 * pair: JSON.parse keeps lone surrogates, and the pieces join back into the pair. The pieces are
 * joined with `+`, which the engine keeps as a rope rather than copying.
 */
function* longString(b: Buffer, open: number, close: number, escaped: boolean): Sliced<string> {
  let s = '';
  let from = open + 1;
  while (from < close) {
    let to = Math.min(close, from + BYTES_PER_CHECK);
    while (to < close && ((b[to] as number) & 0xc0) === 0x80) to--;
    if (escaped) to = escapeBoundary(b, from, to);
    const raw = b.toString('utf8', from, to);
    s += escaped ? (JSON.parse(`"${raw}"`) as string) : raw;
    from = to;
    yield;
  }
  return s;
}

/** The last position ≤ `to` that does not fall inside an escape sequence starting at or after `from`. */
function escapeBoundary(b: Buffer, from: number, to: number): number {
  let i = from;
  while (i < to) {
    if (b[i] !== BACKSLASH) {
      i++;
      continue;
    }
    const length = b[i + 1] === 0x75 /* u */ ? 6 : 2;
    if (i + length > to) return i;
    i += length;
  }
  return i;
}

/**
 * Scans string content from `i` (after the opening quote; the caller clears `st.escaped` and
 * `st.nonAscii` before the first call for a string). Returns the index of the closing quote,
 * or ~position to resume from after a checkpoint. Throws on a control character, a bad escape or
 * the end of the input.
 */
function scanString(b: Buffer, i: number, st: ScanState): number {
  const stop = i + BYTES_PER_CHECK;
  const n = b.length;
  while (i < n) {
    if (i >= stop) return ~i;
    const c = b[i] as number;
    if (c === QUOTE) return i;
    if (c === BACKSLASH) {
      const e = b[i + 1];
      if (e === 0x75 /* u */) {
        for (let k = i + 2; k < i + 6; k++) {
          if (!isHex(b[k])) throw unexpected(b, k, 'a hex digit of a \\u escape');
        }
        i += 6;
      } else if (
        e === QUOTE ||
        e === BACKSLASH ||
        e === 0x2f /* / */ ||
        e === 0x62 /* b */ ||
        e === 0x66 /* f */ ||
        e === 0x6e /* n */ ||
        e === 0x72 /* r */ ||
        e === 0x74 /* t */
      ) {
        i += 2;
      } else {
        throw unexpected(b, i + 1, 'an escape character');
      }
      st.escaped = true;
      continue;
    }
    if (c < 0x20)
      throw new JsonSyntaxError(`control character ${hexByte(c)} in a string at position ${i}`, i);
    if (c >= 0x80) st.nonAscii = true;
    i++;
  }
  throw new JsonSyntaxError(`unterminated string at the end of the input (position ${n})`, n);
}

// The number grammar as a state machine, so that a run of millions of digits is scanned in pieces.
const N_START = 0;
const N_MINUS = 1;
const N_ZERO = 2;
const N_INT = 3;
const N_DOT = 4;
const N_FRAC = 5;
const N_E = 6;
const N_ESIGN = 7;
const N_EXP = 8;

/** Scans a number from `i` in state `st.numberState`: its end, or ~position to resume from. */
function scanNumber(b: Buffer, i: number, st: ScanState): number {
  const stop = i + BYTES_PER_CHECK;
  let s = st.numberState;
  for (;;) {
    if (i >= stop) {
      st.numberState = s;
      return ~i;
    }
    const c = b[i];
    const digit = c !== undefined && c >= ZERO && c <= NINE;
    switch (s) {
      case N_START:
        if (c === MINUS) s = N_MINUS;
        else if (c === ZERO) s = N_ZERO;
        else if (digit) s = N_INT;
        else throw unexpected(b, i, 'a digit');
        break;
      case N_MINUS:
        if (c === ZERO) s = N_ZERO;
        else if (digit) s = N_INT;
        else throw unexpected(b, i, 'a digit');
        break;
      case N_ZERO:
      case N_INT:
        if (digit && s === N_INT) break;
        if (c === 0x2e /* . */) s = N_DOT;
        else if (c === 0x65 || c === 0x45) s = N_E;
        else return i;
        break;
      case N_DOT:
        if (digit) s = N_FRAC;
        else throw unexpected(b, i, 'a digit');
        break;
      case N_FRAC:
        if (digit) break;
        if (c === 0x65 || c === 0x45) s = N_E;
        else return i;
        break;
      case N_E:
        if (c === 0x2b || c === MINUS) s = N_ESIGN;
        else if (digit) s = N_EXP;
        else throw unexpected(b, i, 'a digit');
        break;
      case N_ESIGN:
        if (digit) s = N_EXP;
        else throw unexpected(b, i, 'a digit');
        break;
      default: // N_EXP
        if (!digit) return i;
    }
    i++;
  }
}

/** The value of the valid number literal b[start, end). */
function numberAt(b: Buffer, start: number, end: number): number {
  const negative = b[start] === MINUS;
  const first = negative ? start + 1 : start;
  if (end - first <= EXACT_DIGITS) {
    let v = 0;
    let i = first;
    for (; i < end; i++) {
      const c = b[i] as number;
      if (c < ZERO || c > NINE) break;
      v = v * 10 + (c - ZERO);
    }
    if (i === end) return negative ? -v : v;
  }
  // The engine's own conversion: Number() of a valid JSON number is exactly what JSON.parse gives.
  return Number(b.toString('latin1', start, end));
}

/** Significant digits kept of a long literal: more than any halfway point between doubles needs (772). */
const KEPT_DIGITS = 800;

/**
 * The value of a number literal longer than BYTES_PER_CHECK bytes, without handing the engine a
 * string of that size (a 90 MB literal costs ~200 ms in one piece): it is rewritten as an equivalent
 * short literal, digits × 10^exponent, in scans that stop at checkpoints. Dropping significant digits
 * past the 800th and putting a 1 in their place (they are not all zero: trailing zeros are stripped
 * first) cannot move the value across a halfway point between two doubles, so it rounds the same.
 */
function* longNumber(b: Buffer, start: number, end: number): Sliced<number> {
  const negative = b[start] === MINUS;
  const i = negative ? start + 1 : start;
  // Mantissa digits (integer and fraction parts) and where the exponent part starts.
  let dot = -1;
  let e = end;
  for (let k = i; k < end; k++) {
    const c = b[k];
    if (c === 0x2e) dot = k;
    else if (c === 0x65 || c === 0x45) {
      e = k;
      break;
    }
    if ((k - i) % BYTES_PER_CHECK === BYTES_PER_CHECK - 1) yield;
  }
  const intDigits = (dot >= 0 ? dot : e) - i;
  const digitAt = (k: number): number => (k < intDigits ? i + k : i + k + 1); // index into b of digit k
  const count = dot >= 0 ? e - i - 1 : e - i;
  // value = digits × 10^(exponent − fraction digits)
  let exponent = -(dot >= 0 ? e - dot - 1 : 0);
  if (e < end) {
    let k = e + 1;
    let sign = 1;
    if (b[k] === 0x2b) k++;
    else if (b[k] === MINUS) {
      sign = -1;
      k++;
    }
    while (k < end - 1 && b[k] === ZERO) {
      k++;
      if (k % BYTES_PER_CHECK === 0) yield;
    }
    // More than 15 significant exponent digits: the value is 0 or infinite (unless the digits are 0).
    const explicit = end - k > EXACT_DIGITS ? 1e300 : Number(b.toString('latin1', k, end));
    exponent += sign * explicit;
  }
  let lead = 0;
  while (lead < count && b[digitAt(lead)] === ZERO) {
    lead++;
    if (lead % BYTES_PER_CHECK === 0) yield;
  }
  if (lead === count) return negative ? -0 : 0;
  let last = count - 1;
  while (b[digitAt(last)] === ZERO) {
    last--;
    exponent++;
    if (last % BYTES_PER_CHECK === 0) yield;
  }
  let digits = '';
  const keep = Math.min(last + 1, lead + KEPT_DIGITS);
  for (let k = lead; k < keep; k++) digits += String.fromCharCode(b[digitAt(k)] as number);
  if (keep <= last) digits += '1';
  exponent += last + 1 - (lead + digits.length);
  // Past these bounds the value is ±Infinity or ±0 whatever the (at most 801) digits: keep the text short.
  exponent = Math.max(-2000, Math.min(1000, exponent));
  return Number(`${negative ? '-' : ''}${digits}e${exponent}`);
}

/** Position after the whitespace at `i`, or ~position to resume from after a checkpoint. */
function skipWs(b: Buffer, i: number): number {
  const stop = i + BYTES_PER_CHECK;
  for (;;) {
    const c = b[i];
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return i;
    if (++i >= stop) return ~i;
  }
}

function isWord(b: Buffer, pos: number, word: string): boolean {
  for (let k = 0; k < word.length; k++) if (b[pos + k] !== word.charCodeAt(k)) return false;
  return true;
}

function isDuplicate(
  key: string,
  depth: number,
  streamed: boolean,
  keys: readonly string[],
  keyTop: number,
  keyStarts: readonly number[],
  keySets: (ChunkedSet | undefined)[],
): boolean {
  let set = keySets[depth];
  if (set === undefined) {
    const start = keyStarts[depth] as number;
    if (!streamed && keyTop - start < SMALL_OBJECT) {
      for (let k = start; k < keyTop; k++) if (keys[k] === key) return true;
      return false;
    }
    set = new ChunkedSet();
    if (!streamed) for (let k = start; k < keyTop; k++) set.add(keys[k] as string);
    keySets[depth] = set;
  }
  return !set.add(key);
}

/** Keys of the objects enclosing the innermost container (arrays in between have none). */
function enclosingKeys(kinds: readonly number[], currentKeys: readonly string[]): string[] {
  const within: string[] = [];
  for (let d = 0; d < kinds.length - 1; d++) {
    if (kinds[d] === OBJECT) within.push(currentKeys[d] as string);
  }
  return within;
}

/** ASCII words by length. */
function internTable(words: readonly string[]): string[][] {
  const byLength: string[][] = [];
  for (const word of words) {
    while (byLength.length <= word.length) byLength.push([]);
    (byLength[word.length] as string[]).push(word);
  }
  return byLength;
}

function isHex(c: number | undefined): boolean {
  return (
    c !== undefined && ((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66))
  );
}

function hexByte(c: number): string {
  return `0x${c.toString(16).toUpperCase().padStart(2, '0')}`;
}

function unexpected(b: Buffer, pos: number, wanted: string): JsonSyntaxError {
  const c = b[pos];
  if (c === undefined) return new JsonSyntaxError(`unexpected end of input, expected ${wanted}`, pos);
  const shown = c >= 0x20 && c < 0x7f ? JSON.stringify(String.fromCharCode(c)) : `byte ${hexByte(c)}`;
  return new JsonSyntaxError(`unexpected ${shown} at position ${pos}, expected ${wanted}`, pos);
}
