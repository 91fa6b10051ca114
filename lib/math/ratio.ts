import { gramIndex } from './gram';

/** How the N(N−1)/2 pairwise cosines become one c (docs/merge-contract.md). */
export type ThetaRule = 'mean-cos' | 'mean-angle';

/** At or below this, 1 + (N−1)·c is the pole: t is set to 0 and a warning raised. */
export const POLE_EPSILON = 1e-6;

export interface UnitRatio {
  /** cos_ij for pairs i < j, in order (0,1) (0,2) … (1,2) … */
  readonly cosines: number[];
  /** The combined cosine c. */
  readonly c: number;
  /** Interpolation ratio t = N·c / (1 + (N−1)·c); 0 at the pole. */
  readonly t: number;
  readonly pole: boolean;
}

/** cos_ij = G_ij / sqrt(G_ii·G_jj), 0 when either norm is 0, clamped to [−1, 1]. */
export function pairCosines(gram: ArrayLike<number>, offset: number, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const gii = gram[offset + gramIndex(i, i, n)] as number;
      const gjj = gram[offset + gramIndex(j, j, n)] as number;
      const gij = gram[offset + gramIndex(i, j, n)] as number;
      if (gii === 0 || gjj === 0) {
        out.push(0);
        continue;
      }
      // sqrt of each factor separately: the product of two large sums can overflow where the cosine cannot.
      const cos = gij / (Math.sqrt(gii) * Math.sqrt(gjj));
      out.push(Math.min(1, Math.max(-1, cos)));
    }
  }
  return out;
}

export function combineCosines(cosines: readonly number[], theta: ThetaRule): number {
  if (cosines.length === 0) return 0;
  if (theta === 'mean-cos') {
    let s = 0;
    for (const c of cosines) s += c;
    return s / cosines.length;
  }
  let a = 0;
  for (const c of cosines) a += Math.acos(c);
  return Math.cos(a / cosines.length);
}

/** t = N·c / (1 + (N−1)·c), with the pole rule. */
export function ratioFromCosine(c: number, n: number): { t: number; pole: boolean } {
  const denom = 1 + (n - 1) * c;
  if (denom <= POLE_EPSILON) return { t: 0, pole: true };
  return { t: (n * c) / denom, pole: false };
}

/** The whole rule for one unit whose Gram accumulators start at `offset`. */
export function unitRatio(gram: ArrayLike<number>, offset: number, n: number, theta: ThetaRule): UnitRatio {
  const cosines = pairCosines(gram, offset, n);
  const c = combineCosines(cosines, theta);
  const { t, pole } = ratioFromCosine(c, n);
  return { cosines, c, t, pole };
}
