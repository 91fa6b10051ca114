import type { FloatDType } from '../dtype';
import { ModelStockError } from '../errors';
import { findNonFinite } from '../math/nonfinite';
import type { MergeStep } from '../plan/plan';
import { inputsOf } from './context';

/** Visits every input's bytes of a step, in windows: (input index, bytes, first element). */
export type InputScan = (
  visit: (input: number, bytes: Uint8Array, firstElement: number) => Promise<void>,
) => Promise<void>;

/**
 * NaN or Inf in any input makes a diagonal Gram entry non-finite (w_i − w0 is then NaN or ±Inf), so one
 * look at the Gram matrix clears a tensor; only on failure are the inputs scanned to name the model.
 */
export async function checkFinite(
  step: MergeStep,
  gram: Float64Array,
  modelLabel: (i: number) => string,
  scan: InputScan,
): Promise<void> {
  let finite = true;
  for (let i = 0; i < gram.length; i++) {
    if (!Number.isFinite(gram[i] as number)) {
      finite = false;
      break;
    }
  }
  if (finite) return;
  const tensors = inputsOf(step);
  let found: { input: number; element: number } | undefined;
  await scan(async (input, bytes, firstElement) => {
    if (found !== undefined && found.input <= input) return;
    const at = findNonFinite(bytes, tensors[input]!.dtype as FloatDType);
    if (at >= 0) found = { input, element: firstElement + at };
  });
  if (found === undefined) {
    throw new ModelStockError(
      'NON_FINITE',
      'the task vectors are too large: their dot products overflow float64',
      { file: step.base.file, tensor: step.name },
    );
  }
  const who = found.input === 0 ? 'the base' : modelLabel(step.modelIndices[found.input - 1]!);
  throw new ModelStockError('NON_FINITE', `NaN or Inf at element ${found.element} in ${who}`, {
    file: tensors[found.input]!.file,
    tensor: step.name,
  });
}
