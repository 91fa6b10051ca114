import { strict as assert } from 'node:assert';
import { gramIndex, gramSize } from '../../lib/math/gram';
import { modelStock } from '../../lib/math/inMemory';
import { combineCosines, pairCosines, ratioFromCosine, unitRatio, POLE_EPSILON } from '../../lib/math/ratio';
import { referenceGram, referenceMerge } from '../helpers/reference';
import { correlatedModels, mulberry32, randomTensor } from '../helpers/random';

/** A packed Gram matrix with unit norms and the given pairwise cosines (pairs i < j in order). */
function gramOfCosines(n: number, cosines: number[]): Float64Array {
  const g = new Float64Array(gramSize(n));
  let p = 0;
  for (let i = 0; i < n; i++) {
    g[gramIndex(i, i, n)] = 1;
    for (let j = i + 1; j < n; j++) g[gramIndex(i, j, n)] = cosines[p++]!;
  }
  return g;
}

describe('ratio rules', () => {
  const rng = mulberry32(42);

  it('N = 2: t = 2c/(1+c)', () => {
    for (const c of [1, 0.9, 0.5, 0.1, 0, -0.3, -0.9]) {
      const r = unitRatio(gramOfCosines(2, [c]), 0, 2, 'mean-cos');
      assert.equal(r.c, c);
      assert.equal(r.t, (2 * c) / (1 + c));
      assert.equal(r.pole, false);
    }
    // 1 + (N−1)·c ≤ 1e-6 is the pole.
    assert.equal(ratioFromCosine(-1 + POLE_EPSILON / 2, 2).pole, true);
    assert.deepEqual(ratioFromCosine(-0.5, 3), { t: 0, pole: true });
    assert.equal(ratioFromCosine(-1 + 2 * POLE_EPSILON, 2).pole, false);
  });

  it('N = 3, mean-cos and mean-angle, against hand-computed values', () => {
    const g = gramOfCosines(3, [0.5, 0.2, -0.1]);
    const meanCos = unitRatio(g, 0, 3, 'mean-cos');
    assert.deepEqual(meanCos.cosines, [0.5, 0.2, -0.1]);
    assert.ok(Math.abs(meanCos.c - 0.2) < 1e-15);
    assert.ok(Math.abs(meanCos.t - 0.6 / 1.4) < 1e-15); // 3·0.2 / (1 + 2·0.2)
    // acos: 1.0471975511965979, 1.369438406004566, 1.6709637479564565; mean 1.36253323505254
    const meanAngle = unitRatio(g, 0, 3, 'mean-angle');
    assert.ok(Math.abs(meanAngle.c - 0.20676083628215403) < 1e-14);
    assert.ok(Math.abs(meanAngle.t - 0.4388206568642069) < 1e-14);
  });

  it('cos is 0 when a task vector is zero, clamped to [−1, 1], and uses per-factor square roots', () => {
    assert.deepEqual(pairCosines([0, 0, 4], 0, 2), [0]);
    assert.deepEqual(pairCosines([4, 0, 0], 0, 2), [0]);
    assert.deepEqual(pairCosines([1, 1 + 1e-12, 1], 0, 2), [1]);
    assert.deepEqual(pairCosines([1, -1 - 1e-12, 1], 0, 2), [-1]);
    assert.deepEqual(pairCosines([1e300, 1e300, 1e300], 0, 2), [1]); // G_ii·G_jj would overflow
    assert.equal(combineCosines([1, -1], 'mean-angle'), Math.cos(Math.PI / 2));
  });

  it('zero task vector: cos 0, t 0, output exactly the base', () => {
    const base = randomTensor(101, rng);
    base[3] = -0;
    const models = [Float64Array.from(base), correlatedModels(base, 2, 0.5, rng)[0]!];
    const gram = referenceGram(base, models, base.length);
    assert.equal(gram[0], 0);
    const r = unitRatio(gram, 0, 2, 'mean-cos');
    assert.deepEqual(r.cosines, [0]);
    assert.equal(r.t, 0);
    const merged = modelStock(base, models);
    assert.equal(merged.t, 0);
    assert.deepEqual(merged.merged, base);
    assert.ok(Object.is(merged.merged[3], -0));
  });

  it('identical fine-tunes: t = 1, output the average (= each fine-tune)', () => {
    const base = randomTensor(257, rng);
    const [w] = correlatedModels(base, 2, 0.3, rng);
    const r = modelStock(base, [w!, Float64Array.from(w!), Float64Array.from(w!)]);
    assert.ok(Math.abs((r.t as number) - 1) < 1e-15, `t = ${r.t}`);
    for (let k = 0; k < base.length; k++) {
      assert.ok(Math.abs(r.merged[k]! - w![k]!) <= 4 * Number.EPSILON * Math.abs(w![k]!) + 1e-300);
    }
  });

  it('opposite fine-tunes, N = 2: c = −1 is the pole, t = 0 and flagged', () => {
    const base = randomTensor(64, rng);
    const d = randomTensor(64, rng, 0.1);
    const w1 = base.map((v, k) => v + d[k]!);
    const w2 = base.map((v, k) => v - d[k]!);
    const r = modelStock(base, [w1, w2]);
    assert.ok((r.c as number) <= -1 + 1e-12);
    assert.equal(r.pole, true);
    assert.equal(r.t, 0);
    assert.deepEqual(r.merged, base);
  });

  it('negative cos keeps t < 0 (faithful to the formula)', () => {
    const base = randomTensor(500, rng);
    const models = correlatedModels(base, 2, -0.4, rng);
    const r = modelStock(base, models);
    assert.ok(Math.abs((r.c as number) + 0.4) < 1e-9, `c = ${r.c}`);
    assert.ok(Math.abs((r.t as number) - (2 * -0.4) / 0.6) < 1e-8);
    assert.equal(r.pole, false);
    const ref = referenceMerge(base, models, { unitLength: 500, theta: 'mean-cos' });
    assert.deepEqual(r.merged, ref.out);
  });

  it('correlatedModels produces the requested pairwise cosine', () => {
    for (const [n, cos] of [
      [2, 0.7],
      [3, 0.2],
      [4, -0.25],
      [5, 0.9],
    ] as const) {
      const base = randomTensor(300, rng);
      const models = correlatedModels(base, n, cos, rng);
      const r = unitRatio(referenceGram(base, models, 300), 0, n, 'mean-cos');
      for (const c of r.cosines) assert.ok(Math.abs(c - cos) < 1e-12, `n=${n}: ${c} vs ${cos}`);
    }
  });
});
