/** Seeded test data shared by every backend's tests. */

export type Rng = () => number;

/** mulberry32: a tiny, fast, seeded PRNG with uniform output in [0, 1). */
export function mulberry32(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let z = a;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296;
  };
}

/** One standard normal sample (Box–Muller). */
export function gaussian(rng: Rng): number {
  const u = 1 - rng(); // (0, 1]: log stays finite
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng());
}

/** n samples of N(0, scale²). */
export function randomTensor(n: number, rng: Rng, scale = 1): Float64Array {
  const out = new Float64Array(n);
  for (let k = 0; k < n; k++) out[k] = gaussian(rng) * scale;
  return out;
}

/**
 * n fine-tunes w_i = base + d_i whose task vectors d_i have pairwise cosine exactly `cos` (up to
 * rounding) and equal norms: d = Q·Lᵀ with Q orthonormal columns (Gram–Schmidt of random vectors) and
 * L the Cholesky factor of the target Gram matrix (1 on the diagonal, `cos` off it), which exists for
 * cos ≥ −1/(n−1). Exact only when base.length ≥ n; shorter tensors get as many directions as fit.
 * Task-vector elements have an RMS of 0.1 × the base's RMS (or 0.1 for a zero base).
 */
export function correlatedModels(base: Float64Array, n: number, cos: number, rng: Rng): Float64Array[] {
  const len = base.length;
  if (cos < -1 / (n - 1) - 1e-12 || cos > 1)
    throw new RangeError(`no ${n} vectors have pairwise cosine ${cos}`);
  let sq = 0;
  for (let k = 0; k < len; k++) sq += base[k]! * base[k]!;
  const rms = len > 0 && sq > 0 ? Math.sqrt(sq / len) : 1;
  const dims = Math.min(n, len);
  const q: Float64Array[] = [];
  for (let i = 0; i < dims; i++) {
    const v = randomTensor(len, rng);
    for (const prev of q) {
      let dot = 0;
      for (let k = 0; k < len; k++) dot += v[k]! * prev[k]!;
      for (let k = 0; k < len; k++) v[k] = v[k]! - dot * prev[k]!;
    }
    let norm = 0;
    for (let k = 0; k < len; k++) norm += v[k]! * v[k]!;
    norm = Math.sqrt(norm);
    for (let k = 0; k < len; k++) v[k] = v[k]! / norm;
    q.push(v);
  }
  // Cholesky of C = (1 − cos)·I + cos·11ᵀ.
  const l: number[][] = [];
  for (let i = 0; i < n; i++) {
    const row: number[] = [];
    for (let j = 0; j <= i; j++) {
      let s = i === j ? 1 : cos;
      const lj = j === i ? row : l[j]!;
      for (let m = 0; m < j; m++) s -= row[m]! * lj[m]!;
      row.push(i === j ? Math.sqrt(Math.max(0, s)) : lj[j]! > 0 ? s / lj[j]! : 0);
    }
    l.push(row);
  }
  const scale = 0.1 * rms * Math.sqrt(len);
  return l.map((row) => {
    const w = Float64Array.from(base);
    for (let m = 0; m < Math.min(row.length, dims); m++) {
      const coef = row[m]! * scale;
      const dir = q[m]!;
      for (let k = 0; k < len; k++) w[k] = w[k]! + coef * dir[k]!;
    }
    return w;
  });
}

/** n seeded random bytes. */
export function randomBytes(n: number, seed: number): Uint8Array {
  const rng = mulberry32(seed);
  const out = new Uint8Array(n);
  for (let k = 0; k < n; k++) out[k] = (rng() * 256) | 0;
  return out;
}
