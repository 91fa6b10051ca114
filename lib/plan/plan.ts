import { DType, FloatDType, dtypeBits, isCopyDType, isMergeableDType } from '../dtype';
import { ModelStockError } from '../errors';
import type { Checkpoint, TensorInfo } from '../safetensors/types';
import { ChunkedList, ChunkedMap } from '../util/chunkedMap';
import { CHECK_EVERY, runSliced, runSync, type Sliced } from '../util/sliced';

/**
 * Layer traversal: one decision per base tensor, made before any byte is written, so a bad input
 * fails before work starts. The rules are MODEL_STOCK.md's table.
 */
export interface MergeStep {
  readonly action: 'merge';
  readonly name: string;
  readonly base: TensorInfo;
  /** The fine-tunes that have the tensor (N = inputs.length ≥ 2). */
  readonly inputs: readonly TensorInfo[];
  /** Their indices in the user's model list. */
  readonly modelIndices: readonly number[];
  readonly outDtype: FloatDType;
  readonly shape: readonly number[];
  readonly numel: number;
  /** Elements per unit: the whole tensor, or one row `[shape[0], rest]` when filter-wise. */
  readonly unitLength: number;
  readonly units: number;
  readonly outByteLength: number;
  /** Set when some fine-tunes lack the tensor. */
  readonly note: string | undefined;
}

export interface CopyStep {
  readonly action: 'copy';
  readonly name: string;
  readonly base: TensorInfo;
  readonly reason: string;
  /** The base's dtype (a byte copy), or --out-dtype for a float tensor copied in another dtype. */
  readonly outDtype: DType;
  readonly outByteLength: number;
}

export type PlanStep = MergeStep | CopyStep;

export interface Plan {
  /** In the base's order. */
  readonly steps: readonly PlanStep[];
  /** Tensors present in fine-tunes but not in the base: not in the output. */
  readonly dropped: readonly { readonly name: string; readonly models: readonly number[] }[];
  readonly warnings: readonly string[];
  /** Bytes of every input the merge reads once (merge inputs + copied base tensors). */
  readonly inputBytes: number;
  readonly outputBytes: number;
}

export interface PlanOptions {
  readonly filterWise: boolean;
  readonly outDtype: FloatDType | undefined;
  /** How to name model i in messages (default: its path). */
  readonly modelLabel?: (i: number) => string;
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

const fmtShape = (s: readonly number[]): string => `[${s.join(', ')}]`;

export function makePlan(base: Checkpoint, models: readonly Checkpoint[], opts: PlanOptions): Plan {
  return runSync(planSteps(base, models, opts));
}

/** `makePlan` in slices of a few ms: a million-tensor plan would otherwise hold the event loop. */
export function makePlanSliced(
  base: Checkpoint,
  models: readonly Checkpoint[],
  opts: PlanOptions,
): Promise<Plan> {
  return runSliced(planSteps(base, models, opts));
}

function* planSteps(base: Checkpoint, models: readonly Checkpoint[], opts: PlanOptions): Sliced<Plan> {
  const label = opts.modelLabel ?? ((i: number) => models[i]?.path ?? `model ${i + 1}`);
  if (models.length < 2) {
    throw new ModelStockError(
      'TOO_FEW_MODELS',
      `Model Stock needs at least 2 fine-tuned models, got ${models.length}`,
    );
  }
  const steps = new ChunkedList<PlanStep>();
  const warnings = new ChunkedList<string>();
  let inputBytes = 0;
  let outputBytes = 0;

  for (let k = 0; k < base.order.length; k++) {
    if (k % CHECK_EVERY === CHECK_EVERY - 1) yield;
    const name = base.order[k] as string;
    const b = base.tensors.get(name) as TensorInfo;
    if (isCopyDType(b.dtype)) {
      steps.push({
        action: 'copy',
        name,
        base: b,
        reason: `${b.dtype} is not a float dtype`,
        outDtype: b.dtype,
        outByteLength: b.byteLength,
      });
      inputBytes += b.byteLength;
      outputBytes += b.byteLength;
      continue;
    }
    if (!isMergeableDType(b.dtype)) {
      throw new ModelStockError(
        'UNSUPPORTED_DTYPE',
        `dtype ${b.dtype} cannot be merged (only F64, F32, F16 and BF16 are; integer and BOOL tensors are copied)`,
        { file: b.file, tensor: name },
      );
    }
    const inputs: TensorInfo[] = [];
    const modelIndices: number[] = [];
    const missing: number[] = [];
    for (let i = 0; i < models.length; i++) {
      const t = (models[i] as Checkpoint).tensors.get(name);
      if (t === undefined) {
        missing.push(i);
        continue;
      }
      if (!sameShape(t.shape, b.shape)) {
        throw new ModelStockError(
          'SHAPE_MISMATCH',
          `shape ${fmtShape(t.shape)} in ${label(i)} differs from ${fmtShape(b.shape)} in the base ${base.path}`,
          { file: t.file, tensor: name },
        );
      }
      if (!isMergeableDType(t.dtype)) {
        throw new ModelStockError(
          'UNSUPPORTED_DTYPE',
          `dtype ${t.dtype} in ${label(i)} cannot be merged with the base's ${b.dtype}`,
          { file: t.file, tensor: name },
        );
      }
      inputs.push(t);
      modelIndices.push(i);
    }
    if (inputs.length < 2) {
      const reason =
        inputs.length === 0
          ? 'in no fine-tuned model'
          : `only in ${label(modelIndices[0] as number)} (Model Stock needs 2)`;
      // --out-dtype applies to every float tensor written, copied ones included (as in mergekit).
      const outDtype = opts.outDtype ?? b.dtype;
      const outByteLength = (numelOf(b.shape) * dtypeBits(outDtype)) / 8;
      steps.push({ action: 'copy', name, base: b, reason, outDtype, outByteLength });
      warnings.push(`${name}: copied from the base: ${reason}`);
      inputBytes += b.byteLength;
      outputBytes += outByteLength;
      continue;
    }
    const outDtype = opts.outDtype ?? b.dtype;
    const numel = numelOf(b.shape);
    // A zero-size tensor has no unit; it is still planned so the output keeps every base tensor.
    const unitLength =
      numel === 0 ? 0 : opts.filterWise && b.shape.length >= 2 ? numel / (b.shape[0] as number) : numel;
    const units = unitLength === 0 ? 0 : numel / unitLength;
    const note =
      missing.length > 0
        ? `merged over ${inputs.length} models; missing in ${missing.map(label).join(', ')}`
        : undefined;
    if (note !== undefined) warnings.push(`${name}: ${note}`);
    const outByteLength = (numel * dtypeBits(outDtype)) / 8;
    steps.push({
      action: 'merge',
      name,
      base: b,
      inputs,
      modelIndices,
      outDtype,
      shape: b.shape,
      numel,
      unitLength,
      units,
      outByteLength,
      note,
    });
    inputBytes += b.byteLength + inputs.reduce((s, t) => s + t.byteLength, 0);
    outputBytes += outByteLength;
  }

  const droppedMap = new ChunkedMap<number[]>();
  for (let i = 0; i < models.length; i++) {
    const order = (models[i] as Checkpoint).order;
    for (let k = 0; k < order.length; k++) {
      if (k % CHECK_EVERY === CHECK_EVERY - 1) yield;
      const name = order[k] as string;
      if (base.tensors.has(name)) continue;
      const list = droppedMap.get(name);
      if (list === undefined) droppedMap.set(name, [i]);
      else list.push(i);
    }
  }
  const dropped = new ChunkedList<{ name: string; models: number[] }>();
  for (const [name, idx] of droppedMap) {
    if (dropped.length % CHECK_EVERY === CHECK_EVERY - 1) yield;
    dropped.push({ name, models: idx });
    warnings.push(`${name}: not in the base, left out (present in ${idx.map(label).join(', ')})`);
  }
  return {
    steps: yield* steps.toArray(),
    dropped: yield* dropped.toArray(),
    warnings: yield* warnings.toArray(),
    inputBytes,
    outputBytes,
  };
}
