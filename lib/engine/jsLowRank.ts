import { floatSize } from '../dtype';
import { ModelStockError, throwIfCancelled } from '../errors';
import { decodeFloats, encodeFloats } from '../math/codec';
import { gramSize } from '../math/gram';
import {
  decodeFactorSteps,
  layerGram,
  mergedRow,
  rankOf,
  rowGram,
  rowProductSteps,
  type DecodedFactors,
} from '../math/lowRank';
import {
  lowRankUnits,
  type LowRankSession,
  type LowRankSpec,
  type MaterializeJob,
  type RowWindow,
} from './backend';

/**
 * The pure-TypeScript low-rank session (lib/math/lowRank.ts behind the seam): the factors decoded (and
 * orthonormalized) to float64 once, on the first step; the event loop gets a turn every YIELD_WORK
 * multiply-adds, and a cancelled merge stops there.
 */

const YIELD_WORK = 1 << 22;

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Runs a generator of steps (each yielding the multiply-adds it took) to its end, giving the event loop
 * a turn and checking `signal` every YIELD_WORK multiply-adds.
 */
async function runSteps<T>(
  steps: Generator<number, T>,
  signal: AbortSignal | undefined,
  what: string,
): Promise<T> {
  let work = 0;
  for (;;) {
    const step = steps.next();
    if (step.done === true) return step.value;
    work += step.value;
    if (work >= YIELD_WORK) {
      work = 0;
      await yieldToLoop();
      throwIfCancelled(signal, what);
    }
  }
}

/** Calls `body(from, to)` over [0, count) in steps of `step`, yielding and checking `signal` between them. */
async function inSteps(
  count: number,
  step: number,
  signal: AbortSignal | undefined,
  what: string,
  body: (from: number, to: number) => void,
): Promise<void> {
  for (let from = 0; from < count; from += step) {
    throwIfCancelled(signal, what);
    body(from, Math.min(count, from + step));
    if (from + step < count) await yieldToLoop();
  }
}

/** Rows of `window` merged into `out` (outDtype): w0 + Σ coef(k)_i·U_ki·V_i, row by row. */
async function writeRows(
  f: DecodedFactors,
  spec: Pick<LowRankSpec, 'baseDtype' | 'cols' | 'name'>,
  outDtype: LowRankSpec['outDtype'],
  window: RowWindow,
  uRow: (k: number) => number,
  coef: (k: number) => ArrayLike<number>,
  out: Uint8Array,
  signal: AbortSignal | undefined,
): Promise<void> {
  const { cols, baseDtype } = spec;
  const inSize = floatSize(baseDtype);
  const outSize = floatSize(outDtype);
  const w0 = new Float64Array(cols);
  const acc = new Float64Array(cols);
  const row = new Float64Array(cols);
  const step = Math.max(1, Math.floor(YIELD_WORK / (cols * Math.max(1, rankOf(f)))));
  await inSteps(window.rows, step, signal, `tensor "${spec.name}"`, (from, to) => {
    for (let k = from; k < to; k++) {
      decodeFloats(window.base.subarray(k * cols * inSize, (k + 1) * cols * inSize), baseDtype, w0);
      for (let c = 0; c < cols; c++) {
        if (!Number.isFinite(w0[c]!))
          throw new ModelStockError('NON_FINITE', "a NaN or Inf in the base's rows of this window");
      }
      mergedRow(f, uRow(k), coef(k), w0, acc, row);
      encodeFloats(row, outDtype, out.subarray(k * cols * outSize, (k + 1) * cols * outSize));
    }
  });
}

export class JsLowRankSession implements LowRankSession {
  private decoded: Promise<DecodedFactors> | undefined;
  private readonly scales: Float64Array;

  constructor(
    readonly spec: LowRankSpec,
    private readonly signal: AbortSignal | undefined,
  ) {
    this.scales = Float64Array.from(spec.factors, (f) => f?.scale ?? 0);
  }

  private factors(): Promise<DecodedFactors> {
    const { factors, rows, cols, mergedRows, name } = this.spec;
    this.decoded ??= runSteps(
      decodeFactorSteps(factors, rows, cols, 0, mergedRows ?? rows),
      this.signal,
      `tensor "${name}"`,
    );
    return this.decoded;
  }

  async gram(): Promise<Float64Array> {
    const what = `tensor "${this.spec.name}"`;
    throwIfCancelled(this.signal, what);
    const f = await this.factors();
    const n = f.n;
    const S = rankOf(f);
    const gram = new Float64Array(lowRankUnits(this.spec) * gramSize(n));
    if (S === 0 || f.uRows === 0) return gram;
    const mv = await runSteps(rowProductSteps(f.v, S, f.cols), this.signal, what);
    if (!this.spec.filterWise) {
      const mu = await runSteps(rowProductSteps(f.ut, S, f.uRows), this.signal, what);
      gram.set(layerGram(f, mu, mv, this.scales));
      return gram;
    }
    const step = Math.max(1, Math.floor(YIELD_WORK / (S * S)));
    await inSteps(f.uRows, step, this.signal, what, (from, to) =>
      rowGram(f, mv, this.scales, from, to, gram),
    );
    return gram;
  }

  async interpolate(window: RowWindow, t: Float64Array, out: Uint8Array): Promise<void> {
    const f = await this.factors();
    const n = f.n;
    const coefs = new Float64Array(n);
    const filterWise = this.spec.filterWise;
    const coef = (k: number): Float64Array => {
      const tk = t[filterWise ? window.firstRow + k : 0]!;
      for (let i = 0; i < n; i++) coefs[i] = (tk / n) * this.scales[i]!;
      return coefs;
    };
    await writeRows(
      f,
      this.spec,
      this.spec.outDtype,
      window,
      (k) => window.firstRow + k,
      coef,
      out,
      this.signal,
    );
  }

  async close(): Promise<void> {
    this.decoded = undefined;
  }
}

/** W0 + s·B·A for the job's rows, as float64 (the job is validated by checked.ts). */
export async function materializeRowsJs(job: MaterializeJob, signal: AbortSignal | undefined): Promise<void> {
  const { window, factor, rows, cols } = job;
  const what = `tensor "${job.name}"`;
  const f = await runSteps(
    decodeFactorSteps([factor], rows, cols, window.firstRow, window.rows),
    signal,
    what,
  );
  const coef = [factor.scale];
  await writeRows(
    f,
    job,
    'F64',
    window,
    (k) => k,
    () => coef,
    job.out,
    signal,
  );
}
