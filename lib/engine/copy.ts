import { floatSize, type FloatDType } from '../dtype';
import { decodeFloats, encodeFloats } from '../math/codec';
import type { CopyStep, MergeStep } from '../plan/plan';
import type { TensorInfo } from '../checkpoint/types';
import type { Arena } from './arena';
import { acquire, type StepContext, type TensorSink } from './context';
import { mappedWriteError } from './io';

/**
 * Copies from the base: whole tensors (docs/merge-contract.md's copy rows) and the base's rows after the merged
 * ones of an embedding whose vocabulary differs. Byte for byte, or re-encoded (round-to-nearest-even,
 * NaN and Inf kept) when --out-dtype asks for another float dtype. Rare and small, so the conversion is
 * plain TypeScript.
 */

type Progress = (tensor: string) => void;

/** Copies happen only in a merge, never in the Gram pass alone (inspect), which has no sink. */
function sinkOf(ctx: StepContext): TensorSink {
  const sink = ctx.options.sink;
  if (sink === undefined) throw new Error('internal: a copy without an output');
  return sink;
}

/** How many units of `perUnit` bytes one chunk may hold: what the arena holds and one read may span. */
function chunkOf(perUnit: number, arena: Arena, ctx: StepContext): number {
  return Math.max(1, Math.floor(Math.min(arena.capacity - 128, ctx.options.window) / perUnit));
}

/** Bytes [start, end) of `from` to the same byte offsets of output tensor `name` (same dtype). */
async function copyBytes(
  name: string,
  from: TensorInfo,
  start: number,
  end: number,
  arena: Arena,
  ctx: StepContext,
  progress: Progress,
): Promise<void> {
  const { source } = ctx.options;
  const sink = sinkOf(ctx);
  const chunk = chunkOf(1, arena, ctx);
  for (let at = start; at < end; at += chunk) {
    ctx.checkCancelled();
    arena.reset();
    const view = await acquire(source, arena, from, at, Math.min(chunk, end - at));
    ctx.onRead(view.byteLength);
    // A mapped view goes straight to write(): if the input shrank, that fails with EFAULT, the input's fault.
    await sink.write(name, at, view).catch((e: unknown) => {
      throw mappedWriteError(e, from);
    });
    source.release?.(from, at, view.byteLength);
    progress(name);
  }
}

/** Elements [first, first + count) of float tensor `from`, re-encoded as `outDtype`, to the same elements. */
async function convertElements(
  name: string,
  from: TensorInfo,
  outDtype: FloatDType,
  first: number,
  count: number,
  arena: Arena,
  ctx: StepContext,
  progress: Progress,
): Promise<void> {
  const { source } = ctx.options;
  const sink = sinkOf(ctx);
  const inDtype = from.dtype as FloatDType;
  const inSize = floatSize(inDtype);
  const outSize = floatSize(outDtype);
  // The conversion decodes through a float64 scratch of the chunk: 4Mi elements keep that at 32 MiB.
  const chunk = Math.min(chunkOf(inSize + outSize, arena, ctx), 1 << 22);
  for (let k = first; k < first + count; k += chunk) {
    const n = Math.min(chunk, first + count - k);
    ctx.checkCancelled();
    arena.reset();
    const view = await acquire(source, arena, from, k * inSize, n * inSize);
    ctx.onRead(view.byteLength);
    await sink.write(
      name,
      k * outSize,
      encodeFloats(decodeFloats(view, inDtype), outDtype, arena.take(n * outSize)),
    );
    source.release?.(from, k * inSize, view.byteLength);
    progress(name);
  }
}

/** A tensor copied from the base. Returns the bytes written. */
export async function copyTensor(
  step: CopyStep,
  arena: Arena,
  ctx: StepContext,
  progress: Progress,
): Promise<number> {
  const b = step.base;
  if (step.outDtype === b.dtype) {
    await copyBytes(step.name, b, 0, b.byteLength, arena, ctx, progress);
  } else {
    const count = b.byteLength / floatSize(b.dtype as FloatDType);
    await convertElements(step.name, b, step.outDtype as FloatDType, 0, count, arena, ctx, progress);
  }
  return step.outByteLength;
}

/**
 * The base's rows after the merged ones, when an embedding's vocabulary differs (docs/merge-contract.md): the
 * output keeps the base's shape, and rows beyond those every input has come from the base.
 */
export async function copyBaseTail(
  step: Pick<MergeStep, 'name' | 'base' | 'numel' | 'mergedNumel' | 'outDtype'>,
  arena: Arena,
  ctx: StepContext,
  progress: Progress,
): Promise<void> {
  const b = step.base;
  if (step.mergedNumel === step.numel) return;
  if (step.outDtype === b.dtype) {
    const size = floatSize(step.outDtype);
    await copyBytes(step.name, b, step.mergedNumel * size, b.byteLength, arena, ctx, progress);
  } else {
    const tail = step.numel - step.mergedNumel;
    await convertElements(step.name, b, step.outDtype, step.mergedNumel, tail, arena, ctx, progress);
  }
}
