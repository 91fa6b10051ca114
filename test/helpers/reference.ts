import type { FloatDType } from '../../lib/dtype';
import { gramIndex, gramSize } from '../../lib/math/gram';
import { encodeFloats, decodeFloats, ulp } from '../../lib/math/codec';
import { pairCosines, unitRatio, type ThetaRule } from '../../lib/math/ratio';

/**
 * The float64 reference every backend is tested against: docs/merge-contract.md's formulas written as plainly
 * as possible, on decoded values. Sums run element by element in index order, so a backend that keeps
 * that order reproduces these results bit for bit.
 */

function unitCount(length: number, unitLength: number): number {
  if (length === 0) return 0;
  if (!(unitLength > 0) || length % unitLength !== 0) {
    throw new RangeError(`unitLength ${unitLength} does not divide ${length} elements`);
  }
  return length / unitLength;
}

function checkLengths(base: Float64Array, models: readonly Float64Array[]): void {
  if (models.length < 2) throw new RangeError(`need at least 2 fine-tuned models, got ${models.length}`);
  models.forEach((m, i) => {
    if (m.length !== base.length)
      throw new RangeError(`model ${i} has ${m.length} elements, base ${base.length}`);
  });
}

/** Units × P Gram accumulators, packed by gramIndex. */
export function referenceGram(base: Float64Array, models: Float64Array[], unitLength: number): Float64Array {
  checkLengths(base, models);
  const n = models.length;
  const p = gramSize(n);
  const gram = new Float64Array(unitCount(base.length, unitLength) * p);
  const d = new Float64Array(n);
  for (let k = 0; k < base.length; k++) {
    const u = Math.floor(k / unitLength);
    for (let i = 0; i < n; i++) d[i] = models[i]![k]! - base[k]!;
    for (let i = 0; i < n; i++) {
      for (let j = i; j < n; j++) {
        const g = u * p + gramIndex(i, j, n);
        gram[g] = gram[g]! + d[i]! * d[j]!;
      }
    }
  }
  return gram;
}

/** avg = (Σ w_i)/N, summed in model order. */
export function referenceAverage(models: readonly Float64Array[], k: number): number {
  let s = models[0]![k]!;
  for (let i = 1; i < models.length; i++) s += models[i]![k]!;
  return s / models.length;
}

/** w_H = w0 + t·(avg − w0) per element in float64, with t from the float64 Gram. */
export function referenceMerge(
  base: Float64Array,
  models: Float64Array[],
  opts: { unitLength: number; theta: ThetaRule },
): { out: Float64Array; t: Float64Array } {
  const gram = referenceGram(base, models, opts.unitLength);
  const n = models.length;
  const units = unitCount(base.length, opts.unitLength);
  const t = new Float64Array(units);
  for (let u = 0; u < units; u++) t[u] = unitRatio(gram, u * gramSize(n), n, opts.theta).t;
  const out = new Float64Array(base.length);
  for (let k = 0; k < base.length; k++) {
    const w0 = base[k]!;
    out[k] = w0 + t[Math.floor(k / opts.unitLength)]! * (referenceAverage(models, k) - w0);
  }
  return { out, t };
}

/** docs/merge-contract.md's accuracy contract: ulp_out(ref) + 2^-20·(|t·avg| + |(1−t)·w0|). */
export function contractTolerance(
  ref: number,
  t: number,
  avg: number,
  w0: number,
  outDtype: FloatDType,
): number {
  return ulp(ref, outDtype) + 2 ** -20 * (Math.abs(t * avg) + Math.abs((1 - t) * w0));
}

/** The float64 value `x` becomes once stored as `dtype`. */
function roundTo(x: number, dtype: FloatDType): number {
  return decodeFloats(encodeFloats([x], dtype), dtype)[0]!;
}

/**
 * Throws on the first element of `actual` (a backend's output, decoded) outside the contract around
 * the float64 formula evaluated with the backend's own per-unit `t`. An infinite output is accepted
 * only where the reference itself overflows the output dtype.
 */
export function assertWithinContract(
  actual: Float64Array,
  base: Float64Array,
  models: Float64Array[],
  t: Float64Array,
  unitLength: number,
  outDtype: FloatDType,
  label: string,
): void {
  checkLengths(base, models);
  if (actual.length !== base.length) {
    throw new Error(`${label}: output has ${actual.length} elements, expected ${base.length}`);
  }
  for (let k = 0; k < base.length; k++) {
    const u = Math.floor(k / unitLength);
    const tu = t[u]!;
    const w0 = base[k]!;
    const avg = referenceAverage(models, k);
    const ref = w0 + tu * (avg - w0);
    const got = actual[k]!;
    const tol = contractTolerance(ref, tu, avg, w0, outDtype);
    const ok = Number.isFinite(got) ? Math.abs(got - ref) <= tol : Object.is(got, roundTo(ref, outDtype));
    if (!ok) {
      throw new Error(
        `${label}: element ${k} (unit ${u}, t = ${tu}) is ${got}, expected ${ref} ± ${tol} ` +
          `(off by ${Math.abs(got - ref)}; w0 = ${w0}, avg = ${avg}, out dtype ${outDtype})`,
      );
    }
  }
}

/** Elements of a tensor of this shape. */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** unitLength: the whole tensor layer-wise or for rank ≤ 1; one row of [shape[0], rest] filter-wise. */
export function unitLengthOf(shape: readonly number[], filterWise: boolean): number {
  return filterWise && shape.length >= 2 ? numel(shape) / shape[0]! : numel(shape);
}

/**
 * A backend's Gram matrix against the float64 reference: every accumulator within
 * 1e-12 · sqrt(G_ii·G_jj) of it (float32 partials of ≤ 64Ki elements summed in float64 stay far inside),
 * and every cosine within docs/merge-contract.md's 1e-9.
 */
export function assertGramClose(
  got: Float64Array,
  ref: Float64Array,
  n: number,
  units: number,
  label: string,
): void {
  const p = gramSize(n);
  if (got.length !== ref.length)
    throw new Error(`${label}: ${got.length} accumulators, reference ${ref.length}`);
  for (let u = 0; u < units; u++) {
    const o = u * p;
    for (let i = 0; i < n; i++) {
      for (let j = i; j < n; j++) {
        const k = o + gramIndex(i, j, n);
        const scale = Math.sqrt(ref[o + gramIndex(i, i, n)]! * ref[o + gramIndex(j, j, n)]!);
        const err = Math.abs(got[k]! - ref[k]!);
        if (!(err <= 1e-12 * scale || err === 0)) {
          throw new Error(
            `${label}: unit ${u} G[${i}][${j}] = ${got[k]} vs reference ${ref[k]} (relative ${err / scale})`,
          );
        }
      }
    }
    const a = pairCosines(got, o, n);
    const b = pairCosines(ref, o, n);
    a.forEach((x, k) => {
      if (!(Math.abs(x - b[k]!) <= 1e-9)) throw new Error(`${label}: unit ${u} cosine ${k}: ${x} vs ${b[k]}`);
    });
  }
}
