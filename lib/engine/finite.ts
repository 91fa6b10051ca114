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
  const tensors = inputsOf(step);
  await checkFiniteInputs(
    step.name,
    gram,
    tensors.map((t, i) => ({
      dtype: t.dtype as FloatDType,
      file: t.file,
      who: i === 0 ? 'the base' : modelLabel(step.modelIndices[i - 1]!),
    })),
    scan,
  );
}

/** One input of a Gram pass as checkFiniteInputs names it: its dtype (as scanned), file and owner. */
export interface ScannedInput {
  readonly dtype: FloatDType;
  readonly file: string;
  /** "the base", "model 2 (./ft-b)". */
  readonly who: string;
  /** What the element index counts, when not the tensor's elements (e.g. "of lora_A"). */
  readonly what?: string;
}

/** checkFinite over described inputs (the first one's file is named when nothing is found). */
export async function checkFiniteInputs(
  tensor: string,
  gram: Float64Array,
  inputs: readonly ScannedInput[],
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
  let found: { input: number; element: number } | undefined;
  await scan(async (input, bytes, firstElement) => {
    if (found !== undefined && found.input <= input) return;
    const at = findNonFinite(bytes, inputs[input]!.dtype);
    if (at >= 0) found = { input, element: firstElement + at };
  });
  if (found === undefined) {
    throw new ModelStockError(
      'NON_FINITE',
      'the task vectors are too large: their dot products overflow float64',
      { file: inputs[0]!.file, tensor },
    );
  }
  const input = inputs[found.input]!;
  throw new ModelStockError(
    'NON_FINITE',
    `NaN or Inf at element ${found.element}${input.what === undefined ? '' : ` ${input.what}`} in ${input.who}`,
    { file: input.file, tensor },
  );
}
