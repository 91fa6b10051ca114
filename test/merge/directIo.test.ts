import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createMemoryCgroup } from '../../bench/cgroup';
import type { IoMode } from '../../lib/engine/io';
import { loadNativeAddon } from '../../lib/engine/native/loader';
import { generateFixture, PRESETS } from '../../lib/fixtures/generate';
import { mergeModelStock } from '../../lib/merge';
import type { MergeReport } from '../../lib/types';
import { backendsUnderTest } from '../helpers/backends';
import { CLI, mergeArgs } from '../helpers/cli';
import { dropFromPageCache, withRamfs } from '../helpers/pageCache';
import { assertValidReport } from '../helpers/schema';
import { useTmpDir } from '../helpers/tmp';
import { withEnv } from '../helpers/writer';

/**
 * `--io direct` and `--io auto` end to end: what runs is what the report says, a refused O_DIRECT falls
 * back to buffered reads saying why, the inputs' pages stay out of the page cache, nothing is left
 * open, and a merge inside a memory limit smaller than its inputs completes with the same bytes.
 */

interface Fixture {
  readonly base: string;
  readonly models: string[];
}

const weightFiles = (dir: string): string[] =>
  fs
    .readdirSync(dir)
    .filter((n) => n.endsWith('.safetensors'))
    .map((n) => path.join(dir, n));

function shards(out: string): Buffer[] {
  return fs
    .readdirSync(out)
    .filter((n) => n.endsWith('.safetensors'))
    .sort()
    .map((n) => fs.readFileSync(path.join(out, n)));
}

describe('direct input reads (--io direct, --io auto)', function () {
  this.timeout(300_000);
  const tmp = useTmpDir('model-stock-direct-');
  let fx: Fixture;
  let reference: Buffer[];
  let native = false;

  before(async function () {
    native = backendsUnderTest().includes('native');
    if (!native) this.skip();
    const info = await generateFixture({
      ...PRESETS.tiny,
      extraTensors: true,
      dir: path.join(tmp.dir, 'fx'),
    });
    fx = { base: info.base, models: [...info.models] };
    const out = path.join(tmp.dir, 'reference');
    await mergeModelStock({ ...fx, out, io: 'fs', fsync: false });
    reference = shards(out);
  });

  const merge = async (label: string, io: IoMode, extra: object = {}): Promise<MergeReport> => {
    const out = path.join(tmp.dir, label);
    const report = await mergeModelStock({ ...fx, out, io, fsync: false, ...extra });
    assert.deepEqual(shards(out), reference, `${label}: the same bytes as Node's reads`);
    assertValidReport(report, label);
    fs.rmSync(out, { recursive: true });
    return report;
  };

  it('direct: every input read with O_DIRECT, the report says so, its profile adds up', async () => {
    const report = await merge('direct', 'direct');
    assert.deepEqual(
      report.inputs!.map((i) => [i.io, i.fallback]),
      [0, 1, 2].map(() => ['direct', undefined]),
    );
    const p = report.profile!;
    assert.ok(p.seconds > 0 && p.seconds <= report.seconds, JSON.stringify(p));
    assert.ok(p.read > 0 && p.compute > 0 && p.write > 0, JSON.stringify(p));
    for (const k of ['read', 'compute', 'write', 'readWait', 'writeWait'] as const)
      assert.ok(p[k] >= 0 && p[k] <= p.seconds * 1.01, `${k}: ${JSON.stringify(p)}`);
  });

  for (const [calls, why] of [
    ['directOpen', 'O_DIRECT refused (Invalid argument)'],
    ['directRead', 'O_DIRECT read refused (Invalid argument)'],
  ] as const) {
    it(`a refused O_DIRECT (${calls}, injected) falls back to pread, with the reason in the report`, async () => {
      const report = await withEnv('MODEL_STOCK_TEST_REFUSE_READ', calls, () =>
        merge(`refused-${calls}`, 'direct'),
      );
      assert.deepEqual(
        report.inputs!.map((i) => [i.io, i.fallback]),
        [0, 1, 2].map(() => ['pread', why]),
      );
    });
  }

  it('ramfs refuses O_DIRECT: inputs there are read with pread, saying why', async function () {
    await withRamfs(this, async (dir) => {
      fs.cpSync(path.dirname(fx.base), path.join(dir, 'fx'), { recursive: true });
      const onRamfs = {
        base: path.join(dir, 'fx', path.basename(fx.base)),
        models: fx.models.map((m) => path.join(dir, 'fx', path.basename(m))),
      };
      const out = path.join(tmp.dir, 'from-ramfs');
      const report = await mergeModelStock({ ...onRamfs, out, io: 'direct', fsync: false });
      assert.deepEqual(shards(out), reference);
      assert.deepEqual(
        report.inputs!.map((i) => [i.io, i.fallback]),
        [0, 1, 2].map(() => ['pread', 'O_DIRECT refused (Invalid argument)']),
      );
      fs.rmSync(out, { recursive: true });
    });
  });

  it('auto: cold inputs are read directly and stay out of the page cache; cached ones are mapped', async function () {
    if (process.platform !== 'linux') this.skip();
    const addon = loadNativeAddon().addon!;
    const all = [fx.base, ...fx.models];
    const cached = async (dir: string): Promise<number> =>
      (await addon.inputResidency(weightFiles(dir))).reduce((a, r) => a + r.resident, 0);
    for (const f of all.flatMap(weightFiles)) dropFromPageCache(f);
    const cold = await merge('auto-cold', 'auto');
    assert.deepEqual(
      cold.inputs!.map((i) => i.io),
      ['direct', 'direct', 'direct'],
    );
    // Only headers went through the page cache (read when each checkpoint was opened: 16 KiB here).
    for (const dir of all) assert.ok((await cached(dir)) <= 64 * 1024 * weightFiles(dir).length, dir);

    for (const f of all.flatMap(weightFiles)) fs.readFileSync(f); // cached again
    dropFromPageCache(weightFiles(fx.models[0]!)[0]!);
    const mixed = await merge('auto-mixed', 'auto');
    assert.deepEqual(
      mixed.inputs!.map((i) => i.io),
      ['mmap', 'direct', 'mmap'],
    );
  });

  it('a bad io mode or queue depth is BAD_CONFIG, before anything is read', async () => {
    for (const bad of [
      { io: 'odirect' as IoMode },
      { ioQueueDepth: 0 },
      { ioQueueDepth: 65 },
      { ioQueueDepth: 1.5 },
    ]) {
      await assert.rejects(
        mergeModelStock({ ...fx, out: path.join(tmp.dir, 'bad'), ...bad }),
        (e: unknown) => (e as { code?: unknown }).code === 'BAD_CONFIG',
        JSON.stringify(bad),
      );
    }
    assert.ok(!fs.existsSync(path.join(tmp.dir, 'bad')));
  });

  it('nothing stays open after a direct merge, a failed one or a cancelled one', async () => {
    const addon = loadNativeAddon().addon!;
    const before = addon.inputReaderStats().openFiles;
    await merge('leaks-ok', 'direct');
    const controller = new AbortController();
    await assert.rejects(
      mergeModelStock({
        ...fx,
        out: path.join(tmp.dir, 'leaks-cancelled'),
        io: 'direct',
        signal: controller.signal,
        onProgress: (p) => {
          if (p.tensorsDone === 3) controller.abort();
        },
      }),
      (e: unknown) => (e as { code?: unknown }).code === 'CANCELLED',
    );
    assert.deepEqual(addon.inputReaderStats().openFiles, before);
    assert.equal(addon.inputReaderStats().batches, 0);
    assert.ok(!fs.existsSync(path.join(tmp.dir, 'leaks-cancelled')));
  });

  it('inside a memory cgroup smaller than its inputs, direct and mmap merges complete with the same bytes', async function () {
    // ~390 MB of inputs; the limit holds the merge's own 32 MiB budget and Node, never the inputs.
    const big = await generateFixture({
      ...PRESETS.tiny,
      hidden: 1024,
      intermediate: 2816,
      layers: 4,
      vocab: 8192,
      heads: 8,
      kvHeads: 2,
      dir: path.join(tmp.dir, 'big'),
    });
    const inputs = [big.base, ...big.models];
    const inputBytes = inputs.flatMap(weightFiles).reduce((a, f) => a + fs.statSync(f).size, 0);
    const limit = 192 * 1024 * 1024;
    assert.ok(inputBytes > 1.8 * limit, `inputs ${inputBytes} bytes`);
    const expected = path.join(tmp.dir, 'big-expected');
    await mergeModelStock({ base: big.base, models: [...big.models], out: expected, fsync: false });
    const want = shards(expected);
    fs.rmSync(expected, { recursive: true });
    for (const io of ['direct', 'mmap'] as const) {
      const cg = createMemoryCgroup(`model-stock-test-${process.pid}-${io}`, limit);
      if (typeof cg === 'string') {
        console.warn(`    (memory cgroup case skipped: ${cg})`);
        this.skip();
      }
      const out = path.join(tmp.dir, `big-${io}`);
      try {
        for (const f of inputs.flatMap(weightFiles)) dropFromPageCache(f);
        const [cmd, args] = cg.wrap(process.execPath, [
          CLI,
          ...mergeArgs(big.base, [...big.models], out),
          '--io',
          io,
          '--memory',
          '32MiB',
          '--no-fsync',
          '-q',
        ]);
        const r = await new Promise<{ code: number | null; signal: string | null; stderr: string }>(
          (resolve) => {
            const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
            let stderr = '';
            child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
            child.on('close', (code, signal) => resolve({ code, signal, stderr }));
          },
        );
        assert.equal(r.signal, null, `${io}: killed (${r.signal}); OOM kills: ${cg.oomKills()}`);
        assert.equal(r.code, 0, `${io}: ${r.stderr}`);
        assert.equal(cg.oomKills() ?? 0, 0, `${io}: OOM kills`);
        assert.ok((cg.peak() ?? 0) <= limit, `${io}: peak ${cg.peak()}`);
        assert.deepEqual(shards(out), want, `${io}: the same bytes`);
      } finally {
        const why = cg.remove();
        fs.rmSync(out, { recursive: true, force: true });
        assert.equal(why, undefined);
      }
    }
  });
});
