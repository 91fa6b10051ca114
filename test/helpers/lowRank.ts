import type { FloatDType } from '../../lib/dtype';
import type { LowRankFactor } from '../../lib/engine/backend';
import { decodeFloats, encodeFloats } from '../../lib/math/codec';
import { gramIndex, gramSize } from '../../lib/math/gram';
import { shifted } from './addon';
import { randomTensor, type Rng } from './random';

/**
 * LoRA factors for the backend tests, and the float64 references they are checked against: each
 * factor's dense task vector d = s·B·A (or s·(B·A)ᵀ) formed from the factors' decoded values in
 * float64, in the stored tensor's [R, C] layout, and the Gram matrix of those dense task vectors.
 */

export interface FactorCase {
  readonly factor: LowRankFactor;
  /** The dense task vector, R × C row-major, float64. */
  readonly d: Float64Array;
}

export interface FactorOptions {
  readonly rank: number;
  readonly transposed?: boolean;
  readonly aDtype?: FloatDType;
  readonly bDtype?: FloatDType;
  readonly scale?: number;
  /** Byte offsets (0–7) of a and b past an 8-aligned address. */
  readonly shift?: number;
  /** Explicit factor values instead of random ones: A as stored ([r, C] or [r, R]), B as stored. */
  readonly values?: { readonly a: Float64Array; readonly b: Float64Array };
}

/** s·(B·A) in stored layout from decoded values: plain B [R, r] A [r, C]; transposed B [C, r] A [r, R]. */
export function denseTaskVector(
  a: Float64Array,
  b: Float64Array,
  rank: number,
  scale: number,
  rows: number,
  cols: number,
  transposed: boolean,
): Float64Array {
  const d = new Float64Array(rows * cols);
  for (let k = 0; k < rows; k++) {
    for (let c = 0; c < cols; c++) {
      let s = 0;
      for (let q = 0; q < rank; q++)
        s += transposed ? b[c * rank + q]! * a[q * rows + k]! : b[k * rank + q]! * a[q * cols + c]!;
      d[k * cols + c] = scale * s;
    }
  }
  return d;
}

/** A random LoRA factor for a stored [rows, cols] tensor (B ~ 0.02·N(0,1), A ~ 0.1·N(0,1), s = 2 by default). */
export function makeFactor(rng: Rng, rows: number, cols: number, opts: FactorOptions): FactorCase {
  const { rank, transposed = false, aDtype = 'F32', bDtype = 'F32', scale = 2, shift = 0 } = opts;
  const aLen = rank * (transposed ? rows : cols);
  const bLen = rank * (transposed ? cols : rows);
  const rawA = opts.values?.a ?? randomTensor(aLen, rng, 0.1);
  const rawB = opts.values?.b ?? randomTensor(bLen, rng, 0.02);
  const a = shifted(encodeFloats(rawA, aDtype), shift % 8);
  const b = shifted(encodeFloats(rawB, bDtype), (shift * 3 + 1) % 8);
  const da = decodeFloats(a, aDtype) as Float64Array;
  const db = decodeFloats(b, bDtype) as Float64Array;
  return {
    factor: { a, aDtype, b, bDtype, rank, scale, transposed },
    d: denseTaskVector(da, db, rank, scale, rows, cols, transposed),
  };
}

/**
 * Units × P Gram of dense task vectors (R × C each) over the first `mergedRows` rows: per row
 * (filter-wise) or over all of them; sums in element order.
 */
export function denseGram(
  ds: readonly Float64Array[],
  cols: number,
  mergedRows: number,
  filterWise: boolean,
): Float64Array {
  const n = ds.length;
  const p = gramSize(n);
  const gram = new Float64Array((filterWise ? mergedRows : 1) * p);
  for (let k = 0; k < mergedRows; k++) {
    const o = (filterWise ? k : 0) * p;
    for (let i = 0; i < n; i++)
      for (let j = i; j < n; j++) {
        let s = 0;
        for (let c = 0; c < cols; c++) s += ds[i]![k * cols + c]! * ds[j]![k * cols + c]!;
        gram[o + gramIndex(i, j, n)] = gram[o + gramIndex(i, j, n)]! + s;
      }
  }
  return gram;
}
