/**
 * The fuzz targets: every input must end in the same parse as the reference (fuzz/reference.ts), or
 * a ModelStockError with the same code naming the file — never another exception. Where the
 * reference itself fails without a code (a RangeError on deep nesting), any coded error will do.
 */
import { isUtf8 } from 'node:buffer';
import { isDeepStrictEqual } from 'node:util';
import { isModelStockError } from '../lib/errors';
import { parseHeader, parseHeaderSliced, type ParsedHeader } from '../lib/safetensors/header';
import { parseIndex, type ParsedIndex } from '../lib/checkpoint/indexFile';
import { readPytorchSource } from '../lib/pytorch/archive';
import { memorySource } from '../lib/pytorch/source';
import type { FuzzInput } from './mutate';
import { referenceParseHeader, referenceParseIndex } from './reference';

export const HEADER_FILE = '/fuzz/model.safetensors';
export const INDEX_FILE = '/fuzz/model.safetensors.index.json';
export const PYTORCH_FILE = '/fuzz/pytorch_model.bin';

/** What a PyTorch file may end in besides a tensor table: the reader's own codes. */
const PYTORCH_CODES = new Set([
  'INVALID_ARCHIVE',
  'INVALID_PICKLE',
  'INVALID_STORAGE',
  'UNSUPPORTED_FORMAT',
  'NON_CONTIGUOUS',
]);

type Outcome<T> = { ok: T } | { code: string; file: string | undefined } | { other: unknown };

function outcome<T>(fn: () => T): Outcome<T> {
  try {
    return { ok: fn() };
  } catch (e) {
    return isModelStockError(e) ? { code: e.code, file: e.file } : { other: e };
  }
}

async function outcomeAsync<T>(fn: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: await fn() };
  } catch (e) {
    return isModelStockError(e) ? { code: e.code, file: e.file } : { other: e };
  }
}

const show = (o: Outcome<unknown>): string =>
  'ok' in o
    ? 'a valid parse'
    : 'code' in o
      ? o.code
      : `${(o.other as Error)?.name}: ${(o.other as Error)?.message}`;

export interface Checked {
  /** What is wrong, or undefined. */
  readonly problem: string | undefined;
  /** What the parser gave: "a valid parse" or an error code. */
  readonly outcome: string;
  /** PyTorch inputs: whether data.pkl reached the interpreter, and whether a tensor table came out. */
  readonly interpreted?: boolean;
  readonly table?: boolean;
}

/** Runs one input through its target; `sliced` also runs the async parser and compares. */
export async function checkInput(input: FuzzInput, sliced: boolean): Promise<Checked> {
  if (input.kind === 'pytorch') return checkPytorch(input);
  return input.kind === 'header' ? checkHeader(input, sliced) : checkIndex(input);
}

/**
 * A PyTorch file read from memory: a tensor table whose every tensor lies inside the file, or one of
 * the reader's codes naming the file — never another exception (a hang or a crash the watchdog sees).
 */
async function checkPytorch(input: FuzzInput): Promise<Checked> {
  let interpreted = false;
  const got = await outcomeAsync(() =>
    readPytorchSource(memorySource(PYTORCH_FILE, input.bytes), {}, () => (interpreted = true)),
  );
  const checked = (problem: string | undefined): Checked => ({
    problem,
    outcome: show(got),
    interpreted,
    table: 'ok' in got,
  });
  if ('other' in got) return checked(`threw ${show(got)}`);
  if ('code' in got) {
    if (!PYTORCH_CODES.has(got.code)) return checked(`ends in ${got.code}, not a PyTorch reader code`);
    return checked(got.file === PYTORCH_FILE ? undefined : `${got.code} names ${String(got.file)}`);
  }
  for (const t of got.ok.tensors) {
    if (!(t.offset >= 0 && t.byteLength >= 0 && t.offset + t.byteLength <= input.bytes.byteLength)) {
      return checked(`tensor "${t.name}" [${t.offset}, +${t.byteLength}) lies outside the file`);
    }
  }
  return checked(undefined);
}

async function checkHeader(input: FuzzInput, sliced: boolean): Promise<Checked> {
  const dataStart = 8 + input.bytes.length;
  const fileSize = dataStart + input.dataBytes;
  const got = outcome(() => parseHeader(input.bytes, HEADER_FILE, fileSize, dataStart));
  const ref = outcome(() => referenceParseHeader(input.bytes, HEADER_FILE, fileSize, dataStart));
  const checked = (problem: string | undefined): Checked => ({ problem, outcome: show(got) });
  const problem = compare(got, ref, HEADER_FILE, (a, b) =>
    isDeepStrictEqual(normalHeader(a), normalHeader(b)),
  );
  if (problem !== undefined || !sliced) return checked(problem);
  const again = await outcomeAsync(() => parseHeaderSliced(input.bytes, HEADER_FILE, fileSize, dataStart));
  if (show(again) !== show(got)) {
    return checked(`the sliced parser gives ${show(again)}, the synchronous one ${show(got)}`);
  }
  if ('ok' in again && 'ok' in got && !isDeepStrictEqual(normalHeader(again.ok), normalHeader(got.ok))) {
    return checked('the sliced and synchronous parsers disagree on the parse');
  }
  return checked(undefined);
}

async function checkIndex(input: FuzzInput): Promise<Checked> {
  const got = outcome(() => parseIndex(input.bytes, INDEX_FILE));
  const checked = (problem: string | undefined): Checked => ({ problem, outcome: show(got) });
  if (!isUtf8(input.bytes)) {
    // The reference decoded invalid UTF-8 as U+FFFD and went on; an index must be UTF-8 (RFC 8259).
    return checked(
      'code' in got && got.code === 'INVALID_INDEX' ? undefined : `invalid UTF-8 gives ${show(got)}`,
    );
  }
  const ref = outcome(() => referenceParseIndex(input.bytes, INDEX_FILE));
  return checked(compare(got, ref, INDEX_FILE, (a, b) => isDeepStrictEqual(normalIndex(a), normalIndex(b))));
}

function compare<T, R>(
  got: Outcome<T>,
  ref: Outcome<R>,
  file: string,
  same: (a: T, b: R) => boolean,
): string | undefined {
  if ('other' in got) return `threw ${show(got)} (reference: ${show(ref)})`;
  if ('code' in got && got.file !== file) return `${got.code} names ${String(got.file)}, not ${file}`;
  if ('other' in ref) return 'code' in got ? undefined : `reference threw ${show(ref)}, but it parsed`;
  if ('ok' in got && 'ok' in ref) return same(got.ok, ref.ok) ? undefined : 'both parse, differently';
  if ('code' in got && 'code' in ref && got.code === ref.code) return undefined;
  return `gives ${show(got)}, the reference ${show(ref)}`;
}

function normalHeader(h: ParsedHeader): unknown {
  const metadata = h.metadata === undefined ? undefined : { ...h.metadata };
  // The reference assigned metadata["__proto__"] = v, which JavaScript ignores; it is now kept.
  if (metadata !== undefined) delete (metadata as Record<string, unknown>)['__proto__'];
  return {
    tensors: h.tensors.map((t) => [t.name, t.dtype, [...t.shape], t.offset, t.byteLength, t.file]),
    metadata: metadata === undefined ? undefined : Object.entries(metadata).sort(),
  };
}

function normalIndex(i: ParsedIndex): unknown {
  // The reference walked weight_map in JavaScript's key order (integer-like names first).
  return { weightMap: [...i.weightMap].sort(), shards: [...i.shards.keys()].sort() };
}
