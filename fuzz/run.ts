/**
 * Runs the parser fuzz targets for a while in a worker, watching it: a worker that makes no progress
 * for `hangMs` is ended and its input reported as a hang; one that dies (out of memory, a fault) is
 * reported with the input it was running.
 */
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { FuzzInput } from './mutate';
import {
  SHARED_BYTES,
  decodeInput,
  type PytorchCounts,
  type WorkerData,
  type WorkerMessage,
} from './protocol';

export interface FuzzOptions {
  readonly seconds: number;
  readonly seed: number;
  /** No progress for this long is a hang (default 10 s; the slowest legitimate input takes ms). */
  readonly hangMs?: number;
  /** The share of inputs that are mutated PyTorch files (default 0.3; the rest: headers and index files). */
  readonly pytorchShare?: number;
}

export interface FuzzFinding {
  readonly problem: string;
  /** The smallest input found with the same problem. */
  readonly input: FuzzInput;
  readonly original: FuzzInput;
}

export interface FuzzResult {
  readonly seed: number;
  readonly iterations: number;
  readonly findings: FuzzFinding[];
  /** PyTorch inputs: how many ran, reached the pickle interpreter, and gave a tensor table. */
  readonly pytorch: PytorchCounts;
}

export function runFuzz(opts: FuzzOptions): Promise<FuzzResult> {
  const shared = new SharedArrayBuffer(SHARED_BYTES);
  const state = new Int32Array(shared, 0, 4);
  const bytes = new Uint8Array(shared, 16);
  const data: WorkerData = {
    seed: opts.seed,
    seconds: opts.seconds,
    shared,
    pytorchShare: opts.pytorchShare ?? 0.3,
  };
  const worker = new Worker(path.join(__dirname, 'worker.js'), {
    workerData: data,
    resourceLimits: { maxOldGenerationSizeMb: 1024 },
  });
  const findings: FuzzFinding[] = [];
  const hangMs = opts.hangMs ?? 10_000;
  return new Promise<FuzzResult>((resolve) => {
    let lastIteration = -1;
    let lastProgress = performance.now();
    let settled = false;
    let pytorch: PytorchCounts = { inputs: 0, interpreted: 0, tables: 0 };
    const finish = (iterations: number, extra?: Omit<FuzzFinding, 'original'>): void => {
      if (settled) return;
      settled = true;
      clearInterval(watchdog);
      if (extra !== undefined) findings.push({ ...extra, original: extra.input });
      void worker.terminate().then(() => resolve({ seed: opts.seed, iterations, findings, pytorch }));
    };
    const watchdog = setInterval(() => {
      const iteration = Atomics.load(state, 0);
      if (iteration !== lastIteration) {
        lastIteration = iteration;
        lastProgress = performance.now();
      } else if (performance.now() - lastProgress > hangMs) {
        finish(iteration, {
          problem: `hang: no progress for ${hangMs} ms`,
          input: decodeInput(state, bytes),
        });
      }
    }, 250);
    worker.on('message', (m: WorkerMessage) => {
      if (m.type === 'finding') findings.push({ problem: m.problem, input: m.input, original: m.original });
      else {
        pytorch = m.pytorch;
        finish(m.iterations);
      }
    });
    worker.on('error', (e: Error) => {
      finish(Atomics.load(state, 0), {
        problem: `worker died: ${e.message}`,
        input: decodeInput(state, bytes),
      });
    });
    worker.on('exit', (code) => {
      finish(Atomics.load(state, 0), {
        problem: `worker exited with ${code}`,
        input: decodeInput(state, bytes),
      });
    });
  });
}

/** An input as a line of JSON, to paste into test/safetensors/fuzz.test.ts as a regression case. */
export function describeInput(input: FuzzInput): string {
  return JSON.stringify({
    kind: input.kind,
    dataBytes: input.dataBytes,
    base64: Buffer.from(input.bytes).toString('base64'),
  });
}
