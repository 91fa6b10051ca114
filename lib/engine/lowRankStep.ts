/**
 * Tensors a LoRA adapter changes with low-rank factors (plan.ts LowRankStep), as pipeline tasks
 * (pipeline.ts) on the backend's low-rank steps (backend.ts):
 *
 * - **factors only** (every fine-tune an adapter of the base, or leaving the tensor as it is): one task
 *   reads the factors and computes the Gram matrix from them alone — no base weight read, no R × C
 *   product formed — and t; then, for a merge, one task per row window of the base runs the fused output
 *   W0 + (t/N)·Σ s_i·B_i·A_i into its output slice, the pipeline reading the next windows and writing the
 *   previous ones meanwhile;
 * - **mixed** (a full fine-tune, a saved whole tensor, or an adapter over another model among the
 *   inputs): the factors are read once, then each window's low-rank fine-tunes are formed as float64
 *   rows (materializeRows: W + s·B·A, never rounded to a stored dtype) and given to the dense session's
 *   two passes, as windowed.ts does.
 *
 * The factors are copied out of the ring into buffers of their own (a few MB); the float64 rows of a
 * window are allocated per window (window rows × cols × 8 per low-rank input), so the memory budget
 * bounds the rest whatever the tensor's size.
 */
import { floatSize, type FloatDType } from '../dtype';
import { ModelStockError } from '../errors';
import { findNonFinite } from '../math/nonfinite';
import type { FineTuneInput, LowRankStep } from '../plan/plan';
import type { TensorInfo } from '../checkpoint/types';
import type { TensorReport } from '../types';
import type { LowRankFactor, LowRankSession, RowWindow, TensorSession, TensorSpec } from './backend';
import type { StepContext } from './context';
import { baseTailTasks } from './copy';
import { checkFiniteInputs, type ScannedInput } from './finite';
import { isMapped, type Task, type TaskRead } from './pipeline';
import { ratios } from './report';
import type { Sizing } from './sizing';

/** A bias's task vector s·b is the factor pair B = b [R, 1], A = [[1]]. */
const ONE = new Uint8Array(new Float32Array([1]).buffer);

/** The stored tensor as [rows, cols] = [shape[0], rest] (a bias [R] is [R, 1]). */
export function storedShape(step: Pick<LowRankStep, 'shape' | 'numel'>): { rows: number; cols: number } {
  const rows = step.shape[0] ?? 1;
  return { rows, cols: step.numel / rows };
}

const sizeOf = (t: TensorInfo): number => floatSize(t.dtype as FloatDType);

/** Rows merged (a row prefix when vocabularies differ). */
const mergedRowsOf = (step: LowRankStep): number => step.mergedNumel / storedShape(step).cols;

/** Weights read beside the base: the fine-tunes' own tensors (their merged rows). */
const ownWeights = (step: LowRankStep): TensorInfo[] =>
  step.inputs.filter((x) => x.tensor !== step.base).map((x) => x.tensor);

/** The factor tensors of every input, in input order (A then B). */
export function factorTensors(step: LowRankStep): TensorInfo[] {
  return step.inputs.flatMap((x) =>
    x.factor === undefined ? [] : x.factor.a === undefined ? [x.factor.b] : [x.factor.a, x.factor.b],
  );
}

/** The reads of factorTensors: each whole. */
const factorReads = (step: LowRankStep): TaskRead[] =>
  factorTensors(step).map((tensor) => ({ tensor, start: 0, length: tensor.byteLength }));

/** The byte ranges of its inputs a low-rank step reads: [tensor, start, length] (read-ahead). */
export function lowRankRanges(step: LowRankStep, gramOnly: boolean): [TensorInfo, number, number][] {
  const ranges = factorReads(step).map((r): [TensorInfo, number, number] => [r.tensor, r.start, r.length]);
  if (gramOnly && step.factorsOnly) return ranges;
  const { cols } = storedShape(step);
  const merged = (t: TensorInfo): number => mergedRowsOf(step) * cols * sizeOf(t);
  ranges.push([step.base, 0, gramOnly ? merged(step.base) : step.base.byteLength]);
  for (const t of ownWeights(step)) ranges.push([t, 0, merged(t)]);
  return ranges;
}

/** Input bytes the step needs, each counted once. */
export function lowRankInputBytes(step: LowRankStep, gramOnly: boolean): number {
  return lowRankRanges(step, gramOnly).reduce((a, [, , n]) => a + n, 0);
}

/** Bytes read again by a mixed step's second pass (its windows, unless the session holds them). */
export function lowRankSecondPass(step: LowRankStep, gramOnly: boolean): number {
  if (gramOnly || step.factorsOnly) return 0;
  const rows = mergedRowsOf(step) * storedShape(step).cols;
  return [step.base, ...ownWeights(step)].reduce((a, t) => a + rows * sizeOf(t), 0);
}

/** Rows per window: what half of each ring holds, what one read may span, float64 rows bounded too. */
function windowRows(step: LowRankStep, sizing: Sizing, ctx: StepContext): number {
  const { cols } = storedShape(step);
  const f64 = step.factorsOnly ? 0 : step.inputs.filter((x) => x.factor !== undefined).length * 8;
  const limits = [
    Math.floor(ctx.options.window / (cols * Math.max(8, ...[step.base, ...ownWeights(step)].map(sizeOf)))),
  ];
  // Rows read into the input ring (mapped inputs are not), after each read's alignment slack; the
  // output's block slack.
  const ringed = [step.base, ...ownWeights(step)].filter((t) => !isMapped(ctx.options.source, t));
  if (ringed.length > 0)
    limits.push(Math.floor(sizing.readRoom(ringed) / (cols * ringed.reduce((a, t) => a + sizeOf(t), 0))));
  if (ctx.options.sink !== undefined)
    limits.push(Math.floor(sizing.writeRoom / (cols * floatSize(step.outDtype))));
  // The float64 rows of a window live outside the rings: as much as the input ring's half again at most.
  if (f64 > 0) limits.push(Math.floor(Math.max(sizing.inRing / 2, ctx.options.window) / (cols * f64)));
  return Math.max(1, Math.min(mergedRowsOf(step), ...limits));
}

/** Who input k of the step is, in messages. */
const whoOf = (step: LowRankStep, ctx: StepContext, k: number): string =>
  ctx.options.modelLabel(step.modelIndices[k]!);

/** The factors of every input from the views of factorReads, copied out of the ring. */
function factorsFrom(step: LowRankStep, views: readonly Uint8Array[]): (LowRankFactor | undefined)[] {
  let v = 0;
  return step.inputs.map((x) => {
    const f = x.factor;
    if (f === undefined) return undefined;
    const a = f.a === undefined ? ONE : views[v++]!.slice();
    const b = views[v++]!.slice();
    return {
      a,
      aDtype: f.a === undefined ? 'F32' : (f.a.dtype as FloatDType),
      b,
      bDtype: f.b.dtype as FloatDType,
      rank: f.rank,
      scale: f.scale,
      transposed: f.transposed,
    };
  });
}

/** A non-finite Gram entry from factors: the factor holding the NaN/Inf named, else an overflow. */
async function checkFactorsFinite(
  step: LowRankStep,
  gram: Float64Array,
  factors: readonly (LowRankFactor | undefined)[],
  ctx: StepContext,
): Promise<void> {
  const inputs: ScannedInput[] = [];
  const bytes: Uint8Array[] = [];
  step.inputs.forEach((x, k) => {
    const f = factors[k];
    if (x.factor === undefined || f === undefined) return;
    for (const [t, b, dtype] of [
      [x.factor.a, f.a, f.aDtype],
      [x.factor.b, f.b, f.bDtype],
    ] as const) {
      if (t === undefined) continue;
      inputs.push({ dtype, file: t.file, who: whoOf(step, ctx, k), what: `of ${t.name}` });
      bytes.push(b);
    }
  });
  if (inputs.length === 0) return;
  await checkFiniteInputs(step.name, gram, inputs, async (visit) => {
    for (let i = 0; i < bytes.length; i++) await visit(i, bytes[i]!, 0);
  });
}

/** A NaN or Inf the fused output or materializeRows found in the rows of `tensor` (owned by `who`). */
function nonFiniteIn(
  step: LowRankStep,
  tensor: TensorInfo,
  who: string,
  window: RowWindow,
  cols: number,
  cause: unknown,
): unknown {
  if (!(cause instanceof ModelStockError) || cause.code !== 'NON_FINITE') return cause;
  const at = findNonFinite(window.base, tensor.dtype as FloatDType);
  const element = window.firstRow * cols + Math.max(0, at);
  return new ModelStockError('NON_FINITE', `NaN or Inf at element ${element} in ${who}`, {
    file: tensor.file,
    tensor: step.name,
    cause,
  });
}

/**
 * What an adapter output (issue 19) needs beside the plan step's factors (`step.inputs[k].factor`:
 * tensors, rank, scale, orientation, module): the ratio t per unit (one, or one per stored row
 * filter-wise) and the factors' bytes as read (undefined for an input without factors).
 */
export interface LowRankTerms {
  readonly t: Float64Array;
  readonly factors: readonly (LowRankFactor | undefined)[];
}

/**
 * The tasks of one low-rank step. `onTerms` (optional) receives t and the factors once known: the hook
 * an output step other than the dense one (an adapter writer) takes them from.
 */
export function* lowRankTasks(
  step: LowRankStep,
  index: number,
  sizing: Sizing,
  ctx: StepContext,
  onTerms?: (terms: LowRankTerms) => void,
): Generator<Task> {
  if (step.factorsOnly) yield* factorTasks(step, index, sizing, ctx, onTerms);
  else yield* mixedTasks(step, index, sizing, ctx, onTerms);
  if (ctx.options.sink !== undefined && step.mergedNumel < step.numel)
    yield* baseTailTasks(step, index, sizing);
}

/** Row windows [firstRow, count] of the merged rows. */
function windowsOf(step: LowRankStep, rowsPer: number): [number, number][] {
  const rows = mergedRowsOf(step);
  const out: [number, number][] = [];
  for (let first = 0; first < rows; first += rowsPer) out.push([first, Math.min(rowsPer, rows - first)]);
  return out;
}

/**
 * What the tasks of one low-rank step share: its session (opened once, closed by the last write, or
 * right after the Gram when nothing is written, on success or failure) and t, known once `settle` has
 * run; the writes wait on `known`.
 */
class LowRankState<S extends Pick<TensorSession, 'close'>> {
  session: S | undefined;
  t: Float64Array | undefined;
  readonly known: Promise<void>;
  private resolveKnown!: () => void;

  constructor(
    private readonly step: LowRankStep,
    private readonly ctx: StepContext,
    private readonly writing: boolean,
  ) {
    this.known = new Promise<void>((resolve) => (this.resolveKnown = resolve));
  }

  /** The session, opened by `make` and tracked the first time. */
  open(make: () => S): S {
    if (this.session === undefined) {
      this.session = make();
      this.ctx.sessions.add(this.session);
    }
    return this.session;
  }

  async close(): Promise<void> {
    if (this.session === undefined) return;
    this.ctx.sessions.delete(this.session);
    await this.session.close();
  }

  /**
   * The Gram from `gramOf` (which runs its own checks), the factors' check, then t and the step's
   * report; `onTerms` gets t and the factors, and the writes may start.
   */
  async settle(
    gramOf: () => Promise<Float64Array>,
    factors: readonly (LowRankFactor | undefined)[],
    onTerms: ((terms: LowRankTerms) => void) | undefined,
  ): Promise<void> {
    const { step, ctx } = this;
    let t: Float64Array;
    let report: TensorReport;
    try {
      const gram = await gramOf();
      await checkFactorsFinite(step, gram, factors, ctx);
      ({ t, report } = ratios(step, gram, ctx.options.theta, ctx.warn, ctx.negative));
    } finally {
      if (!this.writing) await this.close();
    }
    this.t = t;
    ctx.report(report);
    onTerms?.({ t, factors });
    this.resolveKnown();
  }
}

function* factorTasks(
  step: LowRankStep,
  index: number,
  sizing: Sizing,
  ctx: StepContext,
  onTerms: ((terms: LowRankTerms) => void) | undefined,
): Generator<Task> {
  const { backend, sink } = ctx.options;
  const { rows, cols } = storedShape(step);
  const mergedRows = mergedRowsOf(step);
  const writing = sink !== undefined && mergedRows > 0;
  const state = new LowRankState<LowRankSession>(step, ctx, writing);
  yield {
    step: index,
    name: step.name,
    reads: () => factorReads(step),
    outBytes: 0,
    last: false,
    run: async (views) => {
      const factors = factorsFrom(step, views);
      const spec = {
        name: step.name,
        rows,
        cols,
        baseDtype: step.base.dtype as FloatDType,
        outDtype: step.outDtype,
        filterWise: step.unitLength < step.mergedNumel,
        ...(mergedRows < rows ? { mergedRows } : {}),
        factors,
      };
      const session = state.open(() => backend.openLowRank(spec));
      await state.settle(() => session.gram(), factors, onTerms);
      return undefined;
    },
  };
  if (!writing) return;
  const inSize = sizeOf(step.base);
  const outSize = floatSize(step.outDtype);
  const windows = windowsOf(step, windowRows(step, sizing, ctx));
  for (const [k, [firstRow, count]] of windows.entries()) {
    const offset = firstRow * cols * outSize;
    yield {
      step: index,
      name: step.name,
      after: state.known,
      reads: () => [{ tensor: step.base, start: firstRow * cols * inSize, length: count * cols * inSize }],
      outBytes: count * cols * outSize,
      outAt: { name: step.name, offset },
      last: false,
      run: async ([base], out) => {
        const window: RowWindow = { firstRow, rows: count, base: base! };
        await state.session!.interpolate(window, state.t!, out!).catch((e: unknown) => {
          throw nonFiniteIn(step, step.base, 'the base', window, cols, e);
        });
        if (k === windows.length - 1) await state.close();
        return { name: step.name, offset, data: out! };
      },
    };
  }
}

/** The dense path's spec for a mixed step: each low-rank fine-tune given as float64 rows. */
function mixedSpec(step: LowRankStep): TensorSpec {
  return {
    name: step.name,
    dtypes: [
      step.base.dtype as FloatDType,
      ...step.inputs.map((x) => (x.factor !== undefined ? 'F64' : (x.tensor.dtype as FloatDType))),
    ],
    outDtype: step.outDtype,
    numel: step.mergedNumel,
    unitLength: step.unitLength,
  };
}

function* mixedTasks(
  step: LowRankStep,
  index: number,
  sizing: Sizing,
  ctx: StepContext,
  onTerms: ((terms: LowRankTerms) => void) | undefined,
): Generator<Task> {
  const { backend, source, sink } = ctx.options;
  const { cols } = storedShape(step);
  const spec = mixedSpec(step);
  const own = ownWeights(step);
  const windows = windowsOf(step, windowRows(step, sizing, ctx));
  let factors: (LowRankFactor | undefined)[] = [];
  const writing = sink !== undefined && windows.length > 0;
  const state = new LowRankState<TensorSession>(step, ctx, writing);
  const open = (): TensorSession => state.open(() => backend.openTensor(spec));
  /** The reads of rows [firstRow, firstRow + count): the base, then each own tensor. */
  const readsOf = (firstRow: number, count: number): TaskRead[] =>
    [step.base, ...own].map((tensor) => ({
      tensor,
      start: firstRow * cols * sizeOf(tensor),
      length: count * cols * sizeOf(tensor),
    }));
  /** The session's inputs for a window: the base, then per fine-tune its weights or its float64 rows. */
  const inputsOf = async (
    firstRow: number,
    count: number,
    views: readonly Uint8Array[],
  ): Promise<Uint8Array[]> => {
    const base = views[0]!;
    const inputs: Uint8Array[] = [base];
    let v = 1;
    for (const [k, x] of step.inputs.entries()) {
      const weights = x.tensor === step.base ? base : views[v++]!;
      const factor = factors[k];
      if (factor === undefined) {
        inputs.push(weights);
        continue;
      }
      const out = new Uint8Array(count * cols * 8);
      const window: RowWindow = { firstRow, rows: count, base: weights };
      await backend
        .materializeRows({
          name: step.name,
          rows: x.tensor.shape[0] ?? 1,
          cols,
          baseDtype: x.tensor.dtype as FloatDType,
          factor,
          window,
          out,
        })
        .catch((e: unknown) => {
          throw nonFiniteIn(
            step,
            x.tensor,
            x.tensor === step.base ? 'the base' : whoOf(step, ctx, k),
            window,
            cols,
            e,
          );
        });
      inputs.push(out);
    }
    return inputs;
  };
  /** A window's inputs read outside the pipeline (the NaN scan after a non-finite Gram). */
  const readWindow = async (firstRow: number, count: number): Promise<Uint8Array[]> => {
    const views: Uint8Array[] = [];
    for (const r of readsOf(firstRow, count)) {
      const bytes = new Uint8Array(r.length);
      await source.readInto(r.tensor, r.start, bytes);
      views.push(bytes);
    }
    return inputsOf(firstRow, count, views);
  };

  yield {
    step: index,
    name: step.name,
    reads: () => factorReads(step),
    outBytes: 0,
    last: false,
    run: async (views) => {
      factors = factorsFrom(step, views);
      return undefined;
    },
  };
  for (const [firstRow, count] of windows) {
    yield {
      step: index,
      name: step.name,
      reads: () => readsOf(firstRow, count),
      outBytes: 0,
      last: false,
      run: async (views) => {
        const inputs = await inputsOf(firstRow, count, views);
        await open().gram({ firstElement: firstRow * cols, count: count * cols, inputs });
        return undefined;
      },
    };
  }
  yield {
    step: index,
    name: step.name,
    reads: () => [],
    outBytes: 0,
    last: false,
    run: async () => {
      const s = open();
      const gramOf = async (): Promise<Float64Array> => {
        const gram = await s.gramResult();
        const scanned: ScannedInput[] = spec.dtypes.map((dtype, i) => ({
          dtype,
          file: i === 0 ? step.base.file : step.inputs[i - 1]!.tensor.file,
          who: i === 0 ? 'the base' : whoOf(step, ctx, i - 1),
        }));
        await checkFiniteInputs(step.name, gram, scanned, async (visit) => {
          for (const [firstRow, count] of windows) {
            const inputs = await readWindow(firstRow, count);
            for (let i = 0; i < inputs.length; i++) await visit(i, inputs[i]!, firstRow * cols);
          }
        });
        return gram;
      };
      await state.settle(gramOf, factors, onTerms);
      return undefined;
    },
  };
  if (!writing) return;
  const outSize = floatSize(step.outDtype);
  for (const [k, [firstRow, count]] of windows.entries()) {
    const first = firstRow * cols;
    yield {
      step: index,
      name: step.name,
      after: state.known,
      reads: () => (state.session!.holds(first, count * cols) ? [] : readsOf(firstRow, count)),
      outBytes: count * cols * outSize,
      outAt: { name: step.name, offset: first * outSize },
      last: false,
      run: async (views, out) => {
        const inputs = views.length > 0 ? await inputsOf(firstRow, count, views) : undefined;
        await state.session!.interpolate(
          { firstElement: first, count: count * cols, inputs },
          state.t!,
          out!,
        );
        if (k === windows.length - 1) await state.close();
        return { name: step.name, offset: first * outSize, data: out! };
      },
    };
  }
}

export type { FineTuneInput };
