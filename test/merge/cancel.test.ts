import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { IoMode } from '../../lib/engine/io';
import { isModelStockError } from '../../lib/errors';
import { generateFixture, PRESETS } from '../../lib/fixtures/generate';
import { inspectModelStock } from '../../lib/inspect';
import { mergeModelStock } from '../../lib/merge';
import type { MergeOptions, MergeProgress } from '../../lib/types';
import { backendsUnderTest } from '../helpers/backends';
import { CLI, mergeArgs } from '../helpers/cli';
import { useTmpDir } from '../helpers/tmp';

/**
 * Cancellation: an AbortSignal stops a merge at any point; afterwards nothing of it remains — no
 * staging folder, no OUT, no open descriptor or mapping of an input — and the next merge succeeds.
 */

/** Files of `dirs` this process still has open (/proc/self/fd) or mapped (/proc/self/maps). */
function heldInputs(dirs: readonly string[]): string[] {
  const inside = (p: string) => dirs.some((d) => p.startsWith(d + path.sep));
  const held: string[] = [];
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      const target = fs.readlinkSync(`/proc/self/fd/${fd}`);
      if (inside(target)) held.push(`fd ${fd} → ${target}`);
    } catch {
      // closed while listing
    }
  }
  for (const line of fs.readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const file = line.split(/\s+/).slice(5).join(' ');
    if (file !== '' && inside(file)) held.push(`mapped: ${line}`);
  }
  return held;
}

const cancelled = (reason: unknown) => (e: unknown) =>
  isModelStockError(e) && e.code === 'CANCELLED' && e.cause === reason;

describe('cancelling a merge', function () {
  this.timeout(300_000);
  const tmp = useTmpDir();
  let fixture: { base: string; models: string[] };
  /** Larger, for the CLI: still running when the signal comes. */
  let example: { base: string; models: string[] };
  let inputDirs: string[];

  before(async () => {
    const info = await generateFixture({
      ...PRESETS.tiny,
      extraTensors: true,
      dir: path.join(tmp.dir, 'fx'),
    });
    fixture = { base: info.base, models: [...info.models] };
    inputDirs = [info.base, ...info.models].map((d) => fs.realpathSync(d));
    const big = await generateFixture({ ...PRESETS.example, dir: path.join(tmp.dir, 'example') });
    example = { base: big.base, models: [...big.models] };
  });

  /** Runs a merge that aborts when `when(progress)` first holds; checks everything a cancel promises. */
  async function cancelAt(
    label: string,
    opts: Partial<MergeOptions>,
    when: (p: MergeProgress) => boolean,
  ): Promise<void> {
    const parent = path.join(tmp.dir, label.replace(/\W+/g, '-'));
    fs.mkdirSync(parent);
    const out = path.join(parent, 'out');
    const controller = new AbortController();
    const reason = new Error(`stop: ${label}`);
    await assert.rejects(
      mergeModelStock({
        ...fixture,
        out,
        fsync: false,
        ...opts,
        signal: controller.signal,
        onProgress: (p) => {
          if (!controller.signal.aborted && when(p)) controller.abort(reason);
        },
      }),
      cancelled(reason),
      label,
    );
    assert.ok(controller.signal.aborted, `${label}: the abort point was reached`);
    assert.deepEqual(fs.readdirSync(parent), [], `${label}: no OUT, no staging folder`);
    assert.deepEqual(heldInputs(inputDirs), [], `${label}: inputs released`);
    await mergeModelStock({ ...fixture, out, fsync: false, ...opts });
    assert.ok(fs.existsSync(path.join(out, 'model_stock_report.json')), `${label}: the next merge succeeds`);
    assert.deepEqual(heldInputs(inputDirs), [], `${label}: a merge that succeeds releases its inputs too`);
  }

  it('an already-aborted signal rejects before any work: nothing is created', async () => {
    const parent = path.join(tmp.dir, 'pre');
    fs.mkdirSync(parent);
    const reason = new Error('never mind');
    const signal = AbortSignal.abort(reason);
    await assert.rejects(
      mergeModelStock({ ...fixture, out: path.join(parent, 'out'), signal }),
      cancelled(reason),
    );
    await assert.rejects(inspectModelStock({ ...fixture, signal }), cancelled(reason));
    assert.deepEqual(fs.readdirSync(parent), []);
  });

  for (const backend of backendsUnderTest()) {
    const ioModes: IoMode[] = backendsUnderTest().includes('native')
      ? ['mmap', 'direct', 'pread', 'fs']
      : ['fs'];
    for (const io of ioModes) {
      const opts = { backend, io };
      it(`${backend}, io ${io}: during a whole tensor, a windowed tensor, a copy, and before commit`, async () => {
        await cancelAt(`${backend}-${io}-whole`, opts, (p) => p.tensorsDone >= 3);
        // 64 KiB of buffers: the 32 KiB embedding runs in windows; abort inside its Gram pass.
        let windows = 0;
        await cancelAt(
          `${backend}-${io}-windowed`,
          { ...opts, memory: 64 * 1024 },
          (p) => p.tensor === 'model.embed_tokens.weight' && ++windows === 3,
        );
        await cancelAt(`${backend}-${io}-copy`, opts, (p) => p.tensor === 'model.position_ids');
        await cancelAt(`${backend}-${io}-end`, opts, (p) => p.tensorsDone === p.tensorsTotal);
      });
    }
  }

  it('a signal belongs to one merge: cancelling one leaves a concurrent one to finish', async () => {
    const parent = path.join(tmp.dir, 'concurrent');
    fs.mkdirSync(parent);
    const controller = new AbortController();
    const reason = new Error('only this one');
    const [stopped, finished] = await Promise.allSettled([
      mergeModelStock({
        ...fixture,
        out: path.join(parent, 'a'),
        fsync: false,
        signal: controller.signal,
        onProgress: (p) => {
          if (p.tensorsDone === 4) controller.abort(reason);
        },
      }),
      mergeModelStock({ ...fixture, out: path.join(parent, 'b'), fsync: false }),
    ]);
    assert.ok(stopped.status === 'rejected' && cancelled(reason)(stopped.reason));
    assert.equal(finished.status, 'fulfilled');
    assert.deepEqual(fs.readdirSync(parent), ['b']);
  });

  it('inspect is cancelled the same way', async () => {
    const controller = new AbortController();
    const reason = new Error('enough');
    await assert.rejects(
      inspectModelStock({
        ...fixture,
        signal: controller.signal,
        onProgress: (p) => {
          if (p.tensorsDone === 5) controller.abort(reason);
        },
      }),
      cancelled(reason),
    );
    assert.deepEqual(heldInputs(inputDirs), []);
  });

  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    it(`the CLI on ${signal}: exits ${code}, says so, leaves nothing behind`, async () => {
      const parent = path.join(tmp.dir, `cli-${signal}`);
      fs.mkdirSync(parent);
      // A tiny memory budget keeps the merge running long enough to be interrupted mid-way.
      const child = spawn(
        process.execPath,
        [
          CLI,
          ...mergeArgs(example.base, example.models, path.join(parent, 'out')),
          '--memory',
          '64KiB',
          '--backend',
          'js',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      // Wait until the merge has started writing (its staging folder exists), then interrupt it.
      const started = Date.now();
      while (!fs.readdirSync(parent).some((f) => f.startsWith('.out.partial-'))) {
        assert.ok(Date.now() - started < 60_000, `no staging folder appeared: ${stderr}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      child.kill(signal);
      const exit = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
      assert.equal(exit, code, stderr);
      assert.match(stderr, new RegExp(`cancelled \\(${signal}\\)`));
      assert.deepEqual(fs.readdirSync(parent), [], 'no OUT and no staging folder');
    });
  }
});
