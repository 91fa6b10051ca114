import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { IoMode } from '../../lib/engine/io';
import { loadNativeAddon } from '../../lib/engine/native/loader';
import { isModelStockError } from '../../lib/errors';
import { mergeModelStock } from '../../lib/merge';
import type { WriteMode } from '../../lib/safetensors/shardFile';
import type { MergeOptions, MergeProgress } from '../../lib/types';
import { backendsUnderTest } from '../helpers/backends';
import { mergeArgs, runCli } from '../helpers/cli';
import { hashTree, writeModel } from '../helpers/models';
import { correlatedModels, mulberry32, randomTensor } from '../helpers/random';
import { useTmpDir } from '../helpers/tmp';
import { withRefused, withSmallWriterSizes, writeModesUnderTest } from '../helpers/writer';

/**
 * Durable output (issue 9): every writer mode, backend and input mode writes the same bytes; refused
 * calls fall back and say so; a write that fails mid-shard leaves nothing behind and names the file.
 */

/** Base + 2 fine-tunes; a 3-byte BOOL first puts every later tensor at an odd offset in every file. */
async function makeModels(root: string, scale = 1): Promise<{ base: string; models: string[] }> {
  const rng = mulberry32(29);
  const shapes: [string, 'BF16' | 'F16' | 'F32', number[]][] = [
    ['emb', 'BF16', [301, 17 * scale]],
    ['w', 'F16', [127, 33]],
    ['norm', 'F32', [7]],
    ['big', 'F32', [63, 129 * scale]],
  ];
  const tensors = shapes.map(([name, dtype, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return { name, dtype, shape, values: correlatedModels(randomTensor(n, rng), 3, 0.4, rng) };
  });
  const dirs: string[] = [];
  for (let m = 0; m < 3; m++) {
    dirs.push(
      await writeModel(
        path.join(root, m === 0 ? 'base' : `ft${m}`),
        [
          { name: 'flag', dtype: 'BOOL', shape: [3], values: new Uint8Array([1, 0, 1]) },
          ...tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, values: t.values[m]! })),
        ],
        { files: { 'config.json': '{}' } },
      ),
    );
  }
  return { base: dirs[0]!, models: dirs.slice(1) };
}

function shardsOf(out: string): Map<string, Buffer> {
  return new Map(
    fs
      .readdirSync(out)
      .filter((f) => f.endsWith('.safetensors') || f.endsWith('.index.json'))
      .sort()
      .map((f) => [f, fs.readFileSync(path.join(out, f))]),
  );
}

/** Nothing but the input folders is left beside OUT, and the inputs are unchanged. */
function assertNothingLeft(
  root: string,
  out: string,
  before: Record<string, string>[],
  inputs: string[],
): void {
  assert.equal(fs.existsSync(out), false, 'OUT not created');
  assert.deepEqual(
    fs.readdirSync(path.dirname(out)).filter((f) => f.includes('.partial-')),
    [],
    'no staging folder left',
  );
  assert.deepEqual(inputs.map(hashTree), before, 'inputs untouched');
  void root;
}

describe('durable output: every writer mode and input mode writes the same bytes, on every backend', function () {
  this.timeout(300_000);
  const tmp = useTmpDir('model-stock-durable-');
  const ioModes: IoMode[] = backendsUnderTest().includes('native')
    ? ['fs', 'pread', 'direct', 'mmap']
    : ['fs'];

  for (const [label, extra] of [
    ['whole tensors', {}],
    ['windows, two passes', { memory: 3000, window: 512 }],
  ] as const) {
    it(`${label}: shards of odd sizes, tensors at odd offsets, blocks and flushes crossed`, async () => {
      const root = path.join(tmp.dir, label.replace(/\W+/g, '-'));
      const { base, models } = await makeModels(root);
      // Per backend: js and native may round an element differently (within the accuracy contract).
      const reference = new Map<string, Map<string, Buffer>>();
      let k = 0;
      await withSmallWriterSizes(async () => {
        for (const writeMode of writeModesUnderTest()) {
          for (const backend of backendsUnderTest()) {
            for (const io of ioModes) {
              const out = path.join(root, `out-${k++}`);
              const report = await mergeModelStock({
                base,
                models,
                out,
                backend,
                io,
                writeMode,
                shardSize: 9001,
                fsync: k % 2 === 0,
                ...extra,
              });
              const where = `${writeMode}, ${backend}, ${io}`;
              assert.deepEqual(
                { mode: report.write.mode, requested: report.write.requested },
                { mode: writeMode, requested: writeMode },
                where,
              );
              assert.ok(report.write.fsyncSeconds >= 0);
              const shards = shardsOf(out);
              assert.ok(shards.size >= 4, `${where}: ${shards.size} files`);
              for (const [f, bytes] of shards) {
                if (f.endsWith('.safetensors')) assert.notEqual(bytes.byteLength % 4096, 0, `${f}: size`);
              }
              if (!reference.has(backend)) reference.set(backend, shards);
              assert.deepEqual(shards, reference.get(backend), where);
              fs.rmSync(out, { recursive: true });
            }
          }
        }
      });
    });
  }

  it('a refused call (injected) falls back, the report says which mode ran and why, the bytes are the same', async function () {
    if (!writeModesUnderTest().includes('direct')) this.skip(); // the refusals are the native writer's
    const root = path.join(tmp.dir, 'refused');
    const { base, models } = await makeModels(root);
    const run = (name: string, writeMode: WriteMode) =>
      mergeModelStock({ base, models, out: path.join(root, name), writeMode, shardSize: 9001 });
    await withSmallWriterSizes(async () => {
      await run('ref', 'node');
      const report = await withRefused('direct,syncFileRange', () => run('auto', 'auto'));
      assert.equal(report.write.requested, 'auto');
      assert.equal(report.write.mode, 'plain');
      assert.match(report.write.fallback ?? '', /O_DIRECT refused \(Invalid argument\)/);
      const saved = JSON.parse(fs.readFileSync(path.join(root, 'auto', 'model_stock_report.json'), 'utf8'));
      assert.deepEqual(saved.write.mode, 'plain');
      assert.deepEqual(shardsOf(path.join(root, 'auto')), shardsOf(path.join(root, 'ref')));
    });
  });
});

describe('durable output: --write-mode', function () {
  this.timeout(120_000);
  const tmp = useTmpDir('model-stock-durable-cli-');

  it('the CLI takes --write-mode, names the mode in its summary and the report; a bad mode is usage', async () => {
    const { base, models } = await makeModels(tmp.dir);
    for (const mode of writeModesUnderTest()) {
      const out = path.join(tmp.dir, `out-${mode}`);
      const r = runCli([...mergeArgs(base, models, out), '--write-mode', mode, '--no-fsync']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`, ${mode} writes\\)`), r.stdout);
      const report = JSON.parse(fs.readFileSync(path.join(out, 'model_stock_report.json'), 'utf8'));
      assert.deepEqual(report.write, { mode, requested: mode, fsyncSeconds: 0 });
    }
    const bad = runCli([...mergeArgs(base, models, path.join(tmp.dir, 'bad')), '--write-mode', 'fast']);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /--write-mode/);
  });
});

/** Files under `dir` this process still has open (/proc/self/fd), deleted ones included. */
function openUnder(dir: string): string[] {
  const held: string[] = [];
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      const target = fs.readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(dir + path.sep)) held.push(`fd ${fd} → ${target}`);
    } catch {
      // closed while listing
    }
  }
  return held;
}

describe('durable output: a cancelled or failed merge closes its shard files and frees its staging blocks', function () {
  this.timeout(300_000);
  const tmp = useTmpDir('model-stock-durable-cancel-');
  const stats = () => loadNativeAddon().addon?.shardWriterStats();

  for (const writeMode of writeModesUnderTest()) {
    it(`${writeMode}: cancelled mid-merge or before commit, or failed on a read: no fd, block or file left`, async () => {
      const root = path.join(tmp.dir, writeMode);
      const { base, models } = await makeModels(root, 8);
      const before = [base, ...models].map(hashTree);
      const idle = stats();
      const cases: [string, (p: MergeProgress) => boolean, 'cancel' | 'fail'][] = [
        ['mid-merge', (p) => p.tensorsDone >= 2, 'cancel'],
        ['before commit', (p) => p.tensorsDone === p.tensorsTotal, 'cancel'],
        ['a fine-tune truncated', (p) => p.tensor === 'big', 'fail'],
      ];
      await withSmallWriterSizes(async () => {
        for (const [label, when, how] of cases) {
          const parent = path.join(root, label.replace(/\W+/g, '-'));
          fs.mkdirSync(parent);
          const out = path.join(parent, 'out');
          // The truncated input is a private copy: the others stay intact for the next case.
          const victim = path.join(parent, 'ft1');
          fs.cpSync(models[0]!, victim, { recursive: true });
          const controller = new AbortController();
          let fired = false;
          const error = await mergeModelStock({
            base,
            models: [victim, models[1]!],
            out,
            writeMode,
            io: how === 'fail' ? (backendsUnderTest().includes('native') ? 'pread' : 'fs') : 'auto',
            shardSize: 9001,
            memory: 3000,
            window: 512,
            signal: controller.signal,
            onProgress: (p) => {
              if (fired || !when(p)) return;
              fired = true;
              if (how === 'cancel') controller.abort(new Error('stop'));
              else fs.truncateSync(path.join(victim, 'model.safetensors'), 64);
            },
          }).then(
            () => undefined,
            (e: unknown) => e,
          );
          const where = `${writeMode}, ${label}`;
          assert.ok(fired, `${where}: the point was reached`);
          assert.ok(isModelStockError(error), `${where}: ${String(error)}`);
          assert.equal(error.code, how === 'cancel' ? 'CANCELLED' : 'IO_ERROR', `${where}: ${error.message}`);
          assert.deepEqual(openUnder(parent), [], `${where}: no descriptor of a shard or the staging folder`);
          assert.deepEqual(stats(), idle, `${where}: every shard writer closed, every staging block freed`);
          assert.deepEqual(fs.readdirSync(parent), ['ft1'], `${where}: no OUT, no staging folder`);
        }
      });
      assert.deepEqual([base, ...models].map(hashTree), before, 'inputs untouched');
    });
  }
});

describe('durable output: a write that fails mid-shard leaves nothing behind and names the file', function () {
  this.timeout(300_000);
  const tmp = useTmpDir('model-stock-durable-fail-');
  const lib = path.resolve(__dirname, '..', '..', 'lib', 'merge.js');
  // Prints the error's code, message and file; exit status 3 when the merge failed.
  const script =
    `require(${JSON.stringify(lib)}).mergeModelStock(JSON.parse(process.argv[1])).then(` +
    `() => console.log('merged'), (e) => { console.log(JSON.stringify({ code: e.code, message: e.message, ` +
    `file: e.file })); process.exitCode = 3; });`;

  it('RLIMIT_FSIZE (ulimit -f in a child process): IO_ERROR naming the shard, in every writer mode', async function () {
    const root = path.join(tmp.dir, 'fsize');
    // ~340 KB of output in one shard; the limit lets the header and a few tensors through.
    const { base, models } = await makeModels(root, 4);
    const inputs = [base, ...models];
    const before = inputs.map(hashTree);
    for (const writeMode of writeModesUnderTest()) {
      const out = path.join(root, `out-${writeMode}`);
      const opts: MergeOptions = { base, models, out, writeMode };
      const child = spawnSync(
        'bash',
        ['-c', 'ulimit -f 128 && exec "$0" -e "$1" "$2"', process.execPath, script, JSON.stringify(opts)],
        { encoding: 'utf8' },
      );
      assert.equal(child.status, 3, `${writeMode}: ${child.stdout} ${child.stderr}`);
      const e = JSON.parse(child.stdout.trim().split('\n').pop()!) as {
        code: string;
        message: string;
        file: string;
      };
      assert.equal(e.code, 'IO_ERROR', e.message);
      assert.match(e.message, /file too large/i, writeMode);
      assert.match(e.file, /model\.safetensors$/, writeMode);
      assert.ok(e.message.startsWith(e.file), `${writeMode}: the message names the file: ${e.message}`);
      assertNothingLeft(root, out, before, inputs);
    }
  });

  it('ENOSPC (a small tmpfs, as root): IO_ERROR naming the shard, nothing left on the file system', async function () {
    const mnt = path.join(tmp.dir, 'tmpfs');
    fs.mkdirSync(mnt);
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=128k', 'tmpfs', mnt], {
      encoding: 'utf8',
    });
    if (mounted.status !== 0) {
      // Needs root (CAP_SYS_ADMIN); the RLIMIT_FSIZE case above covers the same paths without it.
      console.warn(`    (ENOSPC case skipped: cannot mount a tmpfs here: ${mounted.stderr.trim()})`);
      this.skip();
    }
    try {
      const { base, models } = await makeModels(path.join(tmp.dir, 'inputs'), 4);
      const inputs = [base, ...models];
      const before = inputs.map(hashTree);
      for (const writeMode of writeModesUnderTest()) {
        const out = path.join(mnt, `out-${writeMode}`);
        await assert.rejects(mergeModelStock({ base, models, out, writeMode }), (e: unknown) => {
          const err = e as { code?: string; message: string; file?: string };
          assert.equal(err.code, 'IO_ERROR', err.message);
          assert.match(err.message, /no space left on device/i, writeMode);
          assert.match(err.file ?? '', /model\.safetensors$/, writeMode);
          return true;
        });
        assertNothingLeft(mnt, out, before, inputs);
        assert.deepEqual(fs.readdirSync(mnt), [], `${writeMode}: the tmpfs is empty again`);
      }
    } finally {
      spawnSync('umount', [mnt]);
    }
  });
});
