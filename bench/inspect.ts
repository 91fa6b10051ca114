/**
 * `npm run bench:inspect`: the cost of `inspect` (the Gram pass only: every input read once, no weights
 * written) against a warm `--no-fsync` merge of the same inputs — the bound is inspect ≤ ~60% of
 * that merge. Both run from warm page cache, each in a fresh child process, alternating so that drift
 * on a busy machine falls on both; medians with the spread (min–max) over the runs.
 *
 *   node dist/bench/inspect.js [--runs N] [--preset example|tinyllama|medium] [--backend native|js|cuda]
 */
import { rmSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { ensureFixture, PRESETS } from '../lib/fixtures/generate';
import { inspectModelStock, mergeModelStock } from '../lib/index';
import type { BackendChoice } from '../lib/types';
import {
  benchEntry,
  childResult,
  fixed,
  formatTable,
  median,
  ROOT,
  safetensorsFiles,
  sendResult,
  totalSize,
} from './util';

type Kind = 'inspect' | 'merge';
interface Job {
  readonly kind: Kind;
  readonly base: string;
  readonly models: readonly string[];
  readonly out: string;
  readonly backend: BackendChoice;
}
interface Result {
  readonly seconds: number;
  readonly cpuSeconds: number;
  readonly backend: string;
}

async function child(job: Job): Promise<void> {
  const start = process.hrtime.bigint();
  const o = { base: job.base, models: job.models, backend: job.backend };
  const report =
    job.kind === 'inspect'
      ? await inspectModelStock(o)
      : await mergeModelStock({ ...o, out: job.out, overwrite: true, fsync: false });
  const usage = process.resourceUsage();
  const result: Result = {
    seconds: Number(process.hrtime.bigint() - start) / 1e9,
    cpuSeconds: (usage.userCPUTime + usage.systemCPUTime) / 1e6,
    backend: `${report.backend.name} ${report.backend.isa}`,
  };
  sendResult(result);
}

function run(job: Job): Promise<Result> {
  return childResult<Result>(__filename, job, { what: job.kind });
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: 'string', default: '5' },
      preset: { type: 'string', default: 'tinyllama' },
      backend: { type: 'string', default: 'native' },
    },
  });
  const runs = Number(values.runs);
  if (!Number.isSafeInteger(runs) || runs < 1) throw new Error(`--runs expects a positive integer`);
  const preset = values.preset as keyof typeof PRESETS;
  if (!['example', 'tinyllama', 'medium'].includes(preset)) throw new Error(`unknown --preset ${preset}`);
  const backend = values.backend as BackendChoice;
  const fixture = await ensureFixture({
    ...PRESETS[preset],
    dir: path.join(ROOT, '.cache', `bench-${preset}`),
  });
  const out = path.join(fixture.dir, 'merged-inspect-bench');
  const job = (kind: Kind): Job => ({ kind, base: fixture.base, models: fixture.models, out, backend });
  const inputBytes = totalSize([fixture.base, ...fixture.models].flatMap(safetensorsFiles));
  // Untimed: brings every input into the page cache and the code paths into the disk cache.
  await run(job('merge'));
  await run(job('inspect'));
  const times: Record<Kind, Result[]> = { inspect: [], merge: [] };
  for (let r = 0; r < runs; r++) {
    // Alternating order: neither kind always runs right after the other's writeback.
    for (const kind of r % 2 === 0 ? (['inspect', 'merge'] as const) : (['merge', 'inspect'] as const))
      times[kind].push(await run(job(kind)));
  }
  rmSync(out, { recursive: true, force: true });
  const row = (kind: Kind, label: string): string[] => {
    const s = times[kind].map((t) => t.seconds);
    const cpu = times[kind].map((t) => t.cpuSeconds);
    return [
      label,
      fixed(median(s)),
      `${fixed(Math.min(...s))}–${fixed(Math.max(...s))}`,
      fixed(inputBytes / 1e9 / median(s)),
      fixed(median(cpu)),
    ];
  };
  const ratio = median(times.inspect.map((t) => t.seconds)) / median(times.merge.map((t) => t.seconds));
  console.log(
    `${preset}: ${(inputBytes / 1e9).toFixed(2)} GB of input, ${runs} run${runs === 1 ? '' : 's'} each, ` +
      `backend ${times.inspect[0]?.backend}, warm page cache`,
  );
  console.log(
    formatTable(
      ['', 'median s', 'min–max s', 'input GB/s', 'CPU s'],
      [row('merge', 'merge --no-fsync'), row('inspect', 'inspect')],
    ),
  );
  console.log(`inspect / merge: ${(100 * ratio).toFixed(0)}% (the bound is ~60%)`);
}

benchEntry(child, main);
