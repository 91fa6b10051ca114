/**
 * PyTorch test material: the torch.save files committed under test/data/pytorch (made by its
 * make_fixtures.py with Debian's torch 1.13, with expected.json, what each readable file holds), and
 * a small pickle assembler for crafted data.pkl files.
 */
import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { DType } from '../../lib/dtype';
import { isModelStockError, type ErrorCode, type ModelStockError } from '../../lib/errors';
import type { TensorInfo } from '../../lib/checkpoint/types';
import { TorchZipWriter } from '../../lib/fixtures/torchZip';

export const PYTORCH_FIXTURES = path.resolve(__dirname, '..', '..', '..', 'test', 'data', 'pytorch');

export const fixture = (...parts: string[]): string => path.join(PYTORCH_FIXTURES, ...parts);

export interface ExpectedTensor {
  readonly dtype: DType;
  readonly shape: number[];
  readonly sha256: string;
}

/** expected.json: file (or `file#entry`) → tensor name as saved → what torch held. */
export function expectedTensors(): Record<string, Record<string, ExpectedTensor>> {
  return JSON.parse(fs.readFileSync(fixture('expected.json'), 'utf8')) as Record<
    string,
    Record<string, ExpectedTensor>
  >;
}

export function sha256(bytes: Uint8Array): string {
  return crypto.createHash('sha256').update(bytes).digest('hex');
}

/** A tensor's bytes, read straight from its file at its offset. */
export function tensorBytes(t: TensorInfo): Uint8Array {
  const fd = fs.openSync(t.file, 'r');
  try {
    const out = Buffer.alloc(t.byteLength);
    fs.readSync(fd, out, 0, t.byteLength, t.offset);
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

/** Assembles pickle opcodes: each method appends one, `bytes()` gives the stream. */
export class PickleBuilder {
  private readonly out: number[] = [];

  raw(...bytes: number[]): this {
    for (const b of bytes) this.out.push(b & 0xff);
    return this;
  }
  private u32(v: number): this {
    return this.raw(v, v >>> 8, v >>> 16, v >>> 24);
  }
  private text(s: string): this {
    return this.raw(...Buffer.from(s, 'utf8'));
  }
  proto(n = 2): this {
    return this.raw(0x80, n);
  }
  mark(): this {
    return this.raw(0x28);
  }
  stop(): this {
    return this.raw(0x2e);
  }
  none(): this {
    return this.raw(0x4e);
  }
  bool(v: boolean): this {
    return this.raw(v ? 0x88 : 0x89);
  }
  int(v: number): this {
    if (v >= 0 && v < 256) return this.raw(0x4b, v);
    if (v >= 0 && v < 65536) return this.raw(0x4d, v, v >> 8);
    return this.raw(0x4a).u32(v);
  }
  /** LONG1 of the given little-endian bytes. */
  long1(...le: number[]): this {
    return this.raw(0x8a, le.length, ...le);
  }
  float(v: number): this {
    const b = Buffer.alloc(8);
    b.writeDoubleBE(v);
    return this.raw(0x47, ...b);
  }
  str(s: string): this {
    return this.raw(0x58).u32(Buffer.byteLength(s)).text(s);
  }
  shortStr(s: string): this {
    return this.raw(0x8c, Buffer.byteLength(s)).text(s);
  }
  bytes_(b: number[]): this {
    return this.raw(0x43, b.length, ...b);
  }
  global(module: string, name: string): this {
    return this.raw(0x63).text(`${module}\n${name}\n`);
  }
  stackGlobal(module: string, name: string): this {
    return this.shortStr(module).shortStr(name).raw(0x93);
  }
  emptyDict(): this {
    return this.raw(0x7d);
  }
  emptyList(): this {
    return this.raw(0x5d);
  }
  emptyTuple(): this {
    return this.raw(0x29);
  }
  tuple(): this {
    return this.raw(0x74);
  }
  tupleN(n: 1 | 2 | 3): this {
    return this.raw(0x84 + n);
  }
  setitem(): this {
    return this.raw(0x73);
  }
  setitems(): this {
    return this.raw(0x75);
  }
  append(): this {
    return this.raw(0x61);
  }
  reduce(): this {
    return this.raw(0x52);
  }
  build(): this {
    return this.raw(0x62);
  }
  binpersid(): this {
    return this.raw(0x51);
  }
  put(i: number): this {
    return i < 256 ? this.raw(0x71, i) : this.raw(0x72).u32(i);
  }
  get(i: number): this {
    return i < 256 ? this.raw(0x68, i) : this.raw(0x6a).u32(i);
  }
  /** `(a, b, …)` of small ints (EMPTY_TUPLE for none). */
  ints(values: readonly number[]): this {
    if (values.length === 0) return this.emptyTuple();
    this.mark();
    for (const v of values) this.int(v);
    return this.tuple();
  }
  /** The persistent id torch writes for a storage, followed by BINPERSID. */
  storage(type: string, key: string, numel: number, module = 'torch'): this {
    return this.mark().str('storage').global(module, type).str(key).str('cpu').int(numel).tuple().binpersid();
  }
  /** `_rebuild_tensor_v2(storage, offset, shape, strides, False, OrderedDict())` over a storage of `type`. */
  tensorV2(
    type: string,
    key: string,
    numel: number,
    shape: readonly number[],
    o: { offset?: number; stride?: readonly number[] } = {},
  ): this {
    const stride = o.stride ?? shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
    return this.global('torch._utils', '_rebuild_tensor_v2')
      .mark()
      .storage(type, key, numel)
      .int(o.offset ?? 0)
      .ints(shape)
      .ints(stride)
      .bool(false)
      .global('collections', 'OrderedDict')
      .emptyTuple()
      .reduce()
      .tuple()
      .reduce();
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.out);
  }
}

/** An archive of `records` (name inside the top folder → bytes), as torch lays records out. */
export async function archiveOf(
  records: readonly (readonly [string, Uint8Array])[],
  top = 'archive',
): Promise<Uint8Array> {
  const w = TorchZipWriter.inMemory(top);
  for (const [name, bytes] of records) await w.add(name, bytes.byteLength, bytes);
  await w.finish();
  return w.bytes();
}

/** Little-endian bytes of float32 values. */
export function f32(...values: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(values).buffer);
}

/** The ModelStockError `work` rejects with, after checking its code, the file it names and what it says. */
export async function rejectsWith(
  work: Promise<unknown>,
  code: ErrorCode,
  file: string,
  ...mention: (string | RegExp)[]
): Promise<ModelStockError> {
  const e = await work.then(
    () => undefined,
    (err: unknown) => err,
  );
  assert.ok(isModelStockError(e), `expected ${code}, got ${String(e)}`);
  assert.equal(e.code, code, e.message);
  assert.equal(e.file, file);
  for (const m of mention) {
    if (typeof m === 'string') assert.ok(e.message.includes(m), `"${e.message}" mentions ${m}`);
    else assert.match(e.message, m);
  }
  return e;
}
