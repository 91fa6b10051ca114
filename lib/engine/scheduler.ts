import type { MergeStep, Plan, PlanStep } from '../plan/plan';
import type { TensorReport } from '../types';
import { Arena } from './arena';
import { floatSize } from '../dtype';
import { throwIfCancelled } from '../errors';
import { inputsOf, mergedBytes, settleAll, type EngineOptions, type StepContext } from './context';
import { copyBaseTail, copyTensor } from './copy';
import { mergeWhole } from './whole';
import { mergeWindowed } from './windowed';
import { ReadAhead } from './readahead';
import { lowRankFootprint, lowRankInputBytes, lowRankSecondPass, mergeLowRank } from './lowRankStep';

export type { EngineOptions, TensorSink, TensorSource } from './context';

export interface EngineResult {
  readonly tensors: TensorReport[];
  readonly warnings: string[];
  /** Input bytes the merge needed, each counted once (a windowed tensor is read twice, counted once). */
  readonly bytesRead: number;
  readonly bytesWritten: number;
}

/** Smallest arena that still makes progress (a few elements of each input per window). */
const MIN_ARENA = 1024;
/** The event loop gets a turn at least this often (ms) between tensors, even when every step is quick. */
const YIELD_EVERY_MS = 10;

interface Slot {
  readonly arena: Arena;
  /** The write of this slot's output, not yet finished (write-behind). */
  writing: Promise<void>;
  /** A prefetch into this slot: the step index and its read. */
  prefetch: { index: number; views: Uint8Array[]; read: Promise<void> } | undefined;
}

/** Bytes of the merged range's output. */
const mergedOutBytes = (step: MergeStep): number => step.mergedNumel * floatSize(step.outDtype);

/** Bytes one merge step needs to hold its merged inputs and their output at once. */
function wholeFootprint(step: MergeStep): number {
  return Arena.footprint([...inputsOf(step).map((t) => mergedBytes(step, t)), mergedOutBytes(step)]);
}

function maxFootprint(steps: readonly PlanStep[]): number {
  let m = 0;
  for (const s of steps) {
    const bytes =
      s.action === 'merge'
        ? wholeFootprint(s)
        : s.action === 'low-rank'
          ? lowRankFootprint(s)
          : s.base.byteLength;
    m = Math.max(m, bytes);
  }
  return m;
}

/** Input bytes a step reads once: merged ranges, and the base's copied rows (none for the Gram pass alone). */
const inputBytes = (s: PlanStep, gramOnly: boolean): number =>
  s.action === 'copy'
    ? gramOnly
      ? 0
      : s.base.byteLength
    : s.action === 'low-rank'
      ? lowRankInputBytes(s, gramOnly)
      : mergeInputBytes(s) + (gramOnly ? 0 : s.base.byteLength - mergedBytes(s, s.base));

/** Input bytes of a step's merged ranges: read once whole, or once per pass when windowed. */
const mergeInputBytes = (s: MergeStep): number => inputsOf(s).reduce((a, t) => a + mergedBytes(s, t), 0);

const macrotask = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Runs a plan: for each base tensor, reads its N+1 inputs, runs the Gram pass, turns the Gram matrix
 * into the interpolation ratio t per unit, runs the interpolation pass and hands the bytes to the sink.
 *
 * A tensor whose inputs and output fit half the memory budget (and the backend) is read once, into one
 * of two arenas, while the previous tensor computes in the other (read-ahead) and its output is still
 * being written (write-behind): whole.ts. A larger tensor is processed in windows, in two passes:
 * windowed.ts. Tensors copied from the base: copy.ts.
 */
export async function runPlan(plan: Plan, opts: EngineOptions): Promise<EngineResult> {
  const steps = plan.steps;
  const slotCapacity = Math.max(MIN_ARENA, Math.min(Math.floor(opts.memory / 2), maxFootprint(steps)));
  const slots: Slot[] = [0, 1].map(() => ({
    arena: new Arena(slotCapacity, opts.backend),
    writing: Promise.resolve(),
    prefetch: undefined,
  }));
  const deviceBytes = opts.backend.capacity().sessionBytes;
  const fitsWhole = (s: PlanStep): boolean =>
    s.action === 'merge' &&
    wholeFootprint(s) <= Math.min(slotCapacity, deviceBytes) &&
    inputsOf(s).every((t) => mergedBytes(s, t) <= opts.window);
  const zeroCopy = opts.source.view !== undefined;

  const gramOnly = opts.sink === undefined;
  const secondPass = (s: PlanStep): number =>
    s.action === 'low-rank'
      ? lowRankSecondPass(s, gramOnly)
      : s.action === 'merge' && !gramOnly && !fitsWhole(s)
        ? mergeInputBytes(s)
        : 0;
  const bytesTotal = steps.reduce((sum, s) => sum + inputBytes(s, gramOnly) + secondPass(s), 0);
  let bytesDone = 0;
  let bytesWritten = 0;
  let tensorsDone = 0;
  const progress = (tensor: string | undefined): void =>
    opts.onProgress?.({ bytesDone, bytesTotal, tensorsDone, tensorsTotal: steps.length, tensor });

  const reports: TensorReport[] = [];
  const warnings: string[] = [];
  const ctx: StepContext = {
    options: opts,
    onRead: (n) => (bytesDone += n),
    warn: (m) => {
      warnings.push(m);
      opts.onWarning?.(m);
    },
    negative: [],
    checkCancelled: () => throwIfCancelled(opts.signal, 'the merge'),
  };

  /** Starts reading step `index`'s inputs into `slot` (or cuts views of mapped files: no copy). */
  const startWhole = (index: number, slot: Slot): void => {
    const step = steps[index] as MergeStep;
    const tensors = inputsOf(step);
    const src = opts.source;
    if (src.view !== undefined) {
      // Mapped inputs: the kernels fault the pages in (read-ahead hinted them: readahead.ts).
      const views = tensors.map((t) => src.view!(t, 0, mergedBytes(step, t)));
      ctx.onRead(mergeInputBytes(step));
      slot.prefetch = { index, views, read: Promise.resolve() };
      return;
    }
    slot.arena.reset();
    const views = tensors.map((t) => slot.arena.take(mergedBytes(step, t)));
    const read = settleAll(
      tensors.map((t, i) => src.readInto(t, 0, views[i]!).then(() => ctx.onRead(views[i]!.byteLength))),
    ).then(() => undefined);
    read.catch(() => undefined); // awaited later; never an unhandled rejection meanwhile
    slot.prefetch = { index, views, read };
  };

  const pendingWrites: Promise<void>[] = [];
  let lastYield = performance.now();
  // Cold inputs: the kernel reads the next steps' ranges in all N+1 files while this one computes.
  const readAhead = new ReadAhead(steps, opts.source, gramOnly);
  try {
    for (let k = 0; k < steps.length; k++) {
      readAhead.at(k);
      const step = steps[k]!;
      const slot = slots[k % 2]!;
      const other = slots[(k + 1) % 2]!;
      ctx.checkCancelled();
      progress(step.name);
      if (step.action === 'copy') {
        await slot.writing;
        if (opts.sink !== undefined) bytesWritten += await copyTensor(step, slot.arena, ctx, progress);
        reports.push({
          name: step.name,
          action: 'copy',
          reason: step.reason,
          dtype: step.base.dtype,
          outDtype: step.outDtype,
          shape: step.base.shape,
        });
      } else if (step.action === 'low-rank') {
        // Tensors a LoRA adapter changes: lowRankStep.ts, its windows alternating between both slots.
        await other.prefetch?.read;
        const r = await mergeLowRank(
          step,
          [slot.arena, other.arena],
          [slot.writing, other.writing],
          ctx,
          progress,
        );
        reports.push(r.report);
        [slot.writing, other.writing] = r.writing;
        pendingWrites.push(...r.writing);
        if (!gramOnly) bytesWritten += step.outByteLength;
      } else if (fitsWhole(step)) {
        // fitsWhole holds only for merge steps.
        // Mapped inputs take no arena space: only the output waits for its slot's previous write.
        if (slot.prefetch?.index !== k) {
          if (!zeroCopy) await slot.writing;
          startWhole(k, slot);
        }
        const { views, read } = slot.prefetch!;
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
        const sink = opts.sink;
        const out = sink === undefined ? undefined : slot.arena.take(mergedOutBytes(step));
        reports.push(await mergeWhole(step, views, out, ctx));
        for (const input of inputsOf(step)) opts.source.release?.(input, 0, mergedBytes(step, input));
        if (sink !== undefined && out !== undefined) {
          slot.writing = sink.write(step.name, 0, out);
          slot.writing.catch(() => undefined);
          pendingWrites.push(slot.writing);
          if (step.mergedNumel < step.numel) {
            // The base's rows after the merged ones go through this slot's arena, once `out` is written.
            await slot.writing;
            await copyBaseTail(step, slot.arena, ctx, progress);
          }
          bytesWritten += step.outByteLength;
        }
      } else {
        await Promise.all([slot.writing, other.writing, other.prefetch?.read]);
        reports.push(await mergeWindowed(step, slot.arena, ctx, progress));
        if (!gramOnly) bytesWritten += step.outByteLength;
      }
      tensorsDone++;
      progress(undefined);
      // Awaiting settled promises only runs microtasks: give timers and I/O callbacks a turn too.
      if (performance.now() - lastYield >= YIELD_EVERY_MS) {
        await macrotask();
        lastYield = performance.now();
      }
    }
    await Promise.all(pendingWrites);
  } catch (e) {
    // Let in-flight reads and writes settle before the caller removes the output folder.
    await Promise.allSettled([...pendingWrites, ...slots.map((s) => s.prefetch?.read)]);
    throw e;
  } finally {
    // Every read and write into the arenas has settled by now (settleAll, and the awaits above).
    for (const s of slots) s.arena.dispose();
  }
  if (ctx.negative.length > 0) {
    ctx.warn(
      `negative cosine, t < 0 kept (the merge moves away from the fine-tunes' average) in ${ctx.negative.length} tensor(s): ${ctx.negative.join(', ')}`,
    );
  }
  return {
    tensors: reports,
    warnings,
    bytesRead: steps.reduce((sum, s) => sum + inputBytes(s, gramOnly), 0),
    bytesWritten,
  };
}
