/**
 * `npm run bench:liveness`: the worst gap between ticks of a 5 ms timer — how long the event loop was
 * held — while opening hostile inputs and while running a normal merge. The target is ≤ 50 ms; tests
 * assert < 250 ms. Each trial runs in a fresh process (this script with --child), so one trial's heap
 * does not slow the next one's GC; inputs are generated once into .cache/liveness/.
 *
 *   node dist/bench/liveness.js [--runs N] [--cases header,tokens,index,downstream,merge,previous]
 *
 * `previous` times the parser this one replaced (JSON.parse + key scan, kept in fuzz/reference.ts) on
 * the same 1.5M-tensor header, for comparison: its gap is its whole run.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, existsSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { ensureFixture, PRESETS } from '../lib/fixtures/generate';
import { writeHeaderFile, zeroSizeTensors } from '../lib/fixtures/hostile';
import { mergeModelStock } from '../lib/merge';
import { makePlanSliced } from '../lib/plan/plan';
import { openCheckpoint } from '../lib/checkpoint/open';
import { readSafetensorsFile } from '../lib/safetensors/file';
import { readIndexFile } from '../lib/checkpoint/indexFile';
import { planShardsSliced } from '../lib/safetensors/layout';
import { writeReportJson } from '../lib/output/report';
import type { Checkpoint, TensorInfo } from '../lib/checkpoint/types';
import type { MergeReport } from '../lib/types';
import { ChunkedMap } from '../lib/util/chunkedMap';
import { forEachSliced, mapSliced, runSliced } from '../lib/util/sliced';
import { referenceParseHeader } from '../fuzz/reference';
import { measureLiveness } from '../test/helpers/liveness';
import { fixed, formatTable, median } from './util';

const ROOT = path.resolve(__dirname, '..', '..');
const DIR = path.join(ROOT, '.cache', 'liveness');
const CHILD_FLAG = '--child';
const RESULT_TAG = 'LIVENESS_RESULT ';

interface Trial {
  readonly seconds: number;
  readonly maxGapMs: number;
  /** The largest gap counted in the CPU time the process used during it (see test/helpers/liveness.ts). */
  readonly maxBusyGapMs: number;
  readonly ticks: number;
  readonly rssMiB: number;
}

type CaseName = 'header' | 'tokens' | 'index' | 'downstream' | 'merge' | 'previous';
const CASES: Record<CaseName, string> = {
  header: 'open a 1.5M-tensor header (89 MB) as a checkpoint',
  tokens: 'open headers of one 40 MB name / 40 MB number / 10M-dim shape',
  index: 'parse a 600k-tensor index (33 MB)',
  downstream: 'plan + shard layout + report of 1M tensors (3 models)',
  merge: 'merge the example fixture (3 × 50 MB, bf16)',
  previous: 'previous parser on the 1.5M-tensor header (sync)',
};

async function prepare(name: CaseName): Promise<void> {
  mkdirSync(DIR, { recursive: true });
  const file = (f: string) => path.join(DIR, f);
  if ((name === 'header' || name === 'previous') && !existsSync(file('zero-1.5M/model.safetensors'))) {
    mkdirSync(file('zero-1.5M'), { recursive: true });
    await writeHeaderFile(file('zero-1.5M/model.safetensors'), zeroSizeTensors(1_500_000));
  }
  if (name === 'tokens' && !existsSync(file('dims.safetensors'))) {
    const size = 40_000_000;
    const entry = (shape: string, bytes: number) =>
      `{"dtype":"U8","shape":${shape},"data_offsets":[0,${bytes}]}`;
    await writeHeaderFile(
      file('name.safetensors'),
      [Buffer.from(`{"${'w'.repeat(size)}":${entry('[1]', 1)}}`)],
      1,
    );
    await writeHeaderFile(
      file('number.safetensors'),
      [Buffer.from(`{"w":${entry(`[1.${'0'.repeat(size)}]`, 1)}}`)],
      1,
    );
    await writeHeaderFile(file('dims.safetensors'), [
      Buffer.from(`{"w":${entry(`[${'1,'.repeat(9_999_999)}0]`, 0)}}`),
    ]);
  }
  if (name === 'index' && !existsSync(file('index.json'))) {
    const lines = Array.from(
      { length: 600_000 },
      (_, i) => `    "model.layers.${i}.weight": "model-0000${i % 4}-of-00004.safetensors"`,
    );
    writeFileSync(file('index.json'), `{\n  "weight_map": {\n${lines.join(',\n')}\n  }\n}\n`);
  }
  if (name === 'merge') await ensureFixture({ ...PRESETS.example, dir: file('example') });
}

/** In the child: runs one case with the 5 ms timer beside it. */
async function child(name: CaseName): Promise<void> {
  const file = (f: string) => path.join(DIR, f);
  let work: () => Promise<unknown>;
  switch (name) {
    case 'header':
      work = () => openCheckpoint(file('zero-1.5M'));
      break;
    case 'tokens':
      work = async () => {
        for (const f of ['name', 'number', 'dims']) await readSafetensorsFile(file(`${f}.safetensors`));
      };
      break;
    case 'index':
      work = () => readIndexFile(file('index.json'));
      break;
    case 'previous': {
      const bytes = readFileSync(file('zero-1.5M/model.safetensors'));
      const json = bytes.subarray(8);
      work = async () => referenceParseHeader(json, 'x', bytes.length, bytes.length);
      break;
    }
    case 'downstream':
      work = () => downstream(1_000_000);
      break;
    case 'merge': {
      const info = await ensureFixture({ ...PRESETS.example, dir: file('example') });
      const out = file('merged');
      rmSync(out, { recursive: true, force: true });
      work = () => mergeModelStock({ base: info.base, models: info.models, out, fsync: false });
      break;
    }
  }
  const r = await measureLiveness(work);
  const trial: Trial = {
    seconds: r.elapsedMs / 1000,
    maxGapMs: r.maxGapMs,
    maxBusyGapMs: r.maxBusyGapMs,
    ticks: r.ticks,
    rssMiB: process.resourceUsage().maxRSS / 1024,
  };
  process.stdout.write(`${RESULT_TAG}${JSON.stringify(trial)}\n`);
}

/** Plan, shard layout and report of `count` zero-size tensors in three synthetic models. */
async function downstream(count: number): Promise<void> {
  // The models are built before the timer starts in a real merge (by opening); here they are part of
  // the timed work, built in slices too, so that the numbers are the plan's, layout's and report's.
  const model = async (label: string): Promise<Checkpoint> => {
    const tensors = new ChunkedMap<TensorInfo>();
    const order: string[] = [];
    await runSliced(
      forEachSliced(count, (i) => {
        const name = `model.layers.${i}.weight`;
        tensors.set(name, { name, dtype: 'F32', shape: [0], offset: 8, byteLength: 0, file: label });
        order.push(name);
      }),
    );
    return {
      format: 'safetensors',
      warnings: [],
      path: label,
      dir: label,
      files: [label],
      indexFile: undefined,
      tensors,
      order,
      metadata: undefined,
      identities: new Map(),
    };
  };
  const models = [await model('base'), await model('a'), await model('b')] as const;
  const plan = await makePlanSliced(models[0], models.slice(1), { filterWise: false, outDtype: undefined });
  const entries = await runSliced(
    mapSliced(plan.steps, (s) => ({ name: s.name, dtype: s.outDtype, shape: s.base.shape, byteLength: 0 })),
  );
  await planShardsSliced(entries, { shardSize: 1 });
  const tensors = await runSliced(
    mapSliced(plan.steps, (s) => ({
      name: s.name,
      action: 'merge',
      n: 2,
      dtype: 'F32',
      shape: [0],
      cosines: [0.5],
      c: 0.5,
      t: 0.67,
    })),
  );
  const report = { method: 'model_stock', tensors, warnings: [] } as unknown as MergeReport;
  const out = path.join(DIR, 'report.json');
  await writeReportJson(out, report, { fsync: false, flags: 'w' });
}

function runChild(name: CaseName): Trial {
  const proc = spawnSync(process.execPath, [__filename, CHILD_FLAG, name], {
    encoding: 'utf8',
    maxBuffer: 16 << 20,
  });
  const line = proc.stdout.split('\n').find((l) => l.startsWith(RESULT_TAG));
  if (proc.status !== 0 || line === undefined) {
    throw new Error(
      `case ${name} failed with status ${proc.status}:\n${(proc.stderr || proc.stdout).slice(0, 2000)}`,
    );
  }
  return JSON.parse(line.slice(RESULT_TAG.length)) as Trial;
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: 'string', default: '3' },
      cases: { type: 'string', default: 'header,tokens,index,downstream,merge,previous' },
    },
  });
  const runs = Number(values.runs);
  if (!Number.isSafeInteger(runs) || runs < 1)
    throw new Error(`--runs expects a positive integer, got ${values.runs}`);
  const names = values.cases.split(',').map((s) => s.trim()) as CaseName[];
  for (const n of names)
    if (!(n in CASES)) throw new Error(`unknown case "${n}" (${Object.keys(CASES).join(', ')})`);
  for (const n of names) await prepare(n);

  const rows: string[][] = [];
  const load = loadavg()[0] as number;
  for (const n of names) {
    // The previous parser stalls for its whole run: once is enough to show it.
    const trials = Array.from({ length: n === 'previous' ? 1 : runs }, () => runChild(n));
    const gaps = trials.map((t) => t.maxGapMs);
    const busy = trials.map((t) => t.maxBusyGapMs);
    process.stderr.write(
      `  ${n}: worst gaps ${gaps.map((g) => g.toFixed(0)).join(', ')} ms (busy ${busy.map((g) => g.toFixed(0)).join(', ')})\n`,
    );
    rows.push([
      CASES[n],
      fixed(median(trials.map((t) => t.seconds))),
      fixed(median(gaps), 0),
      fixed(Math.max(...gaps), 0),
      fixed(median(busy), 0),
      fixed(median(trials.map((t) => t.rssMiB)), 0),
    ]);
  }
  console.log(
    formatTable(
      ['case', 'wall s', 'worst gap ms (median)', 'max', 'busy gap ms (median)', 'peak RSS MiB'],
      rows,
    ),
  );
  console.log(
    `\n${runs} runs each, fresh process per run; 1-min load average at start ${load.toFixed(2)} (${process.arch}, Node ${process.version})`,
  );
}

if (process.argv[2] === CHILD_FLAG) {
  void child(process.argv[3] as CaseName).catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
} else {
  main(process.argv.slice(2)).catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
