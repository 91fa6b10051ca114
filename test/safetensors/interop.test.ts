/**
 * Interop with an independent reader (the npm `safetensors` package) and with bytes in the reference
 * crate's canonical form (its `test_serialization` vector).
 */
import { strict as assert } from 'node:assert';
import { readFile, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { openCheckpoint } from '../../lib/checkpoint/open';
import { readSafetensorsFile } from '../../lib/safetensors/file';
import { TensorReader } from '../../lib/safetensors/window';
import { useTmpDir } from '../helpers/tmp';
import { tensor, writeModel } from '../helpers/safetensorsModel';

// The package ships untyped UMD: `new SafeTensor(bytes)`, `.metadata` (a Map), `.getTensor(name)`.
interface NpmSafeTensor {
  metadata: Map<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  getTensor(name: string): Uint8Array;
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { SafeTensor } = require('safetensors') as { SafeTensor: new (bytes: Uint8Array) => NpmSafeTensor };

/** The package reads the length with a DataView over `.buffer` from 0, so it needs an unshared buffer. */
function ownBuffer(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

/**
 * safetensors@0.0.1 treats `__metadata__` as a tensor and crashes on its missing data_offsets. Blank the
 * entry with spaces (insignificant JSON whitespace): header length and every offset stay as written.
 */
function withoutMetadata(bytes: Uint8Array): Uint8Array {
  const out = ownBuffer(bytes);
  const n = Number(new DataView(out.buffer).getBigUint64(0, true));
  const text = Buffer.from(out.subarray(8, 8 + n)).toString('latin1');
  const m = /^\{("__metadata__":\{[^}]*\},?)/.exec(text);
  assert.ok(m?.[1], 'header starts with __metadata__');
  out.fill(0x20, 9, 9 + m[1].length);
  return out;
}

describe('safetensors interop', () => {
  const tmp = useTmpDir();

  it('files our writer writes are read by the npm safetensors package with identical bytes', async () => {
    const tensors = [
      tensor('embed', 'BF16', [4, 3], 2, 21),
      tensor('mask', 'BOOL', [5], 1, 22),
      tensor('ids', 'I64', [2], 8, 23),
      tensor('scalar', 'F32', [], 4, 24),
      tensor('w', 'F64', [3, 2], 8, 25),
    ];
    const dir = path.join(tmp.dir, 'ours');
    const layout = await writeModel(dir, tensors, 64);
    assert.ok(layout.shards.length > 1);

    let seen = 0;
    for (const shard of layout.shards) {
      const bytes = await readFile(path.join(dir, shard.fileName));
      assert.throws(
        () => new SafeTensor(ownBuffer(bytes)),
        TypeError,
        'the package still trips on __metadata__',
      );
      const theirs = new SafeTensor(withoutMetadata(bytes));
      for (const name of shard.tensors) {
        const t = tensors.find((x) => x.name === name);
        assert.ok(t);
        const info = theirs.metadata.get(name);
        assert.equal(info?.dtype, t.dtype);
        assert.deepEqual(info?.shape, t.shape);
        assert.deepEqual(new Uint8Array(theirs.getTensor(name)), t.data, name);
        seen++;
      }
    }
    assert.equal(seen, tensors.length);
  });

  it("reads the reference crate's canonical serialization identically to the npm package", async () => {
    // tensor.rs `test_serialization`: {"attn.0": F32 [1, 2, 3] = 0..5}, unpadded 64-byte header.
    const header = '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}';
    assert.equal(header.length, 64);
    const data = new Uint8Array(new Float32Array([0, 1, 2, 3, 4, 5]).buffer);
    const bytes = new Uint8Array(8 + 64 + 24);
    new DataView(bytes.buffer).setBigUint64(0, 64n, true);
    bytes.set(new TextEncoder().encode(header), 8);
    bytes.set(data, 72);
    const file = path.join(tmp.dir, 'canonical.safetensors');
    await writeFile(file, bytes);

    const ours = await readSafetensorsFile(file);
    assert.equal(ours.metadata, undefined);
    assert.deepEqual(ours.tensors, [
      { name: 'attn.0', dtype: 'F32', shape: [1, 2, 3], offset: 72, byteLength: 24, file },
    ]);
    const ckpt = await openCheckpoint(file);
    const reader = new TensorReader();
    const got = new Uint8Array(24);
    try {
      await reader.readInto(ckpt.tensors.get('attn.0') ?? assert.fail('missing'), 0, got);
    } finally {
      await reader.close();
    }
    assert.deepEqual(got, data);
    assert.deepEqual(new Uint8Array(new SafeTensor(ownBuffer(bytes)).getTensor('attn.0')), got);
    assert.deepEqual(Array.from(new Float32Array(got.buffer)), [0, 1, 2, 3, 4, 5]);
  });

  it("accepts the crate's empty-file vectors (with and without __metadata__)", async () => {
    const empty = Uint8Array.from([8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]);
    const withMeta = new Uint8Array(8 + 40);
    withMeta[0] = 40;
    withMeta.set(new TextEncoder().encode('{"__metadata__":{"framework":"pt"}}     '), 8);
    for (const [name, bytes] of [
      ['empty', empty],
      ['meta', withMeta],
    ] as const) {
      const file = path.join(tmp.dir, `${name}.safetensors`);
      await writeFile(file, bytes);
      const f = await readSafetensorsFile(file);
      assert.equal(f.tensors.length, 0);
      assert.deepEqual(f.metadata, name === 'meta' ? { framework: 'pt' } : undefined);
    }
  });
});
