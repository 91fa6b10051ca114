import type { FloatDType } from '../dtype';
import { decodeFloats } from './codec';
import { gramIndex, gramSize } from './gram';

/**
 * Model Stock on low-rank task vectors, in plain TypeScript (the js backend's low-rank session; the
 * native kernels in native/lowrank*.{h,cc} do the same in SIMD). A stored tensor [R, C] gets from
 * fine-tune i the task vector d_i = s_i·U_i·V_i in stored-row order: plain (Linear) U = lora_B [R, r],
 * V = lora_A [r, C]; transposed (Conv1D, fan_in_fan_out) U = lora_Aᵀ, V = lora_Bᵀ. Each pair is decoded
 * exactly to float64 and rewritten as d_i = s_i·Y_i·Q_i with Q_i's rows orthonormal (V_i = L_i·Q_i,
 * Y_i = U_i·L_i: see orthonormalizeRows); the fine-tunes' Y and Q are concatenated along the rank
 * (S = Σ r_i; a zero task vector adds nothing).
 *
 *   ⟨d_i, d_j⟩ = s_i s_j Σ_{a∈i, b∈j} (YᵀY)_ab·(QQᵀ)_ab                    (layer-wise)
 *   ⟨d_i, d_j⟩_k = s_i s_j Σ_{a∈i} Y_ka Σ_{b∈j} (QQᵀ)_ab Y_kb                (filter-wise, row k)
 *   merged row k = w0_k + Σ_a (t_k/N)·s_{i(a)}·Y_ka·Q_a                     (the output)
 *
 * Why orthonormalize: the same identities on the raw factors round like Σ|UᵀU|⊙|VVᵀ|, which exceeds
 * ‖d_i‖‖d_j‖ by the square of any cancellation κ between an adapter's rank terms (PEFT's "cat" adapters
 * B1·A1 − B2·A2; merged adapters fed back in). Measured against the dense float64 Gram on a [23, 70]
 * tensor: κ = 2^12 left ~1e-8 in the raw identity's diagonal and up to 5e-10 in its cosines, κ = 2^16
 * 1e-7 in the cosines (outside the contract's 1e-9); orthonormalized, ~1e-13 and ~1e-14 at both, and
 * 5e-12 at κ = 2^20 — the error is then linear in κ, as the dense Gram's is. The output is accumulated
 * in float64 (native/lowrank_impl.h says why not float32).
 */

/** See orthonormalizeRows: 4·2^-52. */
const DEPENDENT = 4 * 2 ** -52;

/**
 * V (rank × cols, row-major) becomes Q with V = L·Q: L lower-triangular (rank × rank, zero-filled by
 * the caller), Q's rows orthonormal — modified Gram–Schmidt, twice ("twice is enough"); a row left with
 * less than DEPENDENT·rank·‖v_a‖ is numerically dependent on earlier ones and its row of Q is zero (what
 * is dropped is no larger than the rounding error). The same operations in the same order as
 * native/lowrank.cc, so the js backend and the native scalar kernels write the same bytes.
 */
export function orthonormalizeRows(v: Float64Array, rank: number, cols: number, l: Float64Array): void {
  for (let a = 0; a < rank; a++) orthonormalizeRow(v, a, rank, cols, l);
}

/**
 * Σ x[xo + c]·y[yo + c], c < n, in four interleaved partial sums added as (s0 + s1) + (s2 + s3): four
 * independent chains, in the order native/lowrank.cc dot() uses.
 */
function dot(x: Float64Array, xo: number, y: Float64Array, yo: number, n: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let c = 0;
  for (; c + 4 <= n; c += 4) {
    s0 += x[xo + c]! * y[yo + c]!;
    s1 += x[xo + c + 1]! * y[yo + c + 1]!;
    s2 += x[xo + c + 2]! * y[yo + c + 2]!;
    s3 += x[xo + c + 3]! * y[yo + c + 3]!;
  }
  if (c < n) s0 += x[xo + c]! * y[yo + c]!;
  if (c + 1 < n) s1 += x[xo + c + 1]! * y[yo + c + 1]!;
  if (c + 2 < n) s2 += x[xo + c + 2]! * y[yo + c + 2]!;
  return s0 + s1 + (s2 + s3);
}

/** Row a of orthonormalizeRows (rows 0 … a − 1 done). */
function orthonormalizeRow(v: Float64Array, a: number, rank: number, cols: number, l: Float64Array): void {
  const qa = a * cols;
  const norm = Math.sqrt(dot(v, qa, v, qa, cols));
  for (let pass = 0; pass < 2; pass++) {
    for (let b = 0; b < a; b++) {
      const qb = b * cols;
      const h = dot(v, qb, v, qa, cols);
      for (let c = 0; c < cols; c++) v[qa + c] = v[qa + c]! - h * v[qb + c]!;
      l[a * rank + b] = l[a * rank + b]! + h;
    }
  }
  const rest = Math.sqrt(dot(v, qa, v, qa, cols));
  if (rest <= DEPENDENT * rank * norm) {
    v.fill(0, qa, qa + cols);
    l[a * rank + a] = 0;
  } else {
    l[a * rank + a] = rest;
    for (let c = 0; c < cols; c++) v[qa + c] = v[qa + c]! / rest;
  }
}

/** One fine-tune's factors, as the backend seam gives them (lib/engine/backend.ts LowRankFactor). */
export interface FactorBytes {
  readonly a: Uint8Array;
  readonly aDtype: FloatDType;
  readonly b: Uint8Array;
  readonly bDtype: FloatDType;
  readonly rank: number;
  readonly transposed: boolean;
}

/** The concatenated factors of a tensor, for rows [uFirstRow, uFirstRow + uRows) of U. */
export interface DecodedFactors {
  readonly n: number;
  /** Factor i owns rank columns [offsets[i], offsets[i + 1]); offsets[n] = S. */
  readonly offsets: Int32Array;
  /** The factor of each rank column (S entries). */
  readonly factorOf: Int32Array;
  readonly uFirstRow: number;
  readonly uRows: number;
  readonly cols: number;
  /** Yᵀ: S × uRows, row-major (ut[a·uRows + k] = Y(uFirstRow + k, a)). */
  readonly ut: Float64Array;
  /** Q: S × cols, row-major. */
  readonly v: Float64Array;
}

export function rankOf(f: DecodedFactors): number {
  return f.offsets[f.n]!;
}

/**
 * Decodes the factors of a tensor of `rows` stored rows and `cols` columns; Y only for rows
 * [uFirstRow, uFirstRow + uRows). A generator that yields the multiply-adds each step took, so a caller
 * on the event loop can give it a turn between steps (runSteps).
 */
export function* decodeFactorSteps(
  factors: readonly (FactorBytes | undefined)[],
  rows: number,
  cols: number,
  uFirstRow: number,
  uRows: number,
): Generator<number, DecodedFactors> {
  const n = factors.length;
  const offsets = new Int32Array(n + 1);
  factors.forEach((f, i) => (offsets[i + 1] = offsets[i]! + (f?.rank ?? 0)));
  const S = offsets[n]!;
  const factorOf = new Int32Array(S);
  const ut = new Float64Array(S * uRows);
  const v = new Float64Array(S * cols);
  for (const [i, f] of factors.entries()) {
    const o = offsets[i]!;
    factorOf.fill(i, o, offsets[i + 1]);
    if (f === undefined) continue;
    const r = f.rank;
    const a = decodeFloats(f.a, f.aDtype) as Float64Array;
    const b = decodeFloats(f.b, f.bDtype) as Float64Array;
    // V = lora_A ([r, C]) or lora_Bᵀ (B is [C, r]), orthonormalized in place: V = L·Q.
    const q = v.subarray(o * cols, (o + r) * cols);
    if (f.transposed) {
      for (let x = 0; x < r; x++) for (let c = 0; c < cols; c++) q[x * cols + c] = b[c * r + x]!;
    } else {
      q.set(a.subarray(0, r * cols));
    }
    yield r * (rows + cols);
    const l = new Float64Array(r * r);
    for (let x = 0; x < r; x++) {
      orthonormalizeRow(q, x, r, cols, l);
      yield 4 * (x + 1) * cols;
    }
    // Y = U·L, U = lora_B ([R, r]) or lora_Aᵀ (A is [r, R]).
    const row = new Float64Array(r);
    const y = new Float64Array(r);
    for (let k = 0; k < uRows; k++) {
      const stored = uFirstRow + k;
      for (let x = 0; x < r; x++) row[x] = f.transposed ? a[x * rows + stored]! : b[stored * r + x]!;
      // y_b = Σ_{x ≥ b} row_x·L_xb, each sum in ascending x (native/lowrank.cc's order).
      y.fill(0);
      for (let x = 0; x < r; x++) for (let q = 0; q <= x; q++) y[q] = y[q]! + row[x]! * l[x * r + q]!;
      for (let q = 0; q < r; q++) ut[(o + q) * uRows + k] = y[q]!;
      yield (r * r) / 2;
    }
  }
  return { n, offsets, factorOf, uFirstRow, uRows, cols, ut, v };
}

/** decodeFactorSteps run to the end at once. */
export function decodeFactors(
  factors: readonly (FactorBytes | undefined)[],
  rows: number,
  cols: number,
  uFirstRow: number,
  uRows: number,
): DecodedFactors {
  const steps = decodeFactorSteps(factors, rows, cols, uFirstRow, uRows);
  for (;;) {
    const step = steps.next();
    if (step.done === true) return step.value;
  }
}

/**
 * X·Xᵀ (S × S, symmetric) for X = S rows of `length` elements, row-major, sums in index order; a
 * generator yielding the multiply-adds of each row of the result.
 */
export function* rowProductSteps(
  x: Float64Array,
  S: number,
  length: number,
): Generator<number, Float64Array> {
  const m = new Float64Array(S * S);
  for (let a = 0; a < S; a++) {
    const xa = a * length;
    for (let b = a; b < S; b++) {
      const xb = b * length;
      let s = 0;
      for (let k = 0; k < length; k++) s += x[xa + k]! * x[xb + k]!;
      m[a * S + b] = s;
      m[b * S + a] = s;
    }
    yield (S - a) * length;
  }
  return m;
}

/** The layer-wise Gram (P accumulators) from MU = YᵀY and MV = QQᵀ. */
export function layerGram(
  f: DecodedFactors,
  mu: Float64Array,
  mv: Float64Array,
  scales: Float64Array,
): Float64Array {
  const { n, offsets } = f;
  const S = rankOf(f);
  const gram = new Float64Array(gramSize(n));
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      let sum = 0;
      for (let a = offsets[i]!; a < offsets[i + 1]!; a++)
        for (let b = offsets[j]!; b < offsets[j + 1]!; b++) sum += mu[a * S + b]! * mv[a * S + b]!;
      gram[gramIndex(i, j, n)] = scales[i]! * scales[j]! * sum;
    }
  }
  return gram;
}

/** The filter-wise Gram of Y's rows [from, to), into gram[k·P …] (k counted from Y's first row). */
export function rowGram(
  f: DecodedFactors,
  mv: Float64Array,
  scales: Float64Array,
  from: number,
  to: number,
  gram: Float64Array,
): void {
  const { n, offsets, factorOf, ut, uRows } = f;
  const S = rankOf(f);
  const p = gramSize(n);
  const u = new Float64Array(S);
  const acc = new Float64Array(p);
  for (let k = from; k < to; k++) {
    for (let a = 0; a < S; a++) u[a] = ut[a * uRows + k]!;
    acc.fill(0);
    for (let j = 0; j < n; j++) {
      const b0 = offsets[j]!;
      const b1 = offsets[j + 1]!;
      if (b0 === b1) continue;
      for (let a = 0; a < b1; a++) {
        let z = 0;
        for (let b = b0; b < b1; b++) z += mv[a * S + b]! * u[b]!;
        const g = gramIndex(factorOf[a]!, j, n);
        acc[g] = acc[g]! + u[a]! * z;
      }
    }
    for (let i = 0; i < n; i++)
      for (let j = i; j < n; j++) {
        const g = gramIndex(i, j, n);
        gram[k * p + g] = scales[i]! * scales[j]! * acc[g]!;
      }
  }
}

/**
 * Row k of Y (relative to its first row) times the coefficients, into `acc` (cols): Σ_a coef[i(a)]·Y_ka·Q_a,
 * summed in rank order from 0 (the native scalar kernel's order), then out_c = w0_c + acc_c.
 */
export function mergedRow(
  f: DecodedFactors,
  k: number,
  coef: ArrayLike<number>,
  w0: ArrayLike<number>,
  acc: Float64Array,
  out: Float64Array,
): void {
  const { ut, v, uRows, cols, factorOf } = f;
  const S = rankOf(f);
  acc.fill(0, 0, cols);
  for (let a = 0; a < S; a++) {
    const c = coef[factorOf[a]!]! * ut[a * uRows + k]!;
    const va = a * cols;
    for (let x = 0; x < cols; x++) acc[x] = acc[x]! + c * v[va + x]!;
  }
  for (let x = 0; x < cols; x++) out[x] = w0[x]! + acc[x]!;
}
