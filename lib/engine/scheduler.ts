import type { MergeStep, Plan, PlanStep } from '../plan/plan';
import type { TensorReport } from '../types';
import { throwIfCancelled } from '../errors';
import type { TensorSession } from './backend';
import { inputsOf, mergedBytes, type EngineOptions, type StepContext } from './context';
import { baseTailTasks, copyTasks } from './copy';
import { runPipeline, type PipelineProfile, type Task } from './pipeline';
import { ReadAhead } from './readahead';
import { Ring } from './ring';
import { sizePipeline, type Sizing } from './sizing';
import { wholeTask } from './whole';
import { windowedTasks } from './windowed';
import { lowRankInputBytes, lowRankSecondPass, lowRankTasks } from './lowRankStep';

export type { EngineOptions, TensorSink, TensorSource } from './context';
export type { PipelineProfile } from './pipeline';

export interface EngineResult {
  readonly tensors: TensorReport[];
  readonly warnings: string[];
  /** Input bytes the merge needed, each counted once (a windowed tensor is read twice, counted once). */
  readonly bytesRead: number;
  readonly bytesWritten: number;
  /** Where the time went: reading, computing, writing, and the waits between them. */
  readonly profile: PipelineProfile;
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

/** The tasks of `gen`, the last one marked so (a step is done once its last task ran). */
function* markLast(gen: Iterable<Task>): Generator<Task> {
  let held: Task | undefined;
  for (const task of gen) {
    if (held !== undefined) yield held;
    held = task;
  }
  if (held !== undefined) yield { ...held, last: true };
}

/** A step's tasks: its report first for copies, the merge (whole or windowed), the base's tail rows. */
function* stepTasks(step: PlanStep, index: number, sizing: Sizing, ctx: StepContext): Generator<Task> {
  const writing = ctx.options.sink !== undefined;
  if (step.action === 'copy') {
    yield {
      step: index,
      name: step.name,
      reads: () => [],
      outBytes: 0,
      last: false,
      run: async () => {
        ctx.report({
          name: step.name,
          action: 'copy',
          reason: step.reason,
          dtype: step.base.dtype,
          outDtype: step.outDtype,
          shape: step.base.shape,
        });
        return undefined;
      },
    };
    if (writing) yield* copyTasks(step, index, sizing);
    return;
  }
  if (step.action === 'low-rank') {
    // Tensors a LoRA adapter changes: lowRankStep.ts.
    const hook = ctx.options.onLowRankTerms;
    yield* lowRankTasks(step, index, sizing, ctx, hook && (({ t, factors }) => hook(step, factors, t)));
    return;
  }
  if (sizing.whole(step)) yield wholeTask(step, index, ctx, false);
  else yield* windowedTasks(step, index, sizing.windowElements(step), ctx, false);
  if (writing && step.mergedNumel < step.numel) yield* baseTailTasks(step, index, sizing);
}

/**
 * Runs a plan: for each base tensor, reads its N+1 inputs, runs the Gram pass, turns the Gram matrix
 * into the interpolation ratio t per unit, runs the interpolation pass and hands the bytes to the sink
 * — as a pipeline (pipeline.ts) that reads the next tensors and writes the previous ones while one
 * computes. A tensor whose inputs and output fit the pipeline's rings is one task (whole.ts); a larger
 * one is processed in windows, in two passes (windowed.ts); tensors copied from the base: copy.ts.
 * How the memory budget is shared and what fits: sizing.ts.
 */
export async function runPlan(plan: Plan, opts: EngineOptions): Promise<EngineResult> {
  const steps = plan.steps;
  const gramOnly = opts.sink === undefined;
  const sizing = sizePipeline(steps, opts);
  const inRing = sizing.inRing > 0 ? new Ring(sizing.inRing, opts.backend) : undefined;
  const outRing = sizing.outRing > 0 ? new Ring(sizing.outRing, opts.backend) : undefined;

  const secondPass = (s: PlanStep): number =>
    s.action === 'low-rank'
      ? lowRankSecondPass(s, gramOnly)
      : s.action === 'merge' && !gramOnly && !sizing.whole(s)
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
  const sessions = new Set<Pick<TensorSession, 'close'>>();
  const ctx: StepContext = {
    options: opts,
    warn: (m) => {
      warnings.push(m);
      opts.onWarning?.(m);
    },
    negative: [],
    report: (r) => reports.push(r),
    sessions,
  };

  function* tasks(): Generator<Task> {
    for (let k = 0; k < steps.length; k++) yield* markLast(stepTasks(steps[k]!, k, sizing, ctx));
  }

  // Cold inputs read through the page cache: the kernel reads the next steps' ranges in all N+1 files
  // while this one computes (direct reads need no hint: the pipeline reads ahead itself).
  const readAhead = new ReadAhead(steps, opts.source, gramOnly);
  let stepNow = -1;
  let profile: PipelineProfile;
  try {
    profile = await runPipeline(tasks(), {
      source: opts.source,
      sink: opts.sink,
      inRing,
      outRing,
      checkCancelled: () => throwIfCancelled(opts.signal, 'the merge'),
      signal: opts.signal,
      onTask: (task, bytes) => {
        if (task.step !== stepNow) readAhead.at((stepNow = task.step));
        bytesDone += bytes;
        progress(task.name);
      },
      onTaskDone: (task) => {
        if (!task.last) return;
        tensorsDone++;
        if (!gramOnly) bytesWritten += steps[task.step]!.outByteLength;
        progress(undefined);
      },
    });
  } finally {
    // Every read and write has settled (runPipeline waits for them even when it fails).
    await Promise.allSettled([...sessions].map((s) => s.close()));
    inRing?.dispose();
    outRing?.dispose();
  }
  // One per tensor, at the end (after the tensors' own warnings): the terminal says the kind once, with a
  // count and the first few names (lib/report/warnings.ts); the report keeps every name.
  for (const name of ctx.negative)
    ctx.warn(`${name}: negative cosine, t < 0 kept (the merge moves away from the fine-tunes' average)`);
  return {
    tensors: reports,
    warnings,
    bytesRead: steps.reduce((sum, s) => sum + inputBytes(s, gramOnly), 0),
    bytesWritten,
    profile,
  };
}
