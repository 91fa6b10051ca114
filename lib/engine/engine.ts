import { FloatDType, floatSize } from '../dtype';
import { ModelStockError } from '../errors';
import { decodeFloats, encodeFloats } from '../math/codec';
import { findNonFinite } from '../math/nonfinite';
import { ThetaRule, unitRatio } from '../math/ratio';
import type { CopyStep, MergeStep, Plan, PlanStep } from '../plan/plan';
import type { TensorInfo } from '../safetensors/types';
import type { MergeProgress, RatioStats, TensorReport } from '../types';
import { Arena } from './arena';
import { Backend, GramJob, InputWindow, gramSize } from './backend';
import type { TensorSource as FullSource } from './io';

/** Where tensor bytes come from: copies into arena buffers, or zero-copy views of mapped files. */
export type TensorSource = Pick<FullSource, 'readInto' | 'view' | 'release'>;
/** Where output tensor bytes go (positional writes into the output shards). */
export interface TensorSink {
  write(name: string, byteOffsetInTensor: number, data: Uint8Array): Promise<void>;
}

export interface EngineOptions {
  readonly backend: Backend;
  readonly source: TensorSource;
  readonly sink: TensorSink;
  readonly theta: ThetaRule;
  /** Budget for all tensor buffers, bytes. Two pipeline slots share it. */
  readonly memory: number;
  /** Largest single read, bytes. */
  readonly window: number;
  readonly modelLabel: (i: number) => string;
  readonly onProgress?: (p: MergeProgress) => void;
  readonly onWarning?: (message: string) => void;
}

export interface EngineResult {
  readonly tensors: TensorReport[];
  readonly warnings: string[];
  readonly bytesRead: number;
  readonly bytesWritten: number;
}

/** Smallest arena that still makes progress (a few elements of each input per window). */
const MIN_ARENA = 1024;

interface Slot {
  readonly arena: Arena;
  /** The write of this slot's output, not yet finished (write-behind). */
  writing: Promise<void>;
  /** A prefetch into this slot: the step index and its read. */
  prefetch: { index: number; views: Uint8Array[]; read: Promise<void> } | undefined;
}

function elementSizes(step: MergeStep): number[] {
  return [step.base, ...step.inputs].map((t) => floatSize(t.dtype as FloatDType));
}

/** Bytes one merge step needs to hold all inputs and its output at once. */
function wholeFootprint(step: MergeStep): number {
  return Arena.footprint([step.base.byteLength, ...step.inputs.map((t) => t.byteLength), step.outByteLength]);
}

function stats(values: ArrayLike<number>): RatioStats {
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i] as number;
    if (v < min) min = v;
    if (v > max) max = v;
    sum += v;
  }
  return { min, mean: values.length > 0 ? sum / values.length : 0, max };
}

/**
 * Runs a plan: for each base tensor, reads its N+1 inputs, runs the Gram pass, turns the Gram matrix
 * into the interpolation ratio t per unit, runs the interpolation pass and hands the bytes to the sink.
 *
 * A tensor whose inputs and output fit half the memory budget is read once, into one of two arenas, while
 * the previous tensor computes in the other (read-ahead) and its output is still being written
 * (write-behind). A larger tensor is processed in windows, in two passes (Gram, then interpolation).
 */
export async function runPlan(plan: Plan, opts: EngineOptions): Promise<EngineResult> {
  const steps = plan.steps;
  const slotCapacity = Math.max(MIN_ARENA, Math.min(Math.floor(opts.memory / 2), maxFootprint(steps)));
  const slots: Slot[] = [0, 1].map(() => ({
    arena: new Arena(slotCapacity),
    writing: Promise.resolve(),
    prefetch: undefined,
  }));
  const fitsWhole = (s: PlanStep): boolean =>
    s.action === 'merge' &&
    wholeFootprint(s) <= slotCapacity &&
    [s.base, ...s.inputs].every((t) => t.byteLength <= opts.window);

  const bytesTotal = steps.reduce(
    (sum, s) =>
      sum +
      (s.action === 'copy'
        ? s.base.byteLength
        : (fitsWhole(s) ? 1 : 2) * (s.base.byteLength + s.inputs.reduce((a, t) => a + t.byteLength, 0))),
    0,
  );
  let bytesDone = 0;
  let bytesWritten = 0;
  let tensorsDone = 0;
  const progress = (tensor: string | undefined): void =>
    opts.onProgress?.({ bytesDone, bytesTotal, tensorsDone, tensorsTotal: steps.length, tensor });
  const counted = (p: Promise<void>, bytes: number): Promise<void> =>
    p.then(() => {
      bytesDone += bytes;
    });

  const reports: TensorReport[] = [];
  const warnings: string[] = [];
  const negative: string[] = [];
  const warn = (m: string): void => {
    warnings.push(m);
    opts.onWarning?.(m);
  };

  const startWhole = (index: number, slot: Slot): void => {
    const step = steps[index] as MergeStep;
    const tensors = [step.base, ...step.inputs];
    const src = opts.source;
    if (src.view !== undefined) {
      // Mapped inputs: no copy; the kernels fault the pages in (the mapping was advised will-need).
      const views = tensors.map((t) => (src.view as NonNullable<typeof src.view>)(t, 0, t.byteLength));
      bytesDone += tensors.reduce((a, t) => a + t.byteLength, 0);
      slot.prefetch = { index, views, read: Promise.resolve() };
      return;
    }
    slot.arena.reset();
    const views = tensors.map((t) => slot.arena.take(t.byteLength));
    const read = Promise.all(
      tensors.map((t, i) => counted(src.readInto(t, 0, views[i] as Uint8Array), t.byteLength)),
    ).then(() => undefined);
    read.catch(() => undefined); // awaited later; never an unhandled rejection meanwhile
    slot.prefetch = { index, views, read };
  };

  const pendingWrites: Promise<void>[] = [];
  try {
    for (let k = 0; k < steps.length; k++) {
      const step = steps[k] as PlanStep;
      const slot = slots[k % 2] as Slot;
      const other = slots[(k + 1) % 2] as Slot;
      progress(step.name);
      if (step.action === 'copy') {
        await slot.writing;
        bytesWritten += await copyTensor(step, slot, opts, (n) => (bytesDone += n), progress);
        reports.push({
          name: step.name,
          action: 'copy',
          reason: step.reason,
          dtype: step.base.dtype,
          outDtype: step.outDtype,
          shape: step.base.shape,
        });
      } else if (fitsWhole(step)) {
        // fitsWhole holds only for merge steps.
        // Mapped inputs take no arena space: only the output waits for its slot's previous write.
        const zeroCopy = opts.source.view !== undefined;
        if (slot.prefetch?.index !== k) {
          if (!zeroCopy) await slot.writing;
          startWhole(k, slot);
        }
        const { views, read } = slot.prefetch as NonNullable<Slot['prefetch']>;
        slot.prefetch = undefined;
        await read;
        // Read-ahead: the next tensor's reads run while this one computes.
        const next = steps[k + 1];
        if (next !== undefined && fitsWhole(next)) {
          if (!zeroCopy) await other.writing;
          startWhole(k + 1, other);
        }
        if (zeroCopy) {
          await slot.writing;
          slot.arena.reset();
        }
        const out = slot.arena.take(step.outByteLength);
        const tensors = [step.base, ...step.inputs];
        const windowOf = (i: number): InputWindow => ({
          bytes: views[i] as Uint8Array,
          dtype: (tensors[i] as TensorInfo).dtype as FloatDType,
        });
        const job = {
          base: windowOf(0),
          models: step.inputs.map((_, i) => windowOf(i + 1)),
          count: step.numel,
          firstElement: 0,
          unitLength: step.unitLength,
        };
        const gram = new Float64Array(step.units * gramSize(step.inputs.length));
        if (step.numel > 0) await opts.backend.gram({ ...job, gram });
        await checkFinite(step, gram, opts, async (visit) => {
          for (let i = 0; i < views.length; i++) await visit(i, views[i] as Uint8Array, 0);
        });
        const { t, report } = ratios(step, gram, opts.theta, warn, negative);
        if (step.numel > 0) {
          await opts.backend.interpolate({ ...job, t, out, outDtype: step.outDtype });
        }
        for (const input of tensors) opts.source.release?.(input, 0, input.byteLength);
        slot.writing = opts.sink.write(step.name, 0, out);
        slot.writing.catch(() => undefined);
        pendingWrites.push(slot.writing);
        bytesWritten += out.byteLength;
        reports.push(report);
      } else {
        await Promise.all([slot.writing, other.writing, other.prefetch?.read]);
        const r = await mergeWindowed(step, slot, opts, (n) => (bytesDone += n), warn, negative);
        bytesWritten += step.outByteLength;
        reports.push(r);
      }
      tensorsDone++;
      progress(undefined);
    }
    await Promise.all(pendingWrites);
  } catch (e) {
    // Let in-flight reads and writes settle before the caller removes the output folder.
    await Promise.allSettled([...pendingWrites, ...slots.map((s) => s.prefetch?.read)]);
    throw e;
  }
  if (negative.length > 0) {
    warn(
      `negative cosine, t < 0 kept (the merge moves away from the fine-tunes' average) in ${negative.length} tensor(s): ${negative.join(', ')}`,
    );
  }
  return { tensors: reports, warnings, bytesRead: bytesDone, bytesWritten };
}

/** Tensor bytes [start, start + length): a view of the mapped file, or a copy read into the arena. */
async function acquire(
  source: TensorSource,
  arena: Arena,
  tensor: TensorInfo,
  start: number,
  length: number,
): Promise<Uint8Array> {
  if (source.view !== undefined) return source.view(tensor, start, length);
  const into = arena.take(length);
  await source.readInto(tensor, start, into);
  return into;
}

function maxFootprint(steps: readonly PlanStep[]): number {
  let m = 0;
  for (const s of steps) m = Math.max(m, s.action === 'merge' ? wholeFootprint(s) : s.base.byteLength);
  return m;
}

/**
 * A tensor copied from the base: byte for byte, or re-encoded (round-to-nearest-even, NaN and Inf kept)
 * when --out-dtype asks for another float dtype. Rare and small, so the conversion is plain TypeScript.
 */
async function copyTensor(
  step: CopyStep,
  slot: Slot,
  opts: EngineOptions,
  onRead: (n: number) => void,
  progress: (t: string) => void,
): Promise<number> {
  const from = step.base.dtype;
  const convert = step.outDtype !== from;
  const inSize = convert ? floatSize(from as FloatDType) : 1;
  const outSize = convert ? floatSize(step.outDtype as FloatDType) : 0;
  const perElement = inSize + outSize;
  // Elements per chunk (bytes for a plain copy): what the arena holds and what one read may span.
  // A conversion also decodes through a float64 scratch of the chunk: 4Mi elements keep that at 32 MiB.
  const fits = Math.floor(Math.min(slot.arena.capacity - 128, opts.window) / perElement);
  const chunk = Math.max(1, convert ? Math.min(fits, 1 << 22) : fits);
  const count = step.base.byteLength / inSize;
  for (let first = 0; first < count; first += chunk) {
    const n = Math.min(chunk, count - first);
    slot.arena.reset();
    const view = await acquire(opts.source, slot.arena, step.base, first * inSize, n * inSize);
    onRead(view.byteLength);
    const bytes = convert
      ? encodeFloats(
          decodeFloats(view, from as FloatDType),
          step.outDtype as FloatDType,
          slot.arena.take(n * outSize),
        )
      : view;
    await opts.sink.write(step.name, first * (convert ? outSize : 1), bytes);
    opts.source.release?.(step.base, first * inSize, view.byteLength);
    progress(step.name);
  }
  return step.outByteLength;
}

/** Two passes over windows for a tensor too large to hold at once. */
async function mergeWindowed(
  step: MergeStep,
  slot: Slot,
  opts: EngineOptions,
  onRead: (n: number) => void,
  warn: (m: string) => void,
  negative: string[],
): Promise<TensorReport> {
  const sizes = elementSizes(step);
  const outSize = floatSize(step.outDtype);
  const perElement = sizes.reduce((a, b) => a + b, 0) + outSize;
  const maxSize = Math.max(...sizes, outSize);
  // Elements per window: what the arena holds (with alignment slack) and what one read may span.
  const slack = 64 * (sizes.length + 1);
  let w = Math.floor((slot.arena.capacity - slack) / perElement);
  w = Math.max(1, Math.min(w, Math.floor(opts.window / maxSize)));
  const tensors = [step.base, ...step.inputs];

  const eachWindow = async (
    withOut: boolean,
    body: (
      job: GramJob['base'][],
      first: number,
      count: number,
      out: Uint8Array | undefined,
    ) => Promise<void>,
  ): Promise<void> => {
    for (let first = 0; first < step.numel; first += w) {
      const count = Math.min(w, step.numel - first);
      slot.arena.reset();
      const at = (i: number): number => first * (sizes[i] as number);
      const views = await Promise.all(
        tensors.map((t, i) => acquire(opts.source, slot.arena, t, at(i), count * (sizes[i] as number))),
      );
      onRead(views.reduce((a, v) => a + v.byteLength, 0));
      const out = withOut ? slot.arena.take(count * outSize) : undefined;
      await body(
        views.map((bytes, i) => ({ bytes, dtype: (tensors[i] as TensorInfo).dtype as FloatDType })),
        first,
        count,
        out,
      );
      tensors.forEach((t, i) => opts.source.release?.(t, at(i), (views[i] as Uint8Array).byteLength));
    }
  };

  const gram = new Float64Array(step.units * gramSize(step.inputs.length));
  await eachWindow(false, async (w, firstElement, count) => {
    await opts.backend.gram({
      base: w[0] as InputWindow,
      models: w.slice(1),
      count,
      firstElement,
      unitLength: step.unitLength,
      gram,
    });
  });
  await checkFinite(step, gram, opts, async (visit) => {
    for (let first = 0; first < step.numel; first += w) {
      const count = Math.min(w, step.numel - first);
      for (let i = 0; i < tensors.length; i++) {
        slot.arena.reset();
        const t = tensors[i] as TensorInfo;
        const at = first * (sizes[i] as number);
        const view = await acquire(opts.source, slot.arena, t, at, count * (sizes[i] as number));
        await visit(i, view, first);
        opts.source.release?.(t, at, view.byteLength);
      }
    }
  });
  const { t, report } = ratios(step, gram, opts.theta, warn, negative);
  await eachWindow(true, async (w, firstElement, count, out) => {
    const o = out as Uint8Array;
    await opts.backend.interpolate({
      base: w[0] as InputWindow,
      models: w.slice(1),
      count,
      firstElement,
      unitLength: step.unitLength,
      t,
      out: o,
      outDtype: step.outDtype,
    });
    await opts.sink.write(step.name, firstElement * outSize, o);
  });
  return report;
}

/**
 * NaN or Inf in any input makes a diagonal Gram entry non-finite (w_i − w0 is then NaN or ±Inf), so one
 * look at the Gram matrix clears a tensor; only on failure are the inputs scanned to name the model.
 */
async function checkFinite(
  step: MergeStep,
  gram: Float64Array,
  opts: EngineOptions,
  scan: (visit: (input: number, bytes: Uint8Array, firstElement: number) => Promise<void>) => Promise<void>,
): Promise<void> {
  let finite = true;
  for (let i = 0; i < gram.length; i++) {
    if (!Number.isFinite(gram[i] as number)) {
      finite = false;
      break;
    }
  }
  if (finite) return;
  const tensors = [step.base, ...step.inputs];
  let found: { input: number; element: number } | undefined;
  await scan(async (input, bytes, firstElement) => {
    if (found !== undefined && found.input <= input) return;
    const at = findNonFinite(bytes, (tensors[input] as TensorInfo).dtype as FloatDType);
    if (at >= 0) found = { input, element: firstElement + at };
  });
  if (found === undefined) {
    throw new ModelStockError(
      'NON_FINITE',
      'the task vectors are too large: their dot products overflow float64',
      { file: step.base.file, tensor: step.name },
    );
  }
  const who = found.input === 0 ? 'the base' : opts.modelLabel(step.modelIndices[found.input - 1] as number);
  throw new ModelStockError('NON_FINITE', `NaN or Inf at element ${found.element} in ${who}`, {
    file: (tensors[found.input] as TensorInfo).file,
    tensor: step.name,
  });
}

/** Gram → cosines → c → t per unit, with the report entry and the pole / negative-cosine warnings. */
function ratios(
  step: MergeStep,
  gram: Float64Array,
  theta: ThetaRule,
  warn: (m: string) => void,
  negative: string[],
): { t: Float64Array; report: TensorReport } {
  const n = step.inputs.length;
  const p = gramSize(n);
  const t = new Float64Array(step.units);
  const base = {
    name: step.name,
    action: 'merge' as const,
    ...(step.note !== undefined ? { reason: step.note } : {}),
    n,
    models: step.modelIndices,
    dtype: step.base.dtype,
    outDtype: step.outDtype,
    shape: step.shape,
  };
  if (step.units === 1) {
    const r = unitRatio(gram, 0, n, theta);
    t[0] = r.t;
    if (r.pole) {
      warn(
        `${step.name}: c = ${r.c.toFixed(4)} is at the pole 1 + (N−1)·c ≤ 1e-6; t set to 0 (the base is kept)`,
      );
    } else if (r.c < 0) negative.push(step.name);
    return { t, report: { ...base, cosines: r.cosines, c: r.c, t: r.t, pole: r.pole } };
  }
  const pairs = (n * (n - 1)) / 2;
  const cosByPair = Array.from({ length: pairs }, () => new Float64Array(step.units));
  const c = new Float64Array(step.units);
  let poles = 0;
  let negatives = 0;
  for (let u = 0; u < step.units; u++) {
    const r = unitRatio(gram, u * p, n, theta);
    t[u] = r.t;
    c[u] = r.c;
    r.cosines.forEach((v, j) => ((cosByPair[j] as Float64Array)[u] = v));
    if (r.pole) poles++;
    else if (r.c < 0) negatives++;
  }
  if (poles > 0)
    warn(`${step.name}: ${poles} of ${step.units} rows at the pole; their t set to 0 (base rows kept)`);
  if (negatives > 0) negative.push(`${step.name} (${negatives} of ${step.units} rows)`);
  return {
    t,
    report: {
      ...base,
      cosines: cosByPair.map(stats),
      cStats: stats(c),
      tStats: stats(t),
      pole: poles > 0,
    },
  };
}
