/** One crafted file per format rule: each must fail with its own code, naming file (and tensor). */
import { strict as assert } from 'node:assert';
import { readSafetensorsFile } from '../../lib/safetensors/file';
import { parseHeader, scanKeys } from '../../lib/safetensors/header';
import { isModelStockError, type ErrorCode } from '../../lib/errors';
import { useTmpDir } from '../helpers/tmp';
import { craft, headerOf, writeCrafted } from '../helpers/craft';

describe('safetensors header validation', () => {
  const tmp = useTmpDir();
  let n = 0;

  async function rejects(bytes: Uint8Array, code: ErrorCode, tensor?: string): Promise<Error> {
    const file = await writeCrafted(tmp.dir, `case-${++n}.safetensors`, bytes);
    let caught: unknown;
    await readSafetensorsFile(file).catch((e: unknown) => (caught = e));
    assert.ok(isModelStockError(caught), `expected ModelStockError ${code}, got ${String(caught)}`);
    assert.equal(caught.code, code, caught.message);
    assert.equal(caught.file, file);
    assert.ok(caught.message.includes(file), `message names the file: ${caught.message}`);
    if (tensor !== undefined) {
      assert.equal(caught.tensor, tensor);
      assert.ok(caught.message.includes(`"${tensor}"`), `message names the tensor: ${caught.message}`);
    }
    return caught;
  }

  async function reads(bytes: Uint8Array) {
    return readSafetensorsFile(await writeCrafted(tmp.dir, `ok-${++n}.safetensors`, bytes));
  }

  const f32x2 = (begin: number) => ({ dtype: 'F32', shape: [2], data_offsets: [begin, begin + 8] });

  it('accepts a well-formed file and reports absolute offsets in header order', async () => {
    const header = headerOf({ __metadata__: { format: 'pt' }, b: f32x2(8), a: f32x2(0) });
    const f = await reads(craft(header, 16));
    assert.deepEqual(
      f.tensors.map((t) => [t.name, t.offset, t.byteLength]),
      [
        ['b', 8 + header.length + 8, 8],
        ['a', 8 + header.length, 8],
      ],
    );
    assert.deepEqual(f.metadata, { format: 'pt' });
    assert.equal(f.dataStart, 8 + header.length);
  });

  it('file shorter than 8 bytes: HEADER_TOO_SMALL', async () => {
    await rejects(new Uint8Array([1, 0, 0]), 'HEADER_TOO_SMALL');
  });

  it('declared header length over 100,000,000: HEADER_TOO_LARGE (also for a u64 beyond 2^53)', async () => {
    await rejects(craft('{}', 0, 100_000_001n), 'HEADER_TOO_LARGE');
    await rejects(craft('{}', 0, 0xffff_ffff_ffff_fff0n), 'HEADER_TOO_LARGE');
  });

  it('header length past the end of the file: INVALID_HEADER_LENGTH', async () => {
    await rejects(craft('{}', 0, 3n), 'INVALID_HEADER_LENGTH');
  });

  it('header bytes not UTF-8: INVALID_HEADER_UTF8', async () => {
    await rejects(craft(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])), 'INVALID_HEADER_UTF8');
  });

  it('header not JSON, or JSON but not an object: INVALID_HEADER', async () => {
    await rejects(craft('{"a":'), 'INVALID_HEADER');
    await rejects(craft('[]'), 'INVALID_HEADER');
    await rejects(craft('"x"'), 'INVALID_HEADER');
    // A byte-order mark is not stripped (serde_json rejects it too).
    await rejects(craft(new Uint8Array([0xef, 0xbb, 0xbf, 0x7b, 0x7d])), 'INVALID_HEADER');
  });

  it('__metadata__ with a non-string value, or not an object: INVALID_METADATA', async () => {
    await rejects(craft(headerOf({ __metadata__: { format: 1 } })), 'INVALID_METADATA');
    await rejects(craft(headerOf({ __metadata__: ['pt'] })), 'INVALID_METADATA');
  });

  it('unknown dtype: UNKNOWN_DTYPE', async () => {
    await rejects(
      craft(headerOf({ w: { dtype: 'F128', shape: [1], data_offsets: [0, 16] } }), 16),
      'UNKNOWN_DTYPE',
      'w',
    );
  });

  it('negative or fractional shape: INVALID_SHAPE', async () => {
    await rejects(
      craft(headerOf({ w: { dtype: 'U8', shape: [-1], data_offsets: [0, 1] } }), 1),
      'INVALID_SHAPE',
      'w',
    );
    await rejects(
      craft(headerOf({ w: { dtype: 'U8', shape: [1.5], data_offsets: [0, 1] } }), 1),
      'INVALID_SHAPE',
      'w',
    );
    await rejects(
      craft(headerOf({ w: { dtype: 'U8', shape: '1', data_offsets: [0, 1] } }), 1),
      'INVALID_SHAPE',
      'w',
    );
  });

  it('data_offsets reversed or malformed: INVALID_OFFSETS', async () => {
    await rejects(
      craft(headerOf({ w: { dtype: 'U8', shape: [1], data_offsets: [1, 0] } }), 1),
      'INVALID_OFFSETS',
      'w',
    );
    await rejects(
      craft(headerOf({ w: { dtype: 'U8', shape: [1], data_offsets: [0] } }), 1),
      'INVALID_OFFSETS',
      'w',
    );
    await rejects(
      craft(headerOf({ w: { dtype: 'U8', shape: [1], data_offsets: [0, 2 ** 60] } }), 1),
      'INVALID_OFFSETS',
      'w',
    );
  });

  it('gap between tensors (or not starting at 0): INVALID_OFFSET naming the tensor', async () => {
    const e = await rejects(craft(headerOf({ a: f32x2(0), b: f32x2(12) }), 20), 'INVALID_OFFSET', 'b');
    assert.match(e.message, /gap/);
    await rejects(craft(headerOf({ a: f32x2(4) }), 12), 'INVALID_OFFSET', 'a');
  });

  it('overlapping tensors: INVALID_OFFSET naming the tensor', async () => {
    const e = await rejects(craft(headerOf({ a: f32x2(0), b: f32x2(4) }), 12), 'INVALID_OFFSET', 'b');
    assert.match(e.message, /overlap/);
  });

  it('size mismatch between shape × dtype and data_offsets: TENSOR_INVALID_INFO', async () => {
    const e = await rejects(
      craft(headerOf({ x: { dtype: 'BF16', shape: [2, 2], data_offsets: [0, 6] } }), 6),
      'TENSOR_INVALID_INFO',
      'x',
    );
    assert.match(e.message, /data_offsets \[0, 6\] hold 6 bytes but BF16 \[2, 2\] needs 8/);
  });

  it('element count overflow ([2**40, 2**40]): TENSOR_INVALID_INFO', async () => {
    await rejects(
      craft(headerOf({ x: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 8] } }), 8),
      'TENSOR_INVALID_INFO',
      'x',
    );
  });

  it('sub-byte dtype with a partial byte: TENSOR_INVALID_INFO; whole bytes accepted', async () => {
    await rejects(
      craft(headerOf({ q: { dtype: 'F4', shape: [3], data_offsets: [0, 1] } }), 1),
      'TENSOR_INVALID_INFO',
      'q',
    );
    const ok = await reads(craft(headerOf({ q: { dtype: 'F6_E2M3', shape: [4], data_offsets: [0, 3] } }), 3));
    assert.equal(ok.tensors[0]?.byteLength, 3);
  });

  it('bytes after the last tensor: METADATA_INCOMPLETE_BUFFER', async () => {
    const e = await rejects(craft(headerOf({ a: f32x2(0) }), 9), 'METADATA_INCOMPLETE_BUFFER');
    assert.match(e.message, /1 trailing bytes/);
    await rejects(craft('{}', 1), 'METADATA_INCOMPLETE_BUFFER');
  });

  it('data truncated: METADATA_INCOMPLETE_BUFFER', async () => {
    const e = await rejects(craft(headerOf({ a: f32x2(0) }), 7), 'METADATA_INCOMPLETE_BUFFER');
    assert.match(e.message, /truncated/);
  });

  it('duplicate tensor key (JSON.parse would keep the last): DUPLICATE_KEY', async () => {
    const entry = JSON.stringify(f32x2(0));
    await rejects(
      craft(`{"a":${entry},"b":${JSON.stringify(f32x2(8))},"a":${entry}}`, 16),
      'DUPLICATE_KEY',
      'a',
    );
    // The same key spelled with an escape is still the same key.
    await rejects(craft(`{"a":${entry}, "\\u0061" :${entry}}`, 8), 'DUPLICATE_KEY', 'a');
  });

  it('duplicate key inside an entry or in __metadata__: DUPLICATE_KEY', async () => {
    await rejects(
      craft('{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}', 1),
      'DUPLICATE_KEY',
      'a',
    );
    await rejects(craft('{"__metadata__":{"format":"pt","format":"np"}}'), 'DUPLICATE_KEY');
  });

  it('extra or missing key in an entry: INVALID_HEADER (stricter than the crate)', async () => {
    await rejects(
      craft(headerOf({ a: { dtype: 'U8', shape: [1], data_offsets: [0, 1], offsets: [0, 1] } }), 1),
      'INVALID_HEADER',
      'a',
    );
    await rejects(craft(headerOf({ a: { dtype: 'U8', shape: [1] } }), 1), 'INVALID_HEADER', 'a');
    await rejects(craft(headerOf({ a: [0, 1] }), 1), 'INVALID_HEADER', 'a');
  });

  it('scalar shape [] is one element', async () => {
    const f = await reads(craft(headerOf({ s: { dtype: 'F64', shape: [], data_offsets: [0, 8] } }), 8));
    assert.deepEqual(f.tensors[0]?.shape, []);
    assert.equal(f.tensors[0]?.byteLength, 8);
    await rejects(
      craft(headerOf({ s: { dtype: 'F64', shape: [], data_offsets: [0, 0] } })),
      'TENSOR_INVALID_INFO',
      's',
    );
  });

  it('zero-size tensors are accepted, anywhere in the data', async () => {
    const empty = (at: number) => ({ dtype: 'F32', shape: [0, 4], data_offsets: [at, at] });
    const f = await reads(craft(headerOf({ z0: empty(0), a: f32x2(0), z1: empty(8), z2: empty(8) }), 8));
    assert.deepEqual(
      f.tensors.map((t) => t.byteLength),
      [0, 8, 0, 0],
    );
    await reads(craft(headerOf({ only: empty(0) })));
    await reads(craft('{}'));
  });

  it('keeps the header text order even for integer-like names', async () => {
    // By hand: JSON.stringify of an object would itself move "10" and "2" first.
    const e = (at: number) => JSON.stringify(f32x2(at));
    const f = await reads(craft(`{"b":${e(0)},"10":${e(8)},"2":${e(16)}}`, 24));
    assert.deepEqual(
      f.tensors.map((t) => t.name),
      ['b', '10', '2'],
    );
  });

  it('parseHeader alone validates bytes without touching the disk', () => {
    const json = new TextEncoder().encode(headerOf({ a: f32x2(0) }));
    const { tensors } = parseHeader(json, 'x.safetensors', 8 + json.length + 8, 8 + json.length);
    assert.equal(tensors[0]?.offset, 8 + json.length);
    assert.throws(
      () => parseHeader(json, 'x.safetensors', 8 + json.length + 9, 8 + json.length),
      (e: unknown) => isModelStockError(e) && e.code === 'METADATA_INCOMPLETE_BUFFER',
    );
  });

  it('scanKeys finds nested duplicates and ignores look-alike strings in values', () => {
    assert.equal(scanKeys('{"a":"b","c":["a","b"],"d":{"a":1}}').duplicate, undefined);
    assert.deepEqual(scanKeys('{"x":{"y":{"k":1,"k":2}}}').duplicate, { key: 'k', within: ['x', 'y'] });
    assert.deepEqual(scanKeys('{"q\\"":1,"r":2}').topLevel, ['q"', 'r']);
  });

  it('IO failure opening the file: IO_ERROR naming it', async () => {
    const missing = `${tmp.dir}/missing.safetensors`;
    await assert.rejects(
      readSafetensorsFile(missing),
      (e: unknown) => isModelStockError(e) && e.code === 'IO_ERROR' && e.file === missing,
    );
  });
});
