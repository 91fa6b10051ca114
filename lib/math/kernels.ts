import type { FloatArray } from './codec';
import { gramSize } from './gram';

/**
 * Model Stock's two passes on decoded arrays, in plain TypeScript: the pure-JS backend runs them on
 * decoded windows, and the in-memory API (inMemory.ts) on whole arrays.
 *
 * Sums run element by element in index order, each Gram accumulator loaded from `gram` and stored back
 * per unit segment, so splitting a tensor into windows anywhere gives bit-identical results to one
 * window and to the float64 reference the tests use.
 *
 * `base`, `models[i]` and `out` hold elements origin … origin+count−1 of the tensor at indices
 * 0 … count−1; units are unitLength elements of the tensor, counted from 0.
 */

/** gram[u·P + gramIndex(i, j, N)] += Σ d_i·d_j over the elements, in float64. */
export function accumulateGram(
  base: FloatArray,
  models: readonly FloatArray[],
  count: number,
  origin: number,
  unitLength: number,
  gram: Float64Array,
): void {
  const n = models.length;
  const p = gramSize(n);
  let k = 0;
  while (k < count) {
    const u = Math.floor((origin + k) / unitLength);
    const end = Math.min(count, (u + 1) * unitLength - origin);
    if (n === 2) gram2(base, models[0]!, models[1]!, k, end, gram, u * p);
    else if (n === 3) gram3(base, models[0]!, models[1]!, models[2]!, k, end, gram, u * p);
    else gramN(base, models, k, end, gram, u * p);
    k = end;
  }
}

function gram2(
  b: FloatArray,
  a0: FloatArray,
  a1: FloatArray,
  from: number,
  to: number,
  g: Float64Array,
  o: number,
) {
  let g00 = g[o]!;
  let g01 = g[o + 1]!;
  let g11 = g[o + 2]!;
  for (let k = from; k < to; k++) {
    const w0 = b[k]!;
    const d0 = a0[k]! - w0;
    const d1 = a1[k]! - w0;
    g00 += d0 * d0;
    g01 += d0 * d1;
    g11 += d1 * d1;
  }
  g[o] = g00;
  g[o + 1] = g01;
  g[o + 2] = g11;
}

function gram3(
  b: FloatArray,
  a0: FloatArray,
  a1: FloatArray,
  a2: FloatArray,
  from: number,
  to: number,
  g: Float64Array,
  o: number,
) {
  let g00 = g[o]!;
  let g01 = g[o + 1]!;
  let g02 = g[o + 2]!;
  let g11 = g[o + 3]!;
  let g12 = g[o + 4]!;
  let g22 = g[o + 5]!;
  for (let k = from; k < to; k++) {
    const w0 = b[k]!;
    const d0 = a0[k]! - w0;
    const d1 = a1[k]! - w0;
    const d2 = a2[k]! - w0;
    g00 += d0 * d0;
    g01 += d0 * d1;
    g02 += d0 * d2;
    g11 += d1 * d1;
    g12 += d1 * d2;
    g22 += d2 * d2;
  }
  g[o] = g00;
  g[o + 1] = g01;
  g[o + 2] = g02;
  g[o + 3] = g11;
  g[o + 4] = g12;
  g[o + 5] = g22;
}

/** Task vectors for N ≥ 4, BLOCK elements at a time; module scope is safe: kernels never await. */
const BLOCK = 2048;
const taskVectors: Float64Array[] = [];

function gramN(
  b: FloatArray,
  models: readonly FloatArray[],
  from: number,
  to: number,
  g: Float64Array,
  o: number,
) {
  const n = models.length;
  while (taskVectors.length < n) taskVectors.push(new Float64Array(BLOCK));
  for (let start = from; start < to; start += BLOCK) {
    const len = Math.min(BLOCK, to - start);
    for (let i = 0; i < n; i++) {
      const a = models[i]!;
      const d = taskVectors[i]!;
      for (let k = 0; k < len; k++) d[k] = a[start + k]! - b[start + k]!;
    }
    let idx = o;
    for (let i = 0; i < n; i++) {
      const di = taskVectors[i]!;
      for (let j = i; j < n; j++) {
        const dj = taskVectors[j]!;
        let s = g[idx]!;
        for (let k = 0; k < len; k++) s += di[k]! * dj[k]!;
        g[idx++] = s;
      }
    }
  }
}

/** out[k] = w0 + t[u]·(avg − w0), avg = (Σ w_i)/N summed in model order, in float64; t = 0 copies w0. */
export function interpolateUnits(
  base: FloatArray,
  models: readonly FloatArray[],
  count: number,
  origin: number,
  unitLength: number,
  t: Float64Array,
  out: FloatArray,
): void {
  const n = models.length;
  let k = 0;
  while (k < count) {
    const u = Math.floor((origin + k) / unitLength);
    const end = Math.min(count, (u + 1) * unitLength - origin);
    const tu = t[u]!;
    if (tu === 0) copyBase(base, k, end, out);
    else if (n === 2) interp2(base, models[0]!, models[1]!, k, end, tu, out);
    else if (n === 3) interp3(base, models[0]!, models[1]!, models[2]!, k, end, tu, out);
    else interpN(base, models, k, end, tu, out);
    k = end;
  }
}

function copyBase(b: FloatArray, from: number, to: number, out: FloatArray) {
  for (let k = from; k < to; k++) out[k] = b[k]!;
}

function interp2(
  b: FloatArray,
  a0: FloatArray,
  a1: FloatArray,
  from: number,
  to: number,
  t: number,
  out: FloatArray,
) {
  for (let k = from; k < to; k++) {
    const w0 = b[k]!;
    out[k] = w0 + t * ((a0[k]! + a1[k]!) / 2 - w0);
  }
}

function interp3(
  b: FloatArray,
  a0: FloatArray,
  a1: FloatArray,
  a2: FloatArray,
  from: number,
  to: number,
  t: number,
  out: FloatArray,
) {
  for (let k = from; k < to; k++) {
    const w0 = b[k]!;
    out[k] = w0 + t * ((a0[k]! + a1[k]! + a2[k]!) / 3 - w0);
  }
}

function interpN(
  b: FloatArray,
  models: readonly FloatArray[],
  from: number,
  to: number,
  t: number,
  out: FloatArray,
) {
  const n = models.length;
  const first = models[0]!;
  for (let k = from; k < to; k++) {
    let s = first[k]!;
    for (let i = 1; i < n; i++) s += models[i]![k]!;
    const w0 = b[k]!;
    out[k] = w0 + t * (s / n - w0);
  }
}
