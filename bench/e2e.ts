/**
 * `npm run bench`: end-to-end merge of a TinyLlama-shaped checkpoint (base + 2 fine-tunes, bf16,
 * sharded; generated once into .cache/) against the machine's floor — reading every input from warm
 * page cache plus writing the output's bytes — for each backend, with and without fsync.
 *
 * Every merge runs in a fresh child process (this script with --child), so that its peak RSS is its
 * own and no JIT or allocator state carries over between trials. Before each timed trial dirty pages
 * are flushed (`sync`), so a trial is not throttled by the previous one's writeback.
 *
 *   node dist/bench/e2e.js [--runs N] [--backends native,js,cuda] [--skip-js] [--preset tinyllama|medium]
 *                          [--io mmap,pread,fs] [--page-cache as-is|fresh|from-disk] [--double | --no-double]
 *
 * The native backend runs once per --io mode without fsync, and with the first mode with fsync; js runs
 * with the default (auto) input mode, cuda with the first mode, with and without fsync. CPU s is the
 * merge process's user + system time.
 */
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { ensureFixture, generateFixture, PRESETS, type FixtureInfo } from '../lib/fixtures/generate';
import { createBackend, mergeModelStock } from '../lib/index';
import { readFiles, writeBytes } from './floor';
import { IO_MODES, type IoMode } from '../lib/engine/io';
import { fixed, formatTable, median, safetensorsFiles, syncDisks, totalSize } from './util';

const ROOT = path.resolve(__dirname, '..', '..');
const CHILD_FLAG = '--child';
const RESULT_TAG = 'BENCH_RESULT ';

interface ChildJob {
  readonly base: string;
  readonly models: readonly string[];
  readonly out: string;
  readonly backend: Bench;
  readonly io: IoMode;
  readonly fsync: boolean;
}

type Bench = 'native' | 'js' | 'cuda';

interface ChildResult {
  readonly seconds: number;
  /** User + system CPU time of the merge's process. */
  readonly cpuSeconds: number;
  /** KiB, from process.resourceUsage(). */
  readonly maxRSS: number;
  readonly backend: string;
  readonly isa: string;
  readonly threads: number;
}

interface Row {
  readonly label: string;
  readonly seconds: number;
  readonly inputBytes: number;
  readonly floor: number;
  readonly js: number | undefined;
  readonly rssMiB: number | undefined;
  readonly cpuSeconds: number | undefined;
}

async function child(job: ChildJob): Promise<void> {
  const start = process.hrtime.bigint();
  const report = await mergeModelStock({
    base: job.base,
    models: job.models,
    out: job.out,
    overwrite: true,
    backend: job.backend,
    io: job.io,
    fsync: job.fsync,
  });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const usage = process.resourceUsage();
  const result: ChildResult = {
    seconds,
    cpuSeconds: (usage.userCPUTime + usage.systemCPUTime) / 1e6,
    maxRSS: process.resourceUsage().maxRSS,
    backend: report.backend.name,
    isa: report.backend.isa,
    threads: report.backend.threads,
  };
  process.stdout.write(`${RESULT_TAG}${JSON.stringify(result)}\n`);
}

function runChild(job: ChildJob): ChildResult {
  rmSync(job.out, { recursive: true, force: true });
  syncDisks();
  const proc = spawnSync(process.execPath, [__filename, CHILD_FLAG, JSON.stringify(job)], {
    encoding: 'utf8',
    maxBuffer: 16 << 20,
  });
  const line = proc.stdout.split('\n').find((l) => l.startsWith(RESULT_TAG));
  if (proc.status !== 0 || line === undefined) {
    const why = (proc.stderr || proc.stdout || String(proc.error ?? ''))
      .trim()
      .split('\n')
      .slice(0, 5)
      .join('\n');
    throw new Error(`${job.backend} merge (fsync ${job.fsync}) failed with status ${proc.status}:\n${why}`);
  }
  return JSON.parse(line.slice(RESULT_TAG.length)) as ChildResult;
}

function inputFiles(f: FixtureInfo): string[] {
  return [f.base, ...f.models].flatMap(safetensorsFiles);
}

interface Floor {
  /** Median of read + write per trial. */
  readonly seconds: number;
  readonly read: number;
  readonly write: number;
}

/** Median of `runs` floors: read every input + write as many bytes as the output (base-sized). */
function measureFloor(f: FixtureInfo, runs: number): Floor {
  const files = inputFiles(f);
  const buffer = new Uint8Array(8 << 20);
  // Untimed: the first large write after a sync was measured 10× slower than the next ones here.
  writeBytes(f.dir, f.fileBytesPerModel, buffer);
  const reads: number[] = [];
  const writes: number[] = [];
  const totals: number[] = [];
  for (let r = 0; r < runs; r++) {
    syncDisks();
    const read = readFiles(files, buffer);
    const write = writeBytes(f.dir, f.fileBytesPerModel, buffer);
    reads.push(read);
    writes.push(write);
    totals.push(read + write);
  }
  return { seconds: median(totals), read: median(reads), write: median(writes) };
}

function describeFloor(label: string, floor: Floor, inputBytes: number, outputBytes: number): string {
  const rate = (bytes: number, s: number): string => `${(bytes / 1e9 / s).toFixed(2)} GB/s`;
  return (
    `${label}: read ${floor.read.toFixed(2)} s (${rate(inputBytes, floor.read)}) + ` +
    `write ${floor.write.toFixed(2)} s (${rate(outputBytes, floor.write)})`
  );
}

function backendAvailable(backend: 'native' | 'cuda'): string | undefined {
  try {
    void createBackend(backend).dispose();
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

async function ensureWithNote(
  opts: Parameters<typeof ensureFixture>[0],
  label: string,
): Promise<FixtureInfo> {
  const started = process.hrtime.bigint();
  const info = await ensureFixture(opts, {
    onProgress: (done, total) => {
      if (done === total || !process.stderr.isTTY) return;
      process.stderr.write(`\rgenerating ${label}: ${((100 * done) / total).toFixed(0)}%`);
    },
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  if (seconds > 1) console.log(`generated ${label} in ${seconds.toFixed(1)} s`);
  return info;
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: 'string', default: '3' },
      backends: { type: 'string', default: 'native,js' },
      'skip-js': { type: 'boolean', default: false },
      io: { type: 'string', default: 'mmap,pread,fs' },
      'page-cache': { type: 'string', default: 'as-is' },
      preset: { type: 'string', default: 'tinyllama' },
      double: { type: 'boolean' },
      'no-double': { type: 'boolean' },
    },
  });
  const runs = Number(values.runs);
  if (!Number.isSafeInteger(runs) || runs < 1)
    throw new Error(`--runs expects a positive integer, got ${values.runs}`);
  const preset = values.preset;
  if (preset !== 'tinyllama' && preset !== 'medium') throw new Error(`--preset must be tinyllama or medium`);
  let backends: Bench[] = [];
  for (const b of values.backends.split(',').map((s) => s.trim())) {
    if (b !== 'native' && b !== 'js' && b !== 'cuda')
      throw new Error(`unknown backend "${b}" (native, js, cuda)`);
    backends.push(b);
  }
  if (values['skip-js']) backends = backends.filter((b) => b !== 'js');
  // The 2× row is what shows peak RSS does not grow with the model: on by default for the real bench.
  const double = values['no-double'] ? false : (values.double ?? preset === 'tinyllama');

  const notes: string[] = [];
  for (const b of ['native', 'cuda'] as const) {
    if (!backends.includes(b)) continue;
    const why = backendAvailable(b);
    if (why !== undefined) {
      notes.push(`${b} skipped: ${why}`);
      backends = backends.filter((x) => x !== b);
    }
  }
  const usable = backends;

  const cacheDir = path.join(ROOT, '.cache', `bench-${preset}`);
  const fixture = await ensureWithNote({ ...PRESETS[preset], dir: cacheDir }, `${preset} fixture`);
  const fixture2x = double
    ? await ensureWithNote(
        { ...PRESETS[preset], layers: PRESETS[preset].layers * 2, dir: `${cacheDir}-2x` },
        `${preset} 2× fixture`,
      )
    : undefined;

  const inputBytes = totalSize(inputFiles(fixture));
  const files = inputFiles(fixture);
  // How the inputs' pages entered the page cache changes how fast they map (measured here: pages just
  // written by write() map several times slower than pages read from disk), so both are benchmarked.
  const pageCache = values['page-cache'];
  if (pageCache === 'from-disk') {
    syncDisks();
    writeFileSync('/proc/sys/vm/drop_caches', '3'); // needs root; throws otherwise
  } else if (pageCache === 'fresh') {
    await generateFixture({ ...PRESETS[preset], dir: cacheDir });
  } else if (pageCache !== 'as-is') {
    throw new Error(
      '--page-cache must be as-is, fresh (regenerate the fixture) or from-disk (drop caches, re-read)',
    );
  }
  notes.push(`inputs' page cache: ${pageCache}`);
  readFiles(files); // warm the page cache, untimed
  const floorParts = measureFloor(fixture, runs);
  const floor = floorParts.seconds;
  notes.push(describeFloor('floor', floorParts, inputBytes, fixture.fileBytesPerModel));

  const ioModes = values.io.split(',').map((s) => s.trim()) as IoMode[];
  for (const m of ioModes) if (!IO_MODES.includes(m)) throw new Error(`--io: unknown mode "${m}"`);
  type Config = { backend: Bench; io: IoMode; fsync: boolean };
  const configs: Config[] = usable.flatMap((backend): Config[] =>
    backend === 'cuda'
      ? [false, true].map((fsync) => ({ backend, io: ioModes[0] as IoMode, fsync }))
      : backend === 'native'
        ? [
            ...ioModes.map((io) => ({ backend, io, fsync: false })),
            { backend, io: ioModes[0] as IoMode, fsync: true },
          ]
        : [false, true].map((fsync) => ({ backend, io: 'auto' as IoMode, fsync })),
  );
  const keyOf = (c: { backend: string; io: IoMode; fsync: boolean }): string =>
    `${c.backend}/${c.io}/${c.fsync}`;
  const jsKey = (fsync: boolean): string => `js/auto/${fsync}`;
  const jobs = configs.map((c) => ({
    ...c,
    job: { base: fixture.base, models: fixture.models, out: path.join(cacheDir, 'merged'), ...c },
  }));
  const results = new Map<string, ChildResult[]>();
  // Trials interleaved across configurations, so drift (thermal, background writeback) spreads evenly.
  for (let r = 0; r < runs; r++) {
    for (const { job, ...c } of jobs) {
      const key = keyOf(c);
      const res = runChild(job);
      results.set(key, [...(results.get(key) ?? []), res]);
      process.stderr.write(`  run ${r + 1}/${runs} ${key}: ${res.seconds.toFixed(2)} s\n`);
    }
  }
  rmSync(path.join(cacheDir, 'merged'), { recursive: true, force: true });

  const wall = (key: string): number | undefined => {
    const rs = results.get(key);
    return rs === undefined ? undefined : median(rs.map((x) => x.seconds));
  };
  const rss = (key: string): number | undefined => {
    const rs = results.get(key);
    return rs === undefined ? undefined : Math.max(...rs.map((x) => x.maxRSS)) / 1024;
  };
  const cpu = (key: string): number | undefined => {
    const rs = results.get(key);
    return rs === undefined ? undefined : median(rs.map((x) => x.cpuSeconds));
  };
  const rows: Row[] = [
    {
      label: 'floor (read inputs + write output)',
      seconds: floor,
      inputBytes,
      floor,
      js: undefined,
      rssMiB: undefined,
      cpuSeconds: undefined,
    },
  ];
  const describe = new Map<string, string>();
  for (const c of configs) {
    const key = keyOf(c);
    const first = results.get(key)?.[0];
    if (first !== undefined)
      describe.set(c.backend, `${first.isa}, ${first.threads} thread${first.threads === 1 ? '' : 's'}`);
    rows.push({
      label: `${c.backend} (io ${c.io}), ${c.fsync ? 'fsync' : 'no fsync'}`,
      seconds: wall(key) ?? NaN,
      inputBytes,
      floor,
      js: wall(jsKey(c.fsync)),
      rssMiB: rss(key),
      cpuSeconds: cpu(key),
    });
  }

  const backends2x = usable.filter((b) => b !== 'js');
  if (fixture2x !== undefined && backends2x.length > 0) {
    const files2x = inputFiles(fixture2x);
    const input2x = totalSize(files2x);
    // Evict nothing we need later: the 1× runs are done. Warm the 2× inputs, untimed.
    readFiles(files2x);
    const floor2xParts = measureFloor(fixture2x, runs);
    const floor2x = floor2xParts.seconds;
    notes.push(describeFloor('floor, 2× model', floor2xParts, input2x, fixture2x.fileBytesPerModel));
    const out = path.join(`${cacheDir}-2x`, 'merged');
    const layers = fixture2x.options.layers;
    rows.push({
      label: `floor, 2× model (${layers} layers)`,
      seconds: floor2x,
      inputBytes: input2x,
      floor: floor2x,
      js: undefined,
      rssMiB: undefined,
      cpuSeconds: undefined,
    });
    for (const backend of backends2x) {
      const res: ChildResult[] = [];
      for (let r = 0; r < runs; r++) {
        res.push(
          runChild({
            base: fixture2x.base,
            models: fixture2x.models,
            out,
            backend,
            io: 'auto',
            fsync: false,
          }),
        );
        process.stderr.write(
          `  run ${r + 1}/${runs} 2× ${backend} fsync=false: ${res[r]!.seconds.toFixed(2)} s\n`,
        );
      }
      rows.push({
        label: `${backend} (io auto), no fsync, 2× model`,
        seconds: median(res.map((x) => x.seconds)),
        inputBytes: input2x,
        floor: floor2x,
        js: undefined,
        rssMiB: Math.max(...res.map((x) => x.maxRSS)) / 1024,
        cpuSeconds: median(res.map((x) => x.cpuSeconds)),
      });
    }
    rmSync(out, { recursive: true, force: true });
    if (input2x + fixture2x.fileBytesPerModel > 0.8 * totalmem()) {
      notes.push('2× model: inputs + output exceed 80% of RAM, so its page cache is only partly warm');
    }
  }

  const o = fixture.options;
  console.log(
    `\nmodel-stock end-to-end bench: ${preset} fixture (hidden ${o.hidden}, intermediate ${o.intermediate}, ` +
      `${o.layers} layers, vocab ${o.vocab}), base + ${o.models} fine-tunes, ${o.dtype}, ` +
      `${fixture.shards} shards each, ${(inputBytes / 1e9).toFixed(2)} GB of input`,
  );
  console.log(
    `warm page cache (inputs read once untimed; dirty pages flushed before each trial); medians of ${runs} ` +
      `run(s); each merge in a fresh process; peak RSS = max over runs`,
  );
  for (const [b, d] of describe) console.log(`${b}: ${d}`);
  console.log('');
  console.log(
    formatTable(
      ['', 'wall s', 'GB/s in', '× floor', 'js ÷ this', 'CPU s', 'peak RSS MiB'],
      rows.map((r) => [
        r.label,
        fixed(r.seconds),
        fixed(r.inputBytes / 1e9 / r.seconds),
        fixed(r.seconds / r.floor),
        r.js === undefined ? '-' : fixed(r.js / r.seconds, 1),
        fixed(r.cpuSeconds),
        r.rssMiB === undefined ? '-' : fixed(r.rssMiB, 0),
      ]),
    ),
  );
  for (const n of notes) console.log(`  ${n}`);
}

if (process.argv[2] === CHILD_FLAG) {
  child(JSON.parse(process.argv[3] ?? '{}') as ChildJob).catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : String(e));
    process.exitCode = 1;
  });
} else {
  main(process.argv.slice(2)).catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : String(e));
    process.exitCode = 1;
  });
}
