import { floatSize, type FloatDType } from '../dtype';
import type { ThetaRule } from '../math/ratio';
import type { LowRankStep, MergeStep } from '../plan/plan';
import type { TensorInfo } from '../checkpoint/types';
import type { MergeProgress, TensorReport } from '../types';
import type { Backend, LowRankFactor, TensorSession, TensorSpec } from './backend';
import type { TensorSource as FullSource } from './io';

/** Where tensor bytes come from: reads into the pipeline's buffers, or zero-copy views of mapped files. */
export type TensorSource = Pick<
  FullSource,
  'readInto' | 'view' | 'maps' | 'release' | 'willNeed' | 'layout' | 'readRegions'
>;

/** Where output tensor bytes go (positional writes into the output shards). */
export interface TensorSink {
  write(name: string, byteOffsetInTensor: number, data: Uint8Array): Promise<void>;
  /**
   * Where byte `byteOffsetInTensor` of tensor `name` lies within a 4 KiB block of its file: a buffer
   * whose bytes sit at the same offset is written from where it is (O_DIRECT), not copied.
   */
  blockOffset?(name: string, byteOffsetInTensor: number): number;
}

export interface EngineOptions {
  readonly backend: Backend;
  readonly source: TensorSource;
  /** Where merged bytes go; undefined runs the Gram pass only (inspect: t and cosines, no weights). */
  readonly sink: TensorSink | undefined;
  readonly theta: ThetaRule;
  /**
   * Budget for the pipeline's buffers, bytes: what inputs are read into and outputs computed into
   * (the caller has taken out what its writer stages).
   */
  readonly memory: number;
  /** Largest single read, bytes. */
  readonly window: number;
  readonly modelLabel: (i: number) => string;
  readonly onProgress?: (p: MergeProgress) => void;
  readonly onWarning?: (message: string) => void;
  /** Cancellation: checked before every task (CANCELLED). */
  readonly signal?: AbortSignal;
  /**
   * Each low-rank tensor's t and factors, once known (lowRankStep.ts onTerms): an adapter output
   * (lib/output/adapterMerge.ts) runs its factor tensors as a Gram pass (no sink: no base weight read)
   * and writes their merged factors from here.
   */
  readonly onLowRankTerms?: (
    step: LowRankStep,
    factors: readonly (LowRankFactor | undefined)[],
    t: Float64Array,
  ) => void;
}

/** What the per-step task makers (whole, windowed, copy) share during one merge. */
export interface StepContext {
  readonly options: EngineOptions;
  readonly warn: (message: string) => void;
  /** Tensors whose c < 0 (t < 0 kept): a warning each at the end. */
  readonly negative: string[];
  /** A step's report entry, given by its task that computed t (steps finish in plan order). */
  readonly report: (entry: TensorReport) => void;
  /** Sessions open now: whatever a failure leaves open is closed by the scheduler. */
  readonly sessions: Set<Pick<TensorSession, 'close'>>;
}

/** The base and the fine-tunes of a merge step, in that order. */
export function inputsOf(step: MergeStep): readonly TensorInfo[] {
  return [step.base, ...step.inputs];
}

/** Bytes of `tensor` (an input of `step`) that the merge reads: its first step.mergedNumel elements. */
export function mergedBytes(step: MergeStep, tensor: TensorInfo): number {
  return step.mergedNumel * floatSize(tensor.dtype as FloatDType);
}

/** Bytes of the merged range's output. */
export const mergedOutBytes = (step: MergeStep): number => step.mergedNumel * floatSize(step.outDtype);

/** What the backend is told about a merge step: the merged range (a row prefix when vocabularies differ). */
export function specOf(step: MergeStep): TensorSpec {
  return {
    name: step.name,
    dtypes: inputsOf(step).map((t) => t.dtype as FloatDType),
    outDtype: step.outDtype,
    numel: step.mergedNumel,
    unitLength: step.unitLength,
  };
}

/** Opens a session for `step`, tracked until closed. */
export function openSession(step: MergeStep, ctx: StepContext): TensorSession {
  const session = ctx.options.backend.openTensor(specOf(step));
  ctx.sessions.add(session);
  return session;
}

export async function closeSession(session: TensorSession, ctx: StepContext): Promise<void> {
  ctx.sessions.delete(session);
  await session.close();
}
