/** Small helpers shared by the benchmarks: statistics, file lists, a plain-text table. */
import { execFileSync, spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** Seconds elapsed since `start` (from process.hrtime.bigint()). */
export function since(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** The .safetensors files of a model folder, sorted. */
export function safetensorsFiles(modelDir: string): string[] {
  return readdirSync(modelDir)
    .filter((n) => n.endsWith('.safetensors'))
    .sort()
    .map((n) => path.join(modelDir, n));
}

export function totalSize(files: readonly string[]): number {
  return files.reduce((sum, f) => sum + statSync(f).size, 0);
}

/**
 * Flushes dirty pages so a timed run neither pays for the previous run's writeback nor gets
 * throttled by it (the kernel stalls writers once dirty pages pass vm.dirty_ratio).
 */
export function syncDisks(): void {
  try {
    execFileSync('sync', { stdio: 'ignore' });
  } catch {
    // No `sync` binary (Windows): runs are then a little noisier, not wrong.
  }
}

/** Right-aligned columns after a left-aligned first column. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((r) => (r[c] ?? '').length)));
  return all
    .map((r) =>
      r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  '),
    )
    .join('\n');
}

export function fixed(n: number | undefined, digits = 2): string {
  return n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(digits);
}

/** max / min of the values: how far apart the runs were (1 = identical). */
export function spread(values: readonly number[]): number {
  return values.length === 0 ? NaN : Math.max(...values) / Math.min(...values);
}

/**
 * Samples `Dirty:` of /proc/meminfo every `everyMs` until stopped; returns the peak in KiB (undefined
 * where there is no /proc/meminfo). System-wide: other processes' dirty pages count too.
 */
export function sampleDirty(everyMs = 20): { stop(): number | undefined } {
  let peak: number | undefined;
  const sample = (): void => {
    try {
      const m = /^Dirty:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
      if (m !== null) peak = Math.max(peak ?? 0, Number(m[1]));
    } catch {
      // not Linux
    }
  };
  sample();
  const timer = setInterval(sample, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      sample();
      return peak;
    },
  };
}

/** The repository's root (bench scripts run from dist/bench). */
export const ROOT = path.resolve(__dirname, '..', '..');
/** How a bench script is told to run one trial: `node SCRIPT --child JOB_JSON` (benchEntry). */
const CHILD_FLAG = '--child';
/** The line a trial's child prints its result on (sendResult), which childResult reads. */
const RESULT_TAG = 'BENCH_RESULT ';

/** In a trial's child: its result, for the parent's childResult. */
export function sendResult(result: unknown): void {
  process.stdout.write(`${RESULT_TAG}${JSON.stringify(result)}\n`);
}

/** How `childResult` starts the child: by default `node <script> --child <job>` as it is. */
export type ChildWrap = (command: string, args: readonly string[]) => [string, string[]];

/**
 * Runs `script` (a bench script ending in benchEntry) in a fresh Node process on `job` and returns the
 * result its child sent (sendResult); a failure, or no result, throws with the start of what the child
 * said. `wrap` may start the command another way (inside a memory cgroup); `what` names the child in
 * that error.
 */
export async function childResult<T>(
  script: string,
  job: unknown,
  o: { readonly wrap?: ChildWrap; readonly what?: string } = {},
): Promise<T> {
  const args = [CHILD_FLAG, JSON.stringify(job)];
  const argv = [script, ...args];
  const [command, commandArgs] = o.wrap?.(process.execPath, argv) ?? [process.execPath, argv];
  const proc = spawn(command, commandArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const status = await new Promise<number | null>((resolve, reject) => {
    proc.on('error', reject);
    proc.on('close', resolve);
  });
  const line = stdout.split('\n').find((l) => l.startsWith(RESULT_TAG));
  if (status !== 0 || line === undefined) {
    const why = (stderr || stdout).trim().split('\n').slice(0, 5).join('\n');
    throw new Error(`${o.what ?? args.join(' ')} failed with status ${status}:\n${why}`);
  }
  return JSON.parse(line.slice(RESULT_TAG.length)) as T;
}

/**
 * The entry of a bench script that runs its trials in fresh copies of itself: with `--child` first on
 * the command line it runs `child` on the job the next argument holds (JSON), else `main` on all the
 * arguments. A failure prints (a child's with its stack, which the parent shows the start of; `main`'s
 * as its message, or its stack with `mainStack`) and sets exit code 1.
 */
export function benchEntry<J>(
  child: (job: J) => Promise<void>,
  main: (argv: string[]) => Promise<void>,
  o: { readonly mainStack?: boolean } = {},
): void {
  const say =
    (stack: boolean) =>
    (e: unknown): void => {
      console.error(e instanceof Error ? (stack ? (e.stack ?? e.message) : e.message) : String(e));
      process.exitCode = 1;
    };
  if (process.argv[2] === CHILD_FLAG)
    Promise.resolve()
      .then(() => child(JSON.parse(process.argv[3] ?? '{}') as J))
      .catch(say(true));
  else main(process.argv.slice(2)).catch(say(o.mainStack === true));
}
