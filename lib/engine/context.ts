import { floatSize, type FloatDType } from '../dtype';
import type { ThetaRule } from '../math/ratio';
import type { LowRankStep, MergeStep } from '../plan/plan';
import type { TensorInfo } from '../checkpoint/types';
import type { MergeProgress } from '../types';
import type { Arena } from './arena';
import type { Backend, LowRankFactor, TensorSpec } from './backend';
import type { TensorSource as FullSource } from './io';

/** Where tensor bytes come from: copies into arena buffers, or zero-copy views of mapped files. */
export type TensorSource = Pick<FullSource, 'readInto' | 'view' | 'release' | 'willNeed'>;

/** Where output tensor bytes go (positional writes into the output shards). */
export interface TensorSink {
  write(name: string, byteOffsetInTensor: number, data: Uint8Array): Promise<void>;
}

export interface EngineOptions {
  readonly backend: Backend;
  readonly source: TensorSource;
  /** Where merged bytes go; undefined runs the Gram pass only (inspect: t and cosines, no weights). */
  readonly sink: TensorSink | undefined;
  readonly theta: ThetaRule;
  /** Budget for all tensor buffers, bytes. Two pipeline slots share it. */
  readonly memory: number;
  /** Largest single read, bytes. */
  readonly window: number;
  readonly modelLabel: (i: number) => string;
  readonly onProgress?: (p: MergeProgress) => void;
  readonly onWarning?: (message: string) => void;
  /** Cancellation: checked before every tensor, window and copied chunk (CANCELLED). */
  readonly signal?: AbortSignal;
  /**
   * A factors-only low-rank tensor, once its t is known: true when the callee wrote it (an adapter
   * output: merged factors, lib/output/adapterMerge.ts), false for the fused dense output to the sink.
   */
  readonly lowRankOutput?: (
    step: LowRankStep,
    factors: readonly (LowRankFactor | undefined)[],
    t: Float64Array,
  ) => Promise<boolean>;
}

/** What the per-step paths (whole, windowed, copy) share during one merge. */
export interface StepContext {
  readonly options: EngineOptions;
  /** Counts input bytes read, once per pass that reads them (progress). */
  readonly onRead: (bytes: number) => void;
  readonly warn: (message: string) => void;
  /** Tensors whose c < 0 (t < 0 kept): named in one warning at the end. */
  readonly negative: string[];
  /** Throws CANCELLED once the signal fired: called before each piece of work starts. */
  readonly checkCancelled: () => void;
}

/** The base and the fine-tunes of a merge step, in that order. */
export function inputsOf(step: MergeStep): readonly TensorInfo[] {
  return [step.base, ...step.inputs];
}

/** Bytes of `tensor` (an input of `step`) that the merge reads: its first step.mergedNumel elements. */
export function mergedBytes(step: MergeStep, tensor: TensorInfo): number {
  return step.mergedNumel * floatSize(tensor.dtype as FloatDType);
}

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

/** Tensor bytes [start, start + length): a view of the mapped file, or a copy read into the arena. */
export async function acquire(
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

/**
 * Like Promise.all, but waits for every promise to settle before rejecting with the first failure:
 * no read may still be filling a buffer the caller is about to reuse or free.
 */
export async function settleAll<T>(promises: readonly Promise<T>[]): Promise<T[]> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}
