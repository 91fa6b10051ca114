/** Plan → write → read back: bytes, headers and the index as the format and HF expect them. */
import { strict as assert } from 'node:assert';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { openCheckpoint } from '../../lib/checkpoint/open';
import { readSafetensorsFile } from '../../lib/safetensors/file';
import { indexJson, planShards } from '../../lib/safetensors/layout';
import { TensorReader } from '../../lib/safetensors/window';
import { SafetensorsWriter } from '../../lib/safetensors/writer';
import type { Checkpoint } from '../../lib/checkpoint/types';
import { useTmpDir } from '../helpers/tmp';
import { tensor, writeModel, type TestTensor } from '../helpers/safetensorsModel';

const mixed: TestTensor[] = [
  tensor('embed.weight', 'BF16', [3, 5], 2, 1),
  tensor('mask', 'BOOL', [3], 1, 2), // 3 bytes: every later tensor sits at an odd offset
  tensor('position_ids', 'I64', [1, 4], 8, 3),
  tensor('scale', 'F32', [], 4, 4),
  tensor('empty', 'F16', [0, 7], 2, 5),
  tensor('proj', 'F64', [2, 3], 8, 6),
  tensor('bias', 'F16', [7], 2, 7),
  tensor('q', 'U8', [5], 1, 8),
];

async function readAll(ckpt: Checkpoint, name: string): Promise<Uint8Array> {
  const info = ckpt.tensors.get(name);
  assert.ok(info, `tensor ${name} present`);
  const reader = new TensorReader();
  try {
    const out = new Uint8Array(info.byteLength);
    await reader.readInto(info, 0, out);
    return out;
  } finally {
    await reader.close();
  }
}

/** The raw header JSON and its declared length. */
async function rawHeader(file: string): Promise<{ n: number; text: string }> {
  const bytes = await readFile(file);
  const n = Number(bytes.readBigUInt64LE(0));
  return { n, text: bytes.subarray(8, 8 + n).toString('utf8') };
}

describe('safetensors write → read round trip', () => {
  const tmp = useTmpDir();

  it('single file: every dtype, a scalar and an empty tensor come back byte for byte, in order', async () => {
    const dir = path.join(tmp.dir, 'single');
    const layout = await writeModel(dir, mixed);
    assert.equal(layout.shards.length, 1);
    assert.equal(layout.shards[0]?.fileName, 'model.safetensors');
    await assert.rejects(access(path.join(dir, 'model.safetensors.index.json')));

    const ckpt = await openCheckpoint(dir);
    assert.deepEqual(
      ckpt.order,
      mixed.map((t) => t.name),
    );
    for (const t of mixed) {
      const info = ckpt.tensors.get(t.name);
      assert.equal(info?.dtype, t.dtype);
      assert.deepEqual(info?.shape, t.shape);
      assert.deepEqual(await readAll(ckpt, t.name), t.data, t.name);
      assert.equal(info?.offset, layout.placement.get(t.name)?.offset);
    }
  });

  it('header: length a multiple of 8, space-padded, __metadata__ first, offsets contiguous', async () => {
    const dir = path.join(tmp.dir, 'header');
    await writeModel(dir, mixed, 1 << 30, { produced_by: 'test' });
    const file = path.join(dir, 'model.safetensors');
    const { n, text } = await rawHeader(file);
    assert.equal((8 + n) % 8, 0);
    assert.match(text, /^\{"__metadata__":\{"format":"pt","produced_by":"test"\},"embed\.weight":/);
    assert.match(text, /\} *$/);
    const json = JSON.parse(text) as Record<string, { data_offsets: [number, number] }>;
    let end = 0;
    for (const t of mixed) {
      const offsets = json[t.name]?.data_offsets;
      assert.deepEqual(offsets, [end, end + t.data.byteLength]);
      end += t.data.byteLength;
    }
    assert.deepEqual((await readSafetensorsFile(file)).metadata, { format: 'pt', produced_by: 'test' });
  });

  it('sharded: HF file names, index with total_size and sorted weight_map, bytes intact', async () => {
    const dir = path.join(tmp.dir, 'sharded');
    const layout = await writeModel(dir, mixed, 40);
    const names = layout.shards.map((s) => s.fileName);
    assert.ok(names.length > 2);
    names.forEach((name, i) =>
      assert.equal(
        name,
        `model-${String(i + 1).padStart(5, '0')}-of-${String(names.length).padStart(5, '0')}.safetensors`,
      ),
    );

    const indexText = await readFile(path.join(dir, 'model.safetensors.index.json'), 'utf8');
    assert.equal(indexText, indexJson(layout));
    const index = JSON.parse(indexText) as {
      metadata: { total_size: number };
      weight_map: Record<string, string>;
    };
    const total = mixed.reduce((s, t) => s + t.data.byteLength, 0);
    assert.equal(index.metadata.total_size, total);
    assert.deepEqual(Object.keys(index.weight_map), mixed.map((t) => t.name).sort());
    // Python's json.dumps(indent=2) layout, as transformers writes it (no integer-like names here).
    assert.equal(indexText, JSON.stringify(index, null, 2) + '\n');

    const ckpt = await openCheckpoint(dir);
    assert.deepEqual(
      ckpt.order,
      mixed.map((t) => t.name),
    );
    for (const t of mixed) assert.deepEqual(await readAll(ckpt, t.name), t.data, t.name);
    for (const file of ckpt.files) assert.equal((await rawHeader(file)).n % 8, 0);
  });

  it('planShards packs greedily in order; an oversized tensor gets its own shard', () => {
    const e = (name: string, bytes: number) => ({
      name,
      dtype: 'U8' as const,
      shape: [bytes],
      byteLength: bytes,
    });
    const layout = planShards([e('a', 6), e('b', 4), e('c', 1), e('big', 25), e('d', 10), e('f', 0)], {
      shardSize: 10,
    });
    assert.deepEqual(
      layout.shards.map((s) => s.tensors),
      [['a', 'b'], ['c'], ['big'], ['d', 'f']],
    );
    assert.equal(layout.totalSize, 46);
    for (const s of layout.shards) {
      assert.equal(s.header.byteLength % 8, 0);
      const first = layout.placement.get(s.tensors[0] as string);
      assert.equal(first?.offset, s.header.byteLength);
    }
    assert.equal(planShards([], { shardSize: 10 }).shards[0]?.fileName, 'model.safetensors');
  });

  it('planShards refuses duplicate names and sizes that disagree with shape × dtype', () => {
    const e = { name: 'a', dtype: 'F32' as const, shape: [2], byteLength: 8 };
    assert.throws(() => planShards([e, e], { shardSize: 100 }), /twice/);
    assert.throws(() => planShards([{ ...e, byteLength: 6 }], { shardSize: 100 }), /byteLength 6/);
  });

  describe('SafetensorsWriter', () => {
    const entries = [
      { name: 'w', dtype: 'F32' as const, shape: [4, 4], byteLength: 64 },
      { name: 'b', dtype: 'F32' as const, shape: [4], byteLength: 16 },
    ];

    it('accepts windows of one tensor in any order, concurrently', async () => {
      const out = path.join(tmp.dir, 'windows');
      await mkdir(out);
      const t = tensor('w', 'F32', [4, 4], 4, 9);
      const b = tensor('b', 'F32', [4], 4, 10);
      const layout = planShards(entries, { shardSize: 1000 });
      const writer = await SafetensorsWriter.create(out, layout);
      await Promise.all([
        writer.write('w', 48, t.data.subarray(48)),
        writer.write('b', 0, b.data),
        writer.write('w', 0, t.data.subarray(0, 24)),
        writer.write('w', 24, t.data.subarray(24, 48)),
      ]);
      await writer.finish();
      const ckpt = await openCheckpoint(out);
      assert.deepEqual(await readAll(ckpt, 'w'), t.data);
      assert.deepEqual(await readAll(ckpt, 'b'), b.data);
    });

    it('finish() refuses a tensor with bytes never written, and closes the files', async () => {
      const dir = path.join(tmp.dir, 'holes');
      await mkdir(dir);
      const writer = await SafetensorsWriter.create(dir, planShards(entries, { shardSize: 1000 }));
      await writer.write('w', 0, new Uint8Array(32));
      await writer.write('w', 40, new Uint8Array(24)); // bytes 32..40 missing
      await writer.write('b', 0, new Uint8Array(16));
      await assert.rejects(writer.finish(), /never written for "w"/);
      await assert.rejects(writer.write('b', 0, new Uint8Array(1)), /after finish/);
    });

    it('rejects unknown tensors and writes past a tensor end', async () => {
      const dir = path.join(tmp.dir, 'bounds');
      await mkdir(dir);
      const writer = await SafetensorsWriter.create(dir, planShards(entries, { shardSize: 1000 }));
      await assert.rejects(writer.write('nope', 0, new Uint8Array(1)), /not in the layout/);
      await assert.rejects(writer.write('b', 12, new Uint8Array(8)), RangeError);
      await assert.rejects(writer.write('b', -1, new Uint8Array(1)), RangeError);
      await writer.abort();
      await writer.abort(); // idempotent, never throws
    });

    it('create() never overwrites an existing file', async () => {
      const dir = path.join(tmp.dir, 'exists');
      await mkdir(dir);
      await writeFile(path.join(dir, 'model.safetensors'), 'keep me');
      await assert.rejects(
        SafetensorsWriter.create(dir, planShards(entries, { shardSize: 1000 })),
        (e: unknown) => (e as { code?: string }).code === 'IO_ERROR',
      );
      assert.equal(await readFile(path.join(dir, 'model.safetensors'), 'utf8'), 'keep me');
    });
  });
});
