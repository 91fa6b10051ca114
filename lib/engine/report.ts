import { gramSize } from '../math/gram';
import { unitRatio, type ThetaRule } from '../math/ratio';
import type { MergeStep } from '../plan/plan';
import type { RatioStats, TensorReport } from '../types';

/**
 * Gram matrix → cosines → c → t per unit, with the tensor's report entry and the pole / negative-cosine
 * warnings (docs/merge-contract.md).
 */

function stats(values: ArrayLike<number>): RatioStats {
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i] as number;
    if (v < min) min = v;
    if (v > max) max = v;
    sum += v;
  }
  return { min, mean: sum / values.length, max };
}

/** What the ratios of a merged tensor need from its plan step (a dense or a low-rank one). */
export type RatioStep = Pick<
  MergeStep,
  'name' | 'note' | 'modelIndices' | 'base' | 'outDtype' | 'shape' | 'rows' | 'units' | 'untouched'
> & { readonly inputs: { readonly length: number } };

export function ratios(
  step: RatioStep,
  gram: Float64Array,
  theta: ThetaRule,
  warn: (m: string) => void,
  negative: string[],
): { t: Float64Array; report: TensorReport } {
  const n = step.inputs.length;
  const p = gramSize(n);
  const t = new Float64Array(step.units);
  const base = {
    name: step.name,
    action: 'merge' as const,
    ...(step.note !== undefined ? { reason: step.note } : {}),
    n,
    models: step.modelIndices,
    dtype: step.base.dtype,
    outDtype: step.outDtype,
    shape: step.shape,
    ...(step.rows !== undefined ? { rows: step.rows } : {}),
    ...(step.untouched.length > 0 ? { untouched: step.untouched } : {}),
  };
  if (step.units === 1) {
    const r = unitRatio(gram, 0, n, theta);
    t[0] = r.t;
    if (r.pole) {
      warn(
        `${step.name}: c = ${r.c.toFixed(4)} is at the pole 1 + (N−1)·c ≤ 1e-6; t set to 0 (the base is kept)`,
      );
    } else if (r.c < 0) negative.push(step.name);
    return { t, report: { ...base, cosines: r.cosines, c: r.c, t: r.t, pole: r.pole } };
  }
  const pairs = (n * (n - 1)) / 2;
  const cosByPair = Array.from({ length: pairs }, () => new Float64Array(step.units));
  const c = new Float64Array(step.units);
  let poles = 0;
  let negatives = 0;
  for (let u = 0; u < step.units; u++) {
    const r = unitRatio(gram, u * p, n, theta);
    t[u] = r.t;
    c[u] = r.c;
    r.cosines.forEach((v, j) => ((cosByPair[j] as Float64Array)[u] = v));
    if (r.pole) poles++;
    else if (r.c < 0) negatives++;
  }
  if (poles > 0)
    warn(`${step.name}: ${poles} of ${step.units} rows at the pole; their t set to 0 (base rows kept)`);
  if (negatives > 0) negative.push(`${step.name} (${negatives} of ${step.units} rows)`);
  return {
    t,
    report: {
      ...base,
      cosines: cosByPair.map(stats),
      cStats: stats(c),
      tStats: stats(t),
      pole: poles > 0,
    },
  };
}
