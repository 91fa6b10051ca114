import { floatSize, type FloatDType } from '../dtype';
import { decodeFloats, encodeFloats } from '../math/codec';
import type { CopyStep, MergeStep } from '../plan/plan';
import type { TensorInfo } from '../checkpoint/types';
import type { Task } from './pipeline';
import type { Sizing } from './sizing';

/**
 * Copies from the base, as tasks: whole tensors (docs/merge-contract.md's copy rows) and the base's rows
 * after the merged ones of an embedding whose vocabulary differs. Byte for byte — each chunk written as
 * read, from the input's own buffer or mapping — or re-encoded (round-to-nearest-even, NaN and Inf kept)
 * when --out-dtype asks for another float dtype. Rare and small, so the conversion is plain TypeScript.
 */

/** Bytes [start, end) of `from` to the same byte offsets of output tensor `name` (same dtype). */
function* copyBytes(
  index: number,
  name: string,
  from: TensorInfo,
  start: number,
  end: number,
  sizing: Sizing,
): Generator<Task> {
  const chunk = sizing.copyBytes(from);
  for (let at = start; at < end; at += chunk) {
    const length = Math.min(chunk, end - at);
    yield {
      step: index,
      name,
      reads: () => [{ tensor: from, start: at, length }],
      outBytes: 0,
      last: false,
      // A mapped view goes straight to write(): if the input shrank, that fails with EFAULT, the input's fault.
      run: async ([view]) => ({ name, offset: at, data: view!, from }),
    };
  }
}

/** Elements [first, first + count) of float tensor `from`, re-encoded as `outDtype`, to the same elements. */
function* convertElements(
  index: number,
  name: string,
  from: TensorInfo,
  outDtype: FloatDType,
  first: number,
  count: number,
  sizing: Sizing,
): Generator<Task> {
  const inDtype = from.dtype as FloatDType;
  const inSize = floatSize(inDtype);
  const outSize = floatSize(outDtype);
  const chunk = sizing.convertElements(from, outDtype);
  for (let k = first; k < first + count; k += chunk) {
    const n = Math.min(chunk, first + count - k);
    yield {
      step: index,
      name,
      reads: () => [{ tensor: from, start: k * inSize, length: n * inSize }],
      outBytes: n * outSize,
      outAt: { name, offset: k * outSize },
      last: false,
      run: async ([view], out) => ({
        name,
        offset: k * outSize,
        data: encodeFloats(decodeFloats(view!, inDtype), outDtype, out!),
      }),
    };
  }
}

/** A tensor copied from the base. */
export function copyTasks(step: CopyStep, index: number, sizing: Sizing): Generator<Task> {
  const b = step.base;
  if (step.outDtype === b.dtype) return copyBytes(index, step.name, b, 0, b.byteLength, sizing);
  const count = b.byteLength / floatSize(b.dtype as FloatDType);
  return convertElements(index, step.name, b, step.outDtype as FloatDType, 0, count, sizing);
}

/**
 * The base's rows after the merged ones, when an embedding's vocabulary differs (docs/merge-contract.md):
 * the output keeps the base's shape, and rows beyond those every input has come from the base.
 */
export function baseTailTasks(
  step: Pick<MergeStep, 'name' | 'base' | 'numel' | 'mergedNumel' | 'outDtype'>,
  index: number,
  sizing: Sizing,
): Generator<Task> {
  const b = step.base;
  if (step.outDtype === b.dtype) {
    const size = floatSize(step.outDtype);
    return copyBytes(index, step.name, b, step.mergedNumel * size, b.byteLength, sizing);
  }
  const tail = step.numel - step.mergedNumel;
  return convertElements(index, step.name, b, step.outDtype, step.mergedNumel, tail, sizing);
}
