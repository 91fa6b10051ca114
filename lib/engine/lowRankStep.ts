/**
 * Tensors a LoRA adapter changes with low-rank factors (plan.ts LowRankStep), on the backend's
 * low-rank steps (backend.ts):
 *
 * - **factors only** (every fine-tune an adapter of the base, or leaving the tensor as it is): the Gram
 *   matrix from the factors alone — no base weight read, no R × C product formed — then, for a merge,
 *   the fused output over row windows of the base, W0 + (t/N)·Σ s_i·B_i·A_i, each window read once and
 *   written while the next computes (two arenas alternate);
 * - **mixed** (a full fine-tune, a saved whole tensor, or an adapter over another model among the
 *   inputs): each low-rank fine-tune formed in row windows as float64 (materializeRows: W + s·B·A, never
 *   rounded to a stored dtype), then the dense path's two passes over the same windows.
 *
 * The factors are read once per tensor into buffers of their own (a few MB); windows come from the
 * scheduler's arenas, so the memory budget bounds the rest whatever the tensor's size.
 */
import { floatSize, type FloatDType } from '../dtype';
import { ModelStockError } from '../errors';
import { findNonFinite } from '../math/nonfinite';
import type { FineTuneInput, LowRankStep } from '../plan/plan';
import type { TensorInfo } from '../checkpoint/types';
import type { TensorReport } from '../types';
import type { Arena } from './arena';
import type { LowRankFactor, LowRankSpec, RowWindow, TensorSpec } from './backend';
import { acquire, type StepContext } from './context';
import { copyBaseTail } from './copy';
import { checkFiniteInputs, type ScannedInput } from './finite';
import { ratios } from './report';

/** Alignment slack an arena needs per buffer taken from it. */
const SLACK = 64;

/** A bias's task vector s·b is the factor pair B = b [R, 1], A = [[1]]. */
const ONE = new Uint8Array(new Float32Array([1]).buffer);

/** The stored tensor as [rows, cols] = [shape[0], rest] (a bias [R] is [R, 1]). */
export function storedShape(step: Pick<LowRankStep, 'shape' | 'numel'>): { rows: number; cols: number } {
  const rows = step.shape[0] ?? 1;
  return { rows, cols: step.numel / rows };
}

/** Rows merged (a row prefix when vocabularies differ). */
const mergedRowsOf = (step: LowRankStep): number => step.mergedNumel / storedShape(step).cols;

/** Weights read beside the base: the fine-tunes' own tensors (their merged rows). */
const ownWeights = (step: LowRankStep): TensorInfo[] =>
  step.inputs.filter((x) => x.tensor !== step.base).map((x) => x.tensor);

/** The byte ranges of its inputs a low-rank step reads: [tensor, start, length] (read-ahead). */
export function lowRankRanges(step: LowRankStep, gramOnly: boolean): [TensorInfo, number, number][] {
  const ranges: [TensorInfo, number, number][] = [];
  for (const x of step.inputs) {
    if (x.factor?.a !== undefined) ranges.push([x.factor.a, 0, x.factor.a.byteLength]);
    if (x.factor !== undefined) ranges.push([x.factor.b, 0, x.factor.b.byteLength]);
  }
  if (gramOnly && step.factorsOnly) return ranges;
  const { cols } = storedShape(step);
  const merged = (t: TensorInfo): number => mergedRowsOf(step) * cols * floatSize(t.dtype as FloatDType);
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
  const { cols } = storedShape(step);
  const rows = mergedRowsOf(step);
  return [step.base, ...ownWeights(step)].reduce(
    (a, t) => a + rows * cols * floatSize(t.dtype as FloatDType),
    0,
  );
}

/** Bytes per merged row of one window: every buffer the step takes for it. */
function rowBytes(step: LowRankStep, sink: boolean): number {
  const { cols } = storedShape(step);
  const size = (t: TensorInfo): number => floatSize(t.dtype as FloatDType);
  const out = sink ? floatSize(step.outDtype) : 0;
  if (step.factorsOnly) return cols * (size(step.base) + out);
  let perElement = size(step.base) + out;
  for (const x of step.inputs) {
    if (x.tensor !== step.base) perElement += size(x.tensor);
    if (x.factor !== undefined) perElement += 8;
  }
  return cols * perElement;
}

/** What one arena holds to do the whole tensor in one window (the scheduler sizes its arenas by it). */
export function lowRankFootprint(step: LowRankStep): number {
  return mergedRowsOf(step) * rowBytes(step, true) + SLACK * (step.inputs.length * 2 + 2);
}

/** Rows per window in `arena`: what it holds, and what one read may span. */
function windowRows(step: LowRankStep, arena: Arena, ctx: StepContext, sink: boolean): number {
  const { cols } = storedShape(step);
  const buffers = step.inputs.length * 2 + 2;
  const byRoom = Math.floor((arena.capacity - SLACK * buffers) / rowBytes(step, sink));
  const widest = Math.max(
    8,
    ...[step.base, ...ownWeights(step)].map((t) => floatSize(t.dtype as FloatDType)),
  );
  const byRead = Math.floor(ctx.options.window / (cols * widest));
  return Math.max(1, Math.min(mergedRowsOf(step), byRoom, byRead));
}

/** The factors of every input, read once into buffers of their own (undefined: no factor). */
async function readFactors(step: LowRankStep, ctx: StepContext): Promise<(LowRankFactor | undefined)[]> {
  const { source } = ctx.options;
  const read = async (t: TensorInfo): Promise<Uint8Array> => {
    ctx.checkCancelled();
    const into = new Uint8Array(t.byteLength);
    await source.readInto(t, 0, into);
    ctx.onRead(t.byteLength);
    return into;
  };
  const out: (LowRankFactor | undefined)[] = [];
  for (const x of step.inputs) {
    const f = x.factor;
    if (f === undefined) {
      out.push(undefined);
      continue;
    }
    out.push({
      a: f.a === undefined ? ONE : await read(f.a),
      aDtype: f.a === undefined ? 'F32' : (f.a.dtype as FloatDType),
      b: await read(f.b),
      bDtype: f.b.dtype as FloatDType,
      rank: f.rank,
      scale: f.scale,
      transposed: f.transposed,
    });
  }
  return out;
}

/** Who input k of the step is, in messages. */
const whoOf = (step: LowRankStep, ctx: StepContext, k: number): string =>
  ctx.options.modelLabel(step.modelIndices[k]!);

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

/** A NaN or Inf the fused output found in the rows of `tensor` (owned by `who`), named with its element. */
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

export interface LowRankResult {
  readonly report: TensorReport;
  /**
   * What an adapter output (issue 19) needs beside the plan step's factors (`step.inputs[k].factor`:
   * tensors, rank, scale, orientation, module): the ratio t per unit (one, or one per stored row
   * filter-wise) and the factors' bytes as read (undefined for an input without factors).
   */
  readonly t: Float64Array;
  readonly factors: readonly (LowRankFactor | undefined)[];
  /** The writes still in flight from each arena (the scheduler waits for them before reusing it). */
  readonly writing: readonly [Promise<void>, Promise<void>];
}

/**
 * Merges (or, without a sink, inspects) one low-rank step. `arenas` are the scheduler's two slots and
 * `writing` the writes still in flight from each; windows alternate between them.
 */
export async function mergeLowRank(
  step: LowRankStep,
  arenas: readonly [Arena, Arena],
  writing: readonly [Promise<void>, Promise<void>],
  ctx: StepContext,
  progress: (tensor: string) => void,
): Promise<LowRankResult> {
  const factors = await readFactors(step, ctx);
  return step.factorsOnly
    ? mergeFactors(step, factors, arenas, writing, ctx, progress)
    : mergeMixed(step, factors, arenas, writing, ctx, progress);
}

async function mergeFactors(
  step: LowRankStep,
  factors: readonly (LowRankFactor | undefined)[],
  arenas: readonly [Arena, Arena],
  writing: readonly [Promise<void>, Promise<void>],
  ctx: StepContext,
  progress: (tensor: string) => void,
): Promise<LowRankResult> {
  const { backend, source, sink, theta } = ctx.options;
  const { rows, cols } = storedShape(step);
  const mergedRows = mergedRowsOf(step);
  const spec: LowRankSpec = {
    name: step.name,
    rows,
    cols,
    baseDtype: step.base.dtype as FloatDType,
    outDtype: step.outDtype,
    filterWise: step.unitLength < step.mergedNumel,
    ...(mergedRows < rows ? { mergedRows } : {}),
    factors,
  };
  const pending: [Promise<void>, Promise<void>] = [writing[0], writing[1]];
  const session = backend.openLowRank(spec);
  let report: TensorReport;
  let t: Float64Array;
  try {
    ctx.checkCancelled();
    const gram = await session.gram();
    await checkFactorsFinite(step, gram, factors, ctx);
    ({ t, report } = ratios(step, gram, theta, ctx.warn, ctx.negative));
    // An adapter output (--out-format peft) writes this tensor as merged factors instead: it runs as a
    // Gram pass (no sink: no base weight read), the hook writing what the fused output would have.
    if ((await ctx.options.lowRankOutput?.(step, factors, t)) === true || sink === undefined)
      return { report, t, factors, writing: pending };
    const inSize = floatSize(spec.baseDtype);
    const outSize = floatSize(step.outDtype);
    let k = 0;
    for (let firstRow = 0; firstRow < mergedRows; k++) {
      const slot = k % 2;
      const arena = arenas[slot]!;
      const count = Math.min(windowRows(step, arena, ctx, true), mergedRows - firstRow);
      // This arena's previous window must be written before its buffers are reused.
      await pending[slot];
      ctx.checkCancelled();
      arena.reset();
      const start = firstRow * cols * inSize;
      const base = await acquire(source, arena, step.base, start, count * cols * inSize);
      ctx.onRead(base.byteLength);
      const out = arena.take(count * cols * outSize);
      const window: RowWindow = { firstRow, rows: count, base };
      await session.interpolate(window, t, out).catch((e: unknown) => {
        throw nonFiniteIn(step, step.base, 'the base', window, cols, e);
      });
      source.release?.(step.base, start, base.byteLength);
      const write = sink.write(step.name, firstRow * cols * outSize, out);
      write.catch(() => undefined); // awaited before reuse, or by the scheduler
      pending[slot] = write;
      firstRow += count;
      progress(step.name);
    }
  } finally {
    await session.close();
  }
  if (step.mergedNumel < step.numel) {
    await Promise.all(pending);
    await copyBaseTail(step, arenas[0], ctx, progress);
  }
  return { report, t, factors, writing: pending };
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

async function mergeMixed(
  step: LowRankStep,
  factors: readonly (LowRankFactor | undefined)[],
  arenas: readonly [Arena, Arena],
  writing: readonly [Promise<void>, Promise<void>],
  ctx: StepContext,
  progress: (tensor: string) => void,
): Promise<LowRankResult> {
  const { backend, source, sink, theta } = ctx.options;
  const { cols } = storedShape(step);
  const mergedRows = mergedRowsOf(step);
  const arena = arenas[0];
  // One arena, windows one after another: wait for whatever either arena is still writing.
  await Promise.all(writing);
  const rowsPer = windowRows(step, arena, ctx, sink !== undefined);
  const size = (t: TensorInfo): number => floatSize(t.dtype as FloatDType);
  const spec = mixedSpec(step);
  let readSoFar = 0;

  /** The base's and every fine-tune's bytes of rows [firstRow, firstRow + count), and their release. */
  const windowInputs = async (
    firstRow: number,
    count: number,
  ): Promise<{ inputs: Uint8Array[]; release: () => void }> => {
    ctx.checkCancelled();
    const views: [TensorInfo, number, Uint8Array][] = [];
    const read = async (t: TensorInfo): Promise<Uint8Array> => {
      const start = firstRow * cols * size(t);
      const v = await acquire(source, arena, t, start, count * cols * size(t));
      ctx.onRead(v.byteLength);
      readSoFar += v.byteLength;
      views.push([t, start, v]);
      return v;
    };
    const base = await read(step.base);
    const inputs: Uint8Array[] = [base];
    for (const [k, x] of step.inputs.entries()) {
      const weights = x.tensor === step.base ? base : await read(x.tensor);
      const factor = factors[k];
      if (factor === undefined) {
        inputs.push(weights);
        continue;
      }
      const out = arena.take(count * cols * 8);
      const who = x.tensor === step.base ? 'the base' : whoOf(step, ctx, k);
      await backend
        .materializeRows({
          name: step.name,
          rows: x.tensor.shape[0] ?? 1,
          cols,
          baseDtype: x.tensor.dtype as FloatDType,
          factor,
          window: { firstRow, rows: count, base: weights },
          out,
        })
        .catch((e: unknown) => {
          throw nonFiniteIn(step, x.tensor, who, { firstRow, rows: count, base: weights }, cols, e);
        });
      inputs.push(out);
    }
    return {
      inputs,
      release: () => views.forEach(([t, start, v]) => source.release?.(t, start, v.byteLength)),
    };
  };

  // One window holds the whole tensor: its inputs stay in the arena from the Gram pass to the output.
  const single = rowsPer >= mergedRows;
  let kept: { inputs: Uint8Array[]; release: () => void; bytes: number } | undefined;
  const session = backend.openTensor(spec);
  let report: TensorReport;
  let t: Float64Array;
  try {
    for (let firstRow = 0; firstRow < mergedRows; firstRow += rowsPer) {
      const count = Math.min(rowsPer, mergedRows - firstRow);
      arena.reset();
      const before = readSoFar;
      const window = await windowInputs(firstRow, count);
      await session.gram({ firstElement: firstRow * cols, count: count * cols, inputs: window.inputs });
      if (single) kept = { ...window, bytes: readSoFar - before };
      else window.release();
      progress(step.name);
    }
    const gram = await session.gramResult();
    const scanned: ScannedInput[] = spec.dtypes.map((dtype, i) => ({
      dtype,
      file: i === 0 ? step.base.file : step.inputs[i - 1]!.tensor.file,
      who: i === 0 ? 'the base' : whoOf(step, ctx, i - 1),
    }));
    await checkFiniteInputs(step.name, gram, scanned, async (visit) => {
      if (kept !== undefined) {
        for (let i = 0; i < kept.inputs.length; i++) await visit(i, kept.inputs[i]!, 0);
        return;
      }
      for (let firstRow = 0; firstRow < mergedRows; firstRow += rowsPer) {
        const count = Math.min(rowsPer, mergedRows - firstRow);
        arena.reset();
        const { inputs, release } = await windowInputs(firstRow, count);
        for (let i = 0; i < inputs.length; i++) await visit(i, inputs[i]!, firstRow * cols);
        release();
      }
    });
    await checkFactorsFinite(step, gram, factors, ctx);
    ({ t, report } = ratios(step, gram, theta, ctx.warn, ctx.negative));
    if (sink === undefined) return { report, t, factors, writing: [Promise.resolve(), Promise.resolve()] };
    const outSize = floatSize(step.outDtype);
    for (let firstRow = 0; firstRow < mergedRows; firstRow += rowsPer) {
      const count = Math.min(rowsPer, mergedRows - firstRow);
      const first = firstRow * cols;
      let window = kept;
      if (window !== undefined) {
        ctx.onRead(window.bytes); // what a second pass would have read (progress counts both passes)
      } else {
        arena.reset();
        if (!session.holds(first, count * cols))
          window = { ...(await windowInputs(firstRow, count)), bytes: 0 };
      }
      const out = arena.take(count * cols * outSize);
      await session.interpolate({ firstElement: first, count: count * cols, inputs: window?.inputs }, t, out);
      window?.release();
      kept = undefined;
      await sink.write(step.name, first * outSize, out);
      progress(step.name);
    }
  } finally {
    kept?.release();
    await session.close();
  }
  await copyBaseTail(step, arena, ctx, progress);
  return { report, t, factors, writing: [Promise.resolve(), Promise.resolve()] };
}

export type { FineTuneInput };
