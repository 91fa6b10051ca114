import { ModelStockError } from '../errors';
import { gramSize } from './gram';
import { accumulateGram, interpolateUnits } from './kernels';
import type { FloatArray } from './codec';
import { findNonFinite } from './nonfinite';
import { unitRatio, type ThetaRule } from './ratio';

/**
 * Model Stock on arrays already in memory — for merging during training (the paper merges at each
 * epoch end and continues from the merge). Same kernels and ratio rules as the file path: the
 * float64 Gram and interpolation of kernels.ts (the JS backend's), and ratio.ts.
 */

export interface ModelStockOptions {
  /** Default 'mean-cos'. */
  readonly theta?: ThetaRule;
  /** Filter-wise: the number of rows (shape[0]); one ratio per row. Omit for layer-wise. */
  readonly rows?: number;
  /**
   * Where to write the merge (same length as base). May be the base or a fine-tune itself (the merge is
   * element-wise and the Gram pass runs first); must not partly overlap an input.
   */
  readonly out?: FloatArray;
}

export interface ModelStockResult {
  /** Same array type as base, unless `out` was given (then `out`). */
  readonly merged: FloatArray;
  /** Layer-wise: one t. Filter-wise: one per row. */
  readonly t: number | Float64Array;
  /** Layer-wise: cos_ij for pairs i < j. Filter-wise: that list per row. */
  readonly cosines: number[] | number[][];
  readonly c: number | Float64Array;
  readonly pole: boolean | boolean[];
}

/** Input 0 is the base; input i ≥ 1 is fine-tune `indices[i − 1]` (its index in the caller's list). */
function inputName(i: number, indices: readonly number[] | undefined): string {
  return i === 0 ? 'base' : `fine-tuned model ${indices?.[i - 1] ?? i - 1}`;
}

function bytesOf(a: FloatArray): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function overlaps(a: FloatArray, b: FloatArray): boolean {
  if (a.buffer !== b.buffer) return false;
  return a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

function checkArray(a: unknown, what: string, tensor: string | undefined): asserts a is FloatArray {
  if (!(a instanceof Float32Array || a instanceof Float64Array)) {
    throw new ModelStockError('BAD_CONFIG', `expected a Float32Array or Float64Array for ${what}`, {
      tensor,
    });
  }
}

function merge(
  base: FloatArray,
  fineTuned: ReadonlyArray<FloatArray>,
  options: ModelStockOptions,
  tensor: string | undefined,
  indices?: readonly number[],
): ModelStockResult {
  const where = { tensor };
  if (!Array.isArray(fineTuned) || fineTuned.length < 2) {
    throw new ModelStockError(
      'TOO_FEW_MODELS',
      `need at least 2 fine-tuned models, got ${fineTuned.length}`,
      where,
    );
  }
  const inputs = [base, ...fineTuned];
  inputs.forEach((a, i) => checkArray(a, inputName(i, indices), tensor));
  const length = base.length;
  fineTuned.forEach((m, i) => {
    if (m.length !== length) {
      throw new ModelStockError(
        'SHAPE_MISMATCH',
        `${inputName(i + 1, indices)} has ${m.length} elements, the base ${length}`,
        where,
      );
    }
  });
  const theta = options.theta ?? 'mean-cos';
  if (theta !== 'mean-cos' && theta !== 'mean-angle') {
    throw new ModelStockError(
      'BAD_CONFIG',
      `theta must be 'mean-cos' or 'mean-angle', got ${String(theta)}`,
      where,
    );
  }
  const filterWise = options.rows !== undefined;
  const rows = options.rows ?? 1;
  if (!Number.isSafeInteger(rows) || rows < 1 || length % rows !== 0) {
    throw new ModelStockError('SHAPE_MISMATCH', `rows = ${rows} does not divide ${length} elements`, where);
  }
  const out =
    options.out ?? (base instanceof Float32Array ? new Float32Array(length) : new Float64Array(length));
  checkArray(out, 'out', tensor);
  if (out.length !== length) {
    throw new ModelStockError('SHAPE_MISMATCH', `out has ${out.length} elements, the base ${length}`, where);
  }
  for (const a of inputs) {
    const same =
      a.buffer === out.buffer &&
      a.byteOffset === out.byteOffset &&
      a.BYTES_PER_ELEMENT === out.BYTES_PER_ELEMENT;
    if (!same && overlaps(a, out)) {
      throw new ModelStockError(
        'BAD_CONFIG',
        'out partly overlaps an input (only exact aliasing is allowed)',
        where,
      );
    }
  }
  inputs.forEach((a, i) => {
    const k = findNonFinite(bytesOf(a), a instanceof Float32Array ? 'F32' : 'F64');
    if (k >= 0) {
      throw new ModelStockError('NON_FINITE', `${inputName(i, indices)} has ${a[k]} at element ${k}`, where);
    }
  });

  const n = fineTuned.length;
  const p = gramSize(n);
  const unitLength = length / rows;
  const gram = new Float64Array(rows * p);
  accumulateGram(base, fineTuned, length, 0, unitLength, gram);
  const t = new Float64Array(rows);
  const c = new Float64Array(rows);
  const cosines: number[][] = [];
  const pole: boolean[] = [];
  for (let u = 0; u < rows; u++) {
    const r = unitRatio(gram, u * p, n, theta);
    t[u] = r.t;
    c[u] = r.c;
    cosines.push(r.cosines);
    pole.push(r.pole);
  }
  interpolateUnits(base, fineTuned, length, 0, unitLength, t, out);
  if (filterWise) return { merged: out, t, cosines, c, pole };
  return { merged: out, t: t[0]!, cosines: cosines[0]!, c: c[0]!, pole: pole[0]! };
}

/**
 * Model Stock of one tensor: w_H = w0 + t·(avg − w0) with t from the angle between the task vectors
 * (docs/merge-contract.md). Throws ModelStockError: TOO_FEW_MODELS (N < 2), SHAPE_MISMATCH (lengths differ, or
 * `rows` does not divide the length), NON_FINITE (naming the input), BAD_CONFIG (bad theta or `out`).
 */
export function modelStock(
  base: FloatArray,
  fineTuned: ReadonlyArray<FloatArray>,
  options: ModelStockOptions = {},
): ModelStockResult {
  return merge(base, fineTuned, options, undefined);
}

export interface ModelStockTensorsOptions {
  readonly theta?: ThetaRule;
  /** Filter-wise rows (shape[0]) per tensor name; tensors not listed are merged layer-wise. */
  readonly rows?: Readonly<Record<string, number>>;
  /** Arrays to write each tensor's result into (e.g. the live weights); others are allocated. */
  readonly out?: Readonly<Record<string, FloatArray>>;
}

export interface TensorMergeInfo {
  readonly action: 'merge' | 'copy';
  /** Indices of the fine-tunes merged (all that have the tensor). */
  readonly models: number[];
  /** Why the tensor was copied, or which fine-tunes lacked it. */
  readonly reason?: string;
  readonly t?: number | Float64Array;
  readonly cosines?: number[] | number[][];
  readonly c?: number | Float64Array;
  readonly pole?: boolean | boolean[];
}

export interface ModelStockTensorsResult {
  /** Exactly the base's tensor names, in its order. */
  readonly merged: Record<string, FloatArray>;
  readonly tensors: Record<string, TensorMergeInfo>;
  /** Tensors some fine-tunes have but the base does not: left out of `merged`. */
  readonly dropped: string[];
}

/**
 * modelStock applied per named tensor of a whole state dict, with docs/merge-contract.md's rules: a tensor in
 * ≥ 2 fine-tunes is merged over those (N = that count); in fewer it is copied from the base; tensors
 * absent from the base are dropped and listed.
 */
export function modelStockTensors(
  base: Readonly<Record<string, FloatArray>>,
  fineTuned: ReadonlyArray<Readonly<Record<string, FloatArray>>>,
  options: ModelStockTensorsOptions = {},
): ModelStockTensorsResult {
  if (!Array.isArray(fineTuned) || fineTuned.length < 2) {
    throw new ModelStockError('TOO_FEW_MODELS', `need at least 2 fine-tuned models, got ${fineTuned.length}`);
  }
  const has = (dict: object, name: string) => Object.prototype.hasOwnProperty.call(dict, name);
  const merged: Record<string, FloatArray> = {};
  const tensors: Record<string, TensorMergeInfo> = {};
  for (const name of Object.keys(base)) {
    const w0 = base[name]!;
    checkArray(w0, 'base', name);
    const models: number[] = [];
    const missing: number[] = [];
    fineTuned.forEach((dict, i) => (has(dict, name) ? models.push(i) : missing.push(i)));
    const out = options.out !== undefined && has(options.out, name) ? options.out[name] : undefined;
    if (models.length < 2) {
      const copy = out ?? w0.slice();
      if (out !== undefined) {
        checkArray(out, 'out', name);
        if (out.length !== w0.length) {
          throw new ModelStockError(
            'SHAPE_MISMATCH',
            `out has ${out.length} elements, the base ${w0.length}`,
            {
              tensor: name,
            },
          );
        }
        if (out !== w0) out.set(w0);
      }
      merged[name] = copy;
      tensors[name] = {
        action: 'copy',
        models,
        reason: `present in ${models.length} fine-tuned model(s), need 2`,
      };
      continue;
    }
    const rows = options.rows !== undefined && has(options.rows, name) ? options.rows[name] : undefined;
    const r = merge(
      w0,
      models.map((i) => fineTuned[i]![name]!),
      { theta: options.theta, rows, out },
      name,
      models,
    );
    merged[name] = r.merged;
    tensors[name] = {
      action: 'merge',
      models,
      ...(missing.length > 0 ? { reason: `missing in fine-tuned model(s) ${missing.join(', ')}` } : {}),
      t: r.t,
      cosines: r.cosines,
      c: r.c,
      pole: r.pole,
    };
  }
  const dropped = new Set<string>();
  for (const dict of fineTuned) for (const name of Object.keys(dict)) if (!has(base, name)) dropped.add(name);
  return { merged, tensors, dropped: [...dropped] };
}
