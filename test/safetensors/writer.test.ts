import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { mkdir, open } from 'node:fs/promises';
import * as path from 'node:path';
import { ModelStockError } from '../../lib/errors';
import { planShards } from '../../lib/safetensors/layout';
import type { WriteMode } from '../../lib/safetensors/shardFile';
import { SafetensorsWriter } from '../../lib/safetensors/writer';
import { backendsUnderTest } from '../helpers/backends';
import { withRefused, withSmallWriterSizes, writeModesUnderTest } from '../helpers/writer';
import { mulberry32, randomBytes } from '../helpers/random';
import { useTmpDir } from '../helpers/tmp';

describe('SafetensorsWriter: durable writes in every mode', function () {
  this.timeout(60_000);
  const tmp = useTmpDir('model-stock-writer-');

  // A 3-byte BOOL first: every later tensor starts at an odd offset; sizes are not multiples of 4096.
  const entries = [
    { name: 'flag', dtype: 'BOOL' as const, shape: [3], byteLength: 3 },
    { name: 'emb', dtype: 'BF16' as const, shape: [123, 45], byteLength: 123 * 45 * 2 },
    { name: 'w', dtype: 'F16' as const, shape: [4001], byteLength: 8002 },
    { name: 'norm', dtype: 'F32' as const, shape: [7], byteLength: 28 },
    { name: 'big', dtype: 'F32' as const, shape: [9999], byteLength: 39_996 },
  ];
  const data = new Map(entries.map((e, i) => [e.name, randomBytes(e.byteLength, 40 + i)]));

  /** Writes every tensor in shuffled windows, two in flight; returns the shard files' bytes. */
  async function writeAll(
    dir: string,
    mode: WriteMode,
    shardSize: number,
    seed: number,
  ): Promise<{ files: Map<string, Buffer>; report: Awaited<ReturnType<SafetensorsWriter['finish']>> }> {
    await mkdir(dir, { recursive: true });
    const writer = await SafetensorsWriter.create(dir, planShards(entries, { shardSize }), { mode });
    const rng = mulberry32(seed);
    const windows: [string, number, number][] = [];
    for (const e of entries) {
      for (let at = 0; at < e.byteLength;) {
        const n = Math.min(e.byteLength - at, 1 + Math.floor(rng() * 9000));
        windows.push([e.name, at, n]);
        at += n;
      }
    }
    windows.sort(() => rng() - 0.5);
    for (let i = 0; i < windows.length; i += 2) {
      await Promise.all(
        windows
          .slice(i, i + 2)
          .map(([name, at, n]) => writer.write(name, at, data.get(name)!.subarray(at, at + n))),
      );
    }
    const report = await writer.finish({ fsync: seed % 2 === 0 });
    const files = new Map(
      fs
        .readdirSync(dir)
        .sort()
        .map((f) => [f, fs.readFileSync(path.join(dir, f))]),
    );
    return { files, report };
  }

  it('writes byte-identical shards in every mode, sizes odd, windows in any order, blocks and flushes crossed', async () => {
    await withSmallWriterSizes(async () => {
      for (const shardSize of [20_000, 1e9]) {
        const outputs = new Map<string, Map<string, Buffer>>();
        for (const [i, mode] of writeModesUnderTest().entries()) {
          const { files, report } = await writeAll(
            path.join(tmp.dir, `all-${shardSize}-${mode}`),
            mode,
            shardSize,
            i,
          );
          assert.equal(report.mode, mode);
          assert.equal(report.requested, mode);
          assert.equal(report.fallback, undefined);
          outputs.set(mode, files);
        }
        const [first, ...rest] = [...outputs.values()];
        assert.ok(first!.size >= (shardSize === 1e9 ? 1 : 3), `shards: ${[...first!.keys()].join(', ')}`);
        for (const other of rest) assert.deepEqual(other, first);
        // The bytes are the tensors', where the layout put them.
        const layout = planShards(entries, { shardSize });
        for (const e of entries) {
          const shard = layout.shards[layout.placement.get(e.name)!.shard]!;
          const off = layout.placement.get(e.name)!.offset;
          assert.deepEqual(
            new Uint8Array(first!.get(shard.fileName)!.subarray(off, off + e.byteLength)),
            data.get(e.name),
          );
        }
      }
    });
  });

  it('auto is the measured default with the addon, node without it; a native mode without the addon is refused', async function () {
    const { report } = await writeAll(path.join(tmp.dir, 'auto'), 'auto', 1e9, 3);
    assert.equal(report.requested, 'auto');
    assert.equal(report.mode, backendsUnderTest().includes('native') ? 'direct' : 'node');
    const saved = process.env.MODEL_STOCK_ADDON;
    process.env.MODEL_STOCK_ADDON = path.join(tmp.dir, 'no-such-addon.node');
    try {
      const without = await writeAll(path.join(tmp.dir, 'auto-without'), 'auto', 1e9, 4);
      assert.equal(without.report.mode, 'node');
      assert.match(without.report.fallback ?? '', /native addon did not load/);
      const dir = path.join(tmp.dir, 'direct-without');
      await mkdir(dir);
      await assert.rejects(
        SafetensorsWriter.create(dir, planShards(entries, { shardSize: 1e9 }), { mode: 'direct' }),
        (e: unknown) => e instanceof ModelStockError && e.code === 'BACKEND_UNAVAILABLE',
      );
      assert.deepEqual(fs.readdirSync(dir), []);
    } finally {
      if (saved === undefined) delete process.env.MODEL_STOCK_ADDON;
      else process.env.MODEL_STOCK_ADDON = saved;
    }
  });

  it('a refused call falls back to a weaker mode, says why, and writes the same bytes', async function () {
    if (!writeModesUnderTest().includes('direct')) this.skip(); // the refusals are the native writer's
    await withSmallWriterSizes(async () => {
      const expected = (await writeAll(path.join(tmp.dir, 'ref'), 'node', 20_000, 5)).files;
      for (const [mode, refuse, ends, why] of [
        ['direct', 'direct', 'rolling', /O_DIRECT refused/],
        ['direct', 'directWrite', 'rolling', /O_DIRECT write refused/],
        ['rolling', 'syncFileRange', 'plain', /sync_file_range refused/],
        ['direct', 'direct,syncFileRange', 'plain', /O_DIRECT refused/],
      ] as const) {
        const dir = path.join(tmp.dir, `refused-${mode}-${refuse}`);
        const { files, report } = await withRefused(refuse, () => writeAll(dir, mode, 20_000, 6));
        assert.equal(report.mode, ends, refuse);
        assert.match(report.fallback ?? '', why);
        assert.deepEqual(files, expected, refuse);
      }
    });
  });

  it('node mode syncs every flush interval while writing, not only at the end', async () => {
    const handle = await open(path.join(tmp.dir, 'probe'), 'w');
    const proto = Object.getPrototypeOf(handle) as { datasync: () => Promise<void> };
    await handle.close();
    const original = proto.datasync;
    let syncs = 0;
    proto.datasync = function (this: unknown) {
      syncs++;
      return original.call(this);
    };
    try {
      await withSmallWriterSizes(() => writeAll(path.join(tmp.dir, 'node-syncs'), 'node', 1e9, 1));
    } finally {
      proto.datasync = original;
    }
    // ~49 KB written with a sync every 5000 bytes (fsync off: none at the end).
    assert.ok(syncs >= 8, `${syncs} fdatasync calls`);
  });

  it('rejects a write that overlaps bytes already written (they are written once)', async () => {
    const dir = path.join(tmp.dir, 'overlap');
    await mkdir(dir);
    const writer = await SafetensorsWriter.create(dir, planShards(entries, { shardSize: 1e9 }));
    const w = data.get('w')!;
    await writer.write('w', 0, w.subarray(0, 100));
    await assert.rejects(writer.write('w', 99, w.subarray(99, 200)), /overlaps bytes already written/);
    await writer.write('w', 100, w.subarray(100, 200)); // adjacent is fine
    await writer.abort();
  });
});
