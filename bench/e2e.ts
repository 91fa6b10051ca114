/**
 * `npm run bench`: what users get end to end. A TinyLlama-shaped checkpoint (base + 2 fine-tunes, bf16,
 * sharded; generated once into .cache/) merged with the defaults — output fsynced — and with
 * --no-fsync, warm and cold, against the machine's own floors measured in the same run:
 *
 *   durable floor  `cat` every input (warm page cache) + write the output's bytes durably, the fastest
 *                  way this machine allows (bench/floor.ts)
 *   cold floor     page cache dropped, one `cat` per model at once (the merge reads its N+1 models at
 *                  once) + the durable write
 *   limited floor  inside a memory cgroup of 1/K of the inputs (bench/limited.ts), page cache dropped:
 *                  the faster of parallel cats and parallel `dd iflag=direct` + the durable write
 *
 * Each row: median wall time of --runs trials (default 5) and their spread (max/min), input GB/s, the
 * ratio to its floor, peak RSS (max over trials), peak `Dirty:` of /proc/meminfo sampled every 20 ms
 * during the merge (system-wide: other processes' dirty pages count too), the final fsync's seconds and
 * the write mode the report names; CPU s is the merge process's user + system time; `× max(r,w)` compares a
 * warm merge with the larger of its floor's read and write alone (what a perfect overlap would reach);
 * read / compute / write s and the waits are the report's profile (medians). Every merge runs in a fresh child process, so its RSS is its own and
 * no JIT or allocator state carries over; dirty pages are flushed (`sync`) before every trial; trials
 * are interleaved across rows so drift spreads evenly. Cold rows drop the page cache (root only; they
 * are left out with a note otherwise) and the warm rows' inputs are read again, untimed, after them.
 *
 *   node dist/bench/e2e.js [--runs N] [--preset tinyllama|medium] [--backends native,js,cuda] [--skip-js]
 *        [--write-modes rolling,plain,node] [--io mmap,direct,pread,fs] [--cold-io mmap,pread] [--no-cold]
 *        [--limits 4,3] [--double] [--large LAYERS] [--scratch DIR] [--baseline DIR] [--no-pytorch]
 *
 * --write-modes adds a warm fsync row per write mode besides the default's; --io a warm --no-fsync row
 * per input mode; --cold-io a cold fsync row per input mode, inside the limits too (e.g. mmap: what
 * `auto` ran before it measured); --limits a "cold, inputs K× the memory limit" row per K (cold rows
 * only; empty: none);
 * --double a 2× model (peak RSS must not grow with the model); --large LAYERS a cold row on a fixture
 * with that many layers (e.g. 90: 3 × 9 GB), and one inside a limit of a quarter of its inputs (opt-in:
 * it needs ~4 × the model size of disk). --scratch: where outputs and floor files go (default: beside
 * the fixture). --baseline DIR: every merge row runs a second time with another checkout's build
 * (DIR/dist/bench/e2e.js, e.g. the commit before a change), interleaved: before/after in one run. A
 * warm row merges the same weights saved as PyTorch `.bin` shards (bench/pytorch.ts; target: within
 * 1.1× of the safetensors default row); --no-pytorch leaves it out.
 */
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { IO_MODES, type IoMode } from '../lib/engine/io';
import { ensureFixture, PRESETS, type FixtureInfo } from '../lib/fixtures/generate';
import { createBackend, mergeModelStock } from '../lib/index';
import { WRITE_MODES, type WriteMode } from '../lib/safetensors/shardFile';
import type { PipelineProfile } from '../lib/engine/pipeline';
import { catGroups, dropCaches, durableWrite, readFiles, type DurableWrite } from './floor';
import { limitedReadFloor, trialCgroup } from './limited';
import { pytorchFixture } from './pytorch';
import {
  benchEntry,
  childResult,
  fixed,
  formatTable,
  median,
  ROOT,
  safetensorsFiles,
  sampleDirty,
  sendResult,
  spread,
  syncDisks,
  totalSize,
  type ChildWrap,
} from './util';

const PYTORCH_ROW = (backend: string): string => `merge (${backend}), default: fsync, warm, .bin inputs`;

interface ChildJob {
  readonly base: string;
  readonly models: readonly string[];
  readonly out: string;
  readonly backend: Bench;
  readonly io: IoMode;
  readonly fsync: boolean;
  readonly writeMode: WriteMode;
}

type Bench = 'native' | 'js' | 'cuda';

interface Trial {
  readonly seconds: number;
  /** User + system CPU time of the merge's process. */
  readonly cpuSeconds: number;
  /** KiB, from process.resourceUsage(). */
  readonly maxRSS: number;
  /** KiB, sampled by the parent during the merge. */
  readonly peakDirty?: number;
  readonly backend: string;
  readonly isa: string;
  readonly threads: number;
  readonly writeMode: string;
  readonly fsyncSeconds: number;
  /** How the inputs were read (the report's inputs[].io), and where the time went. */
  readonly reads?: string;
  readonly profile?: PipelineProfile;
  /** Bytes charged to the memory cgroup at most, when the merge ran in one. */
  readonly cgroupPeak?: number;
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
    writeMode: job.writeMode,
  });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const usage = process.resourceUsage();
  const result: Trial = {
    seconds,
    cpuSeconds: (usage.userCPUTime + usage.systemCPUTime) / 1e6,
    maxRSS: usage.maxRSS,
    backend: report.backend.name,
    isa: report.backend.isa,
    threads: report.backend.threads,
    writeMode: report.write.mode + (report.write.fallback === undefined ? '' : ` (${report.write.fallback})`),
    fsyncSeconds: report.write.fsyncSeconds,
    reads: [...new Set((report.inputs ?? []).map((i) => i.io + (i.fallback === undefined ? '' : '*')))].join(
      '/',
    ),
    profile: report.profile,
  };
  sendResult(result);
}

/** How a merge child is started: inside a memory cgroup, and with another checkout's build. */
interface ChildRun {
  readonly wrap?: ChildWrap;
  /** The bench script whose --child runs the merge (--baseline: another checkout's). */
  readonly script?: string;
}

/** One merge in a fresh process, `Dirty:` sampled meanwhile. */
async function runChild(job: ChildJob, run: ChildRun = {}): Promise<Trial> {
  rmSync(job.out, { recursive: true, force: true });
  syncDisks();
  const dirty = sampleDirty();
  try {
    const trial = await childResult<Trial>(run.script ?? __filename, job, {
      wrap: run.wrap,
      what: `merge ${JSON.stringify(job)}`,
    });
    return { ...trial, peakDirty: dirty.stop() };
  } finally {
    dirty.stop(); // a second stop is harmless; after a failure it ends the sampling
    rmSync(job.out, { recursive: true, force: true });
  }
}

function inputGroups(f: FixtureInfo): string[][] {
  return [f.base, ...f.models].map(safetensorsFiles);
}

/** What a row measured: a floor's trials (seconds only) or a merge's. */
interface Measured {
  readonly label: string;
  readonly seconds: number[];
  readonly trials: Trial[];
  /** Row label of the floor this row is compared with (none for floors). */
  readonly floor?: string;
  readonly inputBytes: number;
  readonly notes: string[];
  /** Floors: the read and the write alone, per trial. */
  readonly reads: number[];
  readonly writes: number[];
}

function row(label: string, inputBytes: number, floor?: string): Measured {
  return { label, seconds: [], trials: [], floor, inputBytes, notes: [], reads: [], writes: [] };
}

interface Options {
  runs: number;
  preset: 'tinyllama' | 'medium';
  backends: Bench[];
  writeModes: WriteMode[];
  ioModes: IoMode[];
  coldIo: IoMode[];
  cold: boolean;
  limits: number[];
  double: boolean;
  large: number | undefined;
  scratch: string | undefined;
  baseline: string | undefined;
  pytorch: boolean;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: 'string', default: '5' },
      backends: { type: 'string', default: 'native,js' },
      'skip-js': { type: 'boolean', default: false },
      'write-modes': { type: 'string', default: 'rolling,plain,node' },
      io: { type: 'string', default: '' },
      preset: { type: 'string', default: 'tinyllama' },
      cold: { type: 'boolean', default: true },
      'no-cold': { type: 'boolean', default: false },
      'cold-io': { type: 'string', default: '' },
      limits: { type: 'string', default: '4,3' },
      double: { type: 'boolean', default: false },
      large: { type: 'string' },
      scratch: { type: 'string' },
      baseline: { type: 'string' },
      'no-pytorch': { type: 'boolean', default: false },
    },
  });
  const runs = Number(values.runs);
  if (!Number.isSafeInteger(runs) || runs < 1)
    throw new Error(`--runs expects a positive integer, got ${values.runs}`);
  const preset = values.preset;
  if (preset !== 'tinyllama' && preset !== 'medium') throw new Error('--preset must be tinyllama or medium');
  const list = (s: string): string[] =>
    s
      .split(',')
      .map((x) => x.trim())
      .filter((x) => x !== '');
  const backends = list(values.backends).map((b) => {
    if (b !== 'native' && b !== 'js' && b !== 'cuda')
      throw new Error(`unknown backend "${b}" (native, js, cuda)`);
    return b;
  });
  const writeModes = list(values['write-modes']).map((m) => {
    if (!WRITE_MODES.includes(m as WriteMode)) throw new Error(`--write-modes: unknown mode "${m}"`);
    return m as WriteMode;
  });
  const ioModesOf = (option: string, v: string): IoMode[] =>
    list(v).map((m) => {
      if (!IO_MODES.includes(m as IoMode)) throw new Error(`${option}: unknown mode "${m}"`);
      return m as IoMode;
    });
  const ioModes = ioModesOf('--io', values.io);
  const coldIo = ioModesOf('--cold-io', values['cold-io']);
  const limits = list(values.limits).map((k) => {
    const n = Number(k);
    if (!(n > 1)) throw new Error(`--limits: "${k}" is not a ratio > 1 of the inputs to the memory limit`);
    return n;
  });
  const baseline =
    values.baseline === undefined ? undefined : path.resolve(values.baseline, 'dist/bench/e2e.js');
  if (baseline !== undefined && !existsSync(baseline))
    throw new Error(`--baseline: no ${baseline} (build it first)`);
  const large = values.large === undefined ? undefined : Number(values.large);
  if (large !== undefined && !(Number.isSafeInteger(large) && large > 0))
    throw new Error(`--large expects a layer count, got ${values.large}`);
  return {
    runs,
    preset,
    backends: values['skip-js'] ? backends.filter((b) => b !== 'js') : backends,
    writeModes,
    ioModes,
    coldIo,
    cold: values.cold && !values['no-cold'],
    limits,
    double: values.double,
    large,
    scratch: values.scratch,
    baseline,
    pytorch: !values['no-pytorch'],
  };
}

function backendAvailable(backend: 'native' | 'cuda'): string | undefined {
  try {
    void createBackend(backend).dispose();
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

async function fixtureOf(
  preset: Options['preset'],
  layers: number | undefined,
  label: string,
): Promise<FixtureInfo> {
  const base = PRESETS[preset];
  const dir = path.join(ROOT, '.cache', `bench-${preset}${layers === undefined ? '' : `-${layers}layers`}`);
  const started = process.hrtime.bigint();
  const info = await ensureFixture(
    { ...base, layers: layers ?? base.layers, dir },
    {
      onProgress: (done, total) => {
        if (done < total && process.stderr.isTTY)
          process.stderr.write(`\rgenerating ${label}: ${((100 * done) / total).toFixed(0)}%`);
      },
    },
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  if (seconds > 1) console.log(`generated ${label} in ${seconds.toFixed(1)} s`);
  return info;
}

/**
 * A merge row's job; base and models only where they are other inputs than the fixture's (the same
 * weights in another format).
 */
type Job = Omit<ChildJob, 'base' | 'models' | 'out'> & Partial<Pick<ChildJob, 'base' | 'models'>>;
/** A merge row: its job, and (with --baseline) the same job on the other build. */
interface MergeRow {
  readonly row: Measured;
  readonly job: Job;
  readonly script?: string;
}

/** Each labelled job as a row compared with `floor`; with --baseline, each a second time on that build. */
function mergeRows(
  jobs: readonly { label: string; job: Job }[],
  tag: string,
  inputBytes: number,
  floor: string,
  baseline: string | undefined,
): MergeRow[] {
  return jobs.flatMap(({ label, job }) => [
    { row: row(label + tag, inputBytes, floor), job },
    ...(baseline === undefined
      ? []
      : [{ row: row(`${label}${tag}, before`, inputBytes, floor), job, script: baseline }]),
  ]);
}

/**
 * Measures `rows` of one fixture for `runs` rounds. A round: warm the inputs (untimed), the durable floor,
 * every warm merge, then (cold) the cold floor and every cold merge, each after dropping the page cache,
 * then per memory limit the limited floor and the cold merges inside a cgroup of that limit.
 */
async function measureFixture(
  f: FixtureInfo,
  o: Options,
  scratch: string,
  warm: { label: string; job: Job }[],
  cold: { label: string; job: Job }[],
  limits: readonly number[],
  tag: string,
): Promise<Measured[]> {
  const groups = inputGroups(f);
  const inputBytes = totalSize(groups.flat());
  const durableLabel = `durable floor${tag} (cat + durable write)`;
  const coldLabel = `cold floor${tag} (parallel cats + durable write)`;
  const durable = row(durableLabel, inputBytes);
  const coldFloor = row(coldLabel, inputBytes);
  const warmRows = mergeRows(warm, tag, inputBytes, durableLabel, o.baseline);
  const coldRows = mergeRows(cold, tag, inputBytes, coldLabel, o.baseline);
  const limited = (cold.length === 0 ? [] : limits).map((k) => {
    const limit = Math.round(inputBytes / k / 2 ** 20) * 2 ** 20;
    const what = `inputs ${k}× the memory limit (${(limit / 2 ** 30).toFixed(2)} GiB)`;
    const floorLabel = `limited floor${tag}, ${what} (best of parallel cat / dd iflag=direct + durable write)`;
    const jobs = cold.map((c) => ({ label: `${c.label}, ${what}`, job: c.job }));
    return {
      k,
      limit,
      floor: row(floorLabel, inputBytes),
      rows: mergeRows(jobs, tag, inputBytes, floorLabel, o.baseline),
    };
  });
  const out = path.join(scratch, 'merged');
  const methods = new Set<string>();
  const note = (what: string, s: number, w: DurableWrite): void => {
    methods.add(w.method);
    process.stderr.write(`  ${what}: ${s.toFixed(2)} s (write ${w.seconds.toFixed(2)} s, ${w.method})\n`);
  };
  const floorTrial = (floor: Measured, read: number, write: DurableWrite): void => {
    floor.seconds.push(read + write.seconds);
    floor.reads.push(read);
    floor.writes.push(write.seconds);
  };
  const merge = async (r: number, m: MergeRow, run: ChildRun = {}): Promise<Trial> => {
    const t = await runChild({ base: f.base, models: f.models, out, ...m.job }, { ...run, script: m.script });
    m.row.trials.push(t);
    m.row.seconds.push(t.seconds);
    process.stderr.write(`  run ${r + 1}/${o.runs} ${m.row.label}: ${t.seconds.toFixed(2)} s\n`);
    return t;
  };
  for (let r = 0; r < o.runs; r++) {
    if (warmRows.length > 0) {
      readFiles(groups.flat()); // warm, untimed
      const read = await catGroups([groups.flat()]);
      const write = await durableWrite(scratch, f.fileBytesPerModel);
      floorTrial(durable, read, write);
      note(`run ${r + 1}/${o.runs} ${durableLabel}: read ${read.toFixed(2)} s`, read + write.seconds, write);
    }
    for (const w of warmRows) await merge(r, w);
    if (coldRows.length > 0) {
      dropCaches();
      const coldRead = await catGroups(groups);
      const coldWrite = await durableWrite(scratch, f.fileBytesPerModel);
      floorTrial(coldFloor, coldRead, coldWrite);
      note(
        `run ${r + 1}/${o.runs} ${coldLabel}: read ${coldRead.toFixed(2)} s`,
        coldRead + coldWrite.seconds,
        coldWrite,
      );
      for (const c of coldRows) {
        dropCaches();
        await merge(r, c);
      }
    }
    for (const l of limited) {
      const floorCg = trialCgroup(`floor-${l.k}`, l.limit);
      if (typeof floorCg === 'string') {
        if (r === 0) l.floor.notes.push(`limited rows left out: ${floorCg}`);
        continue;
      }
      try {
        const read = await limitedReadFloor(floorCg, groups);
        const write = await durableWrite(scratch, f.fileBytesPerModel);
        floorTrial(l.floor, read.seconds, write);
        note(
          `run ${r + 1}/${o.runs} ${l.floor.label}: read ${read.seconds.toFixed(2)} s, ${read.method}`,
          read.seconds + write.seconds,
          write,
        );
      } finally {
        floorCg.remove();
      }
      for (const m of l.rows) {
        const cg = trialCgroup(`merge-${l.k}`, l.limit);
        if (typeof cg === 'string') continue;
        try {
          dropCaches();
          const t = await merge(r, m, { wrap: cg.wrap });
          const peak = cg.peak();
          const kills = cg.oomKills() ?? 0;
          m.row.trials[m.row.trials.length - 1] = { ...t, cgroupPeak: peak };
          if (kills > 0)
            throw new Error(`${m.row.label}: ${kills} OOM kill(s) inside the ${l.limit}-byte limit`);
        } finally {
          const why = cg.remove();
          if (why !== undefined) process.stderr.write(`  warning: ${why}\n`);
        }
      }
    }
  }
  durable.notes.push(`durable write${tag}: ${[...methods].join(' / ')} (the fastest per trial)`);
  return [
    ...(warmRows.length > 0 ? [durable] : []),
    ...warmRows.map((w) => w.row),
    ...(coldRows.length > 0 ? [coldFloor, ...coldRows.map((c) => c.row)] : []),
    ...limited.flatMap((l) =>
      l.floor.seconds.length === 0 ? [l.floor] : [l.floor, ...l.rows.map((m) => m.row)],
    ),
  ];
}

function printTable(rows: Measured[]): void {
  const byLabel = new Map(rows.map((r) => [r.label, r]));
  const mib = (kib: number | undefined): string => (kib === undefined ? '-' : fixed(kib / 1024, 0));
  /** Median of a profile field over the trials that have a profile (a baseline build may not). */
  const phase = (t: readonly Trial[], k: keyof PipelineProfile): string => {
    const v = t.flatMap((x) => (x.profile === undefined ? [] : [x.profile[k]]));
    return v.length === 0 ? '-' : fixed(median(v));
  };
  console.log(
    formatTable(
      [
        '',
        'wall s',
        'spread',
        'GB/s in',
        '× floor',
        '× max(r,w)',
        'CPU s',
        'CPU s/GB',
        'peak RSS MiB',
        'peak Dirty MiB',
        'cgroup peak MiB',
        'fsync s',
        'read / compute / write s',
        'waits r / w s',
        'reads',
        'write',
      ],
      rows.map((r) => {
        const s = median(r.seconds);
        const floorRow = r.floor === undefined ? undefined : byLabel.get(r.floor);
        const floor = floorRow === undefined ? undefined : median(floorRow.seconds);
        // What a perfect overlap of the floor's read and write would take.
        const overlap =
          floorRow === undefined || floorRow.reads.length === 0
            ? undefined
            : Math.max(median(floorRow.reads), median(floorRow.writes));
        const t = r.trials;
        const modes = [...new Set(t.map((x) => x.writeMode))].join(', ');
        const reads = [...new Set(t.map((x) => x.reads ?? '?'))].join(', ');
        const cpu = t.length === 0 ? undefined : median(t.map((x) => x.cpuSeconds));
        const peaks = t.flatMap((x) => (x.cgroupPeak === undefined ? [] : [x.cgroupPeak]));
        return [
          r.label,
          fixed(s),
          fixed(spread(r.seconds)),
          fixed(r.inputBytes / 1e9 / s),
          floor === undefined ? '-' : fixed(s / floor),
          overlap === undefined || floorRow === undefined ? '-' : fixed(s / overlap),
          fixed(cpu),
          cpu === undefined ? '-' : fixed(cpu / (r.inputBytes / 1e9)),
          t.length === 0 ? '-' : mib(Math.max(...t.map((x) => x.maxRSS))),
          t.length === 0 ? '-' : mib(Math.max(...t.map((x) => x.peakDirty ?? 0))),
          peaks.length === 0 ? '-' : fixed(Math.max(...peaks) / 2 ** 20, 0),
          t.length === 0 ? '-' : fixed(median(t.map((x) => x.fsyncSeconds))),
          t.length === 0 ? '-' : `${phase(t, 'read')} / ${phase(t, 'compute')} / ${phase(t, 'write')}`,
          t.length === 0 ? '-' : `${phase(t, 'readWait')} / ${phase(t, 'writeWait')}`,
          reads === '' ? '-' : reads,
          modes === '' ? '-' : modes,
        ];
      }),
    ),
  );
  for (const r of rows) for (const n of r.notes) console.log(`  ${n}`);
  if (rows.some((r) => r.trials.some((t) => (t.reads ?? '').includes('*'))))
    console.log('  reads marked * fell back from O_DIRECT (the report says why)');
}

async function main(argv: string[]): Promise<void> {
  const o = parseOptions(argv);
  const notes: string[] = [];
  for (const b of ['native', 'cuda'] as const) {
    if (!o.backends.includes(b)) continue;
    const why = backendAvailable(b);
    if (why !== undefined) {
      notes.push(`${b} skipped: ${why}`);
      o.backends = o.backends.filter((x) => x !== b);
    }
  }
  const main = o.backends[0];
  if (main === undefined) throw new Error('no backend to run');
  if (o.cold) {
    const refused = dropCaches();
    if (refused !== undefined) {
      notes.push(`cold rows left out: ${refused}`);
      o.cold = false;
    }
  }
  const load = os.loadavg().map((x) => x.toFixed(1));

  const fixture = await fixtureOf(o.preset, undefined, `${o.preset} fixture`);
  const scratch = o.scratch ?? path.join(ROOT, '.cache', `bench-scratch-${process.pid}`);
  mkdirSync(scratch, { recursive: true });
  const d = { backend: main, io: 'auto' as IoMode, writeMode: 'auto' as WriteMode };
  const warm = [
    { label: `merge (${main}), default: fsync, warm`, job: { ...d, fsync: true } },
    { label: `merge (${main}), --no-fsync, warm`, job: { ...d, fsync: false } },
    ...o.writeModes.map((writeMode) => ({
      label: `merge (${main}), fsync, write ${writeMode}, warm`,
      job: { ...d, writeMode, fsync: true },
    })),
    ...o.ioModes.map((io) => ({
      label: `merge (${main}), --no-fsync, io ${io}, warm`,
      job: { ...d, io, fsync: false },
    })),
    ...(main !== 'js' && o.backends.includes('js')
      ? [{ label: 'merge (js), default: fsync, warm', job: { ...d, backend: 'js' as const, fsync: true } }]
      : []),
    ...(o.pytorch
      ? [{ label: PYTORCH_ROW(main), job: { ...d, fsync: true, ...(await pytorchFixture(fixture)) } }]
      : []),
  ];
  const cold = o.cold
    ? [
        { label: `merge (${main}), default: fsync, cold`, job: { ...d, fsync: true } },
        ...o.coldIo.map((io) => ({
          label: `merge (${main}), fsync, io ${io}, cold`,
          job: { ...d, io, fsync: true },
        })),
      ]
    : [];
  try {
    const rows = await measureFixture(fixture, o, scratch, warm, cold, o.limits, '');
    if (o.double) {
      const f2 = await fixtureOf(o.preset, PRESETS[o.preset].layers * 2, `${o.preset} 2× fixture`);
      rows.push(...(await measureFixture(f2, o, scratch, warm.slice(0, 2), [], [], ', 2× model')));
    }
    if (o.large !== undefined) {
      const fl = await fixtureOf(o.preset, o.large, `${o.preset} fixture with ${o.large} layers`);
      const big = totalSize(inputGroups(fl).flat());
      if (big < os.totalmem())
        notes.push(
          `--large: ${(big / 1e9).toFixed(1)} GB of input fit in RAM (${(os.totalmem() / 2 ** 30).toFixed(0)} GiB)`,
        );
      if (!o.cold)
        notes.push('--large: the large model is measured cold only, and cold rows are left out here');
      else
        rows.push(
          ...(await measureFixture(
            fl,
            o,
            scratch,
            [],
            cold,
            // Inside a limit of a quarter of its inputs.
            [4],
            `, ${o.large} layers (${(big / 1e9).toFixed(1)} GB in)`,
          )),
        );
    }

    const f = fixture.options;
    const first = rows.find((r) => r.trials.length > 0)?.trials[0];
    console.log(
      `\nmodel-stock end-to-end bench: ${o.preset} fixture (hidden ${f.hidden}, intermediate ${f.intermediate}, ` +
        `${f.layers} layers, vocab ${f.vocab}), base + ${f.models} fine-tunes, ${f.dtype}, ` +
        `${fixture.shards} shards each, ${(totalSize(inputGroups(fixture).flat()) / 1e9).toFixed(2)} GB in, ` +
        `${(fixture.fileBytesPerModel / 1e9).toFixed(2)} GB out`,
    );
    console.log(
      `machine: ${os.cpus()[0]?.model ?? '?'}, ${os.cpus().length} CPUs, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB; ` +
        `load average ${load.join(' ')} at the start, ${os
          .loadavg()
          .map((x) => x.toFixed(1))
          .join(' ')} at the end`,
    );
    if (first !== undefined)
      console.log(
        `${first.backend} backend: ${first.isa}, ${first.threads} thread${first.threads === 1 ? '' : 's'}`,
      );
    console.log(
      `medians of ${o.runs} run(s), spread = max/min; each merge in a fresh process; dirty pages flushed before each trial\n`,
    );
    printTable(rows);
    const bin = rows.find((r) => r.label === PYTORCH_ROW(main));
    const safetensors = rows.find((r) => r.label === `merge (${main}), default: fsync, warm`);
    if (bin !== undefined && safetensors !== undefined) {
      const ratio = median(bin.seconds) / median(safetensors.seconds);
      console.log(
        `  .bin inputs / .safetensors inputs (same weights, default merge, warm): ${fixed(ratio)}× (target ≤ 1.1×)`,
      );
    }
    for (const n of notes) console.log(`  ${n}`);
  } finally {
    if (o.scratch === undefined) rmSync(scratch, { recursive: true, force: true });
  }
}

benchEntry(child, main);
