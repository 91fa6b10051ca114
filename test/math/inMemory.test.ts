import { strict as assert } from 'node:assert';
import type { FloatDType } from '../../lib/dtype';
import { createBackend } from '../../lib/engine/registry';
import { isModelStockError, type ErrorCode } from '../../lib/errors';
import { decodeFloats } from '../../lib/math/codec';
import { modelStock, modelStockTensors } from '../../lib/math/inMemory';
import { unitRatio } from '../../lib/math/ratio';
import { referenceGram, referenceMerge } from '../helpers/reference';
import { correlatedModels, mulberry32, randomTensor } from '../helpers/random';

function throwsCode(fn: () => unknown, code: ErrorCode, message?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isModelStockError(e), `not a ModelStockError: ${String(e)}`);
    assert.equal(e.code, code);
    if (message) assert.match(e.message, message);
    return true;
  });
}

const bytesOf = (a: Float32Array | Float64Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** The file path: the JS backend over the same values as F32/F64 windows, with t from its Gram. */
async function filePath(
  base: Float32Array | Float64Array,
  models: (Float32Array | Float64Array)[],
  unitLength: number,
  outDtype: FloatDType,
): Promise<{ out: Float64Array; t: Float64Array }> {
  const dtypeOf = (a: Float32Array | Float64Array): FloatDType => (a instanceof Float32Array ? 'F32' : 'F64');
  const inputs = [base, ...models];
  const session = createBackend('js').openTensor({
    name: 'w',
    dtypes: inputs.map(dtypeOf),
    outDtype,
    numel: base.length,
    unitLength,
  });
  const window = { firstElement: 0, count: base.length, inputs: inputs.map(bytesOf) };
  await session.gram(window);
  const gram = await session.gramResult();
  const units = base.length / unitLength;
  const t = new Float64Array(units);
  for (let u = 0; u < units; u++)
    t[u] = unitRatio(gram, (u * gram.length) / units, models.length, 'mean-cos').t;
  const out = new Uint8Array(base.length * (outDtype === 'F32' ? 4 : 8));
  await session.interpolate(window, t, out);
  await session.close();
  return { out: decodeFloats(out, outDtype) as Float64Array, t };
}

describe('modelStock (in memory)', () => {
  const rng = mulberry32(2024);

  it('Float32Array, layer-wise and filter-wise: the file path bit for bit', async () => {
    for (const n of [2, 3, 5]) {
      const base64 = randomTensor(6 * 777, rng, 0.02);
      const base = Float32Array.from(base64);
      const models = correlatedModels(base64, n, 0.35, rng).map((m) => Float32Array.from(m));
      const layer = modelStock(base, models);
      assert.ok(layer.merged instanceof Float32Array);
      const ref = await filePath(base, models, base.length, 'F32');
      assert.deepEqual(Float64Array.from(layer.merged), ref.out);
      assert.equal(layer.t, ref.t[0]);
      assert.equal((layer.cosines as number[]).length, (n * (n - 1)) / 2);
      assert.equal(layer.pole, false);

      const rows = modelStock(base, models, { rows: 6 });
      assert.ok(rows.t instanceof Float64Array && rows.t.length === 6);
      assert.equal((rows.cosines as number[][]).length, 6);
      assert.equal((rows.pole as boolean[]).length, 6);
      const refRows = await filePath(base, models, 777, 'F32');
      assert.deepEqual(Float64Array.from(rows.merged), refRows.out);
      assert.deepEqual(rows.t, refRows.t);
    }
  });

  it('Float64Array: equals referenceMerge (same float64 formula)', () => {
    const base = randomTensor(4 * 250, rng);
    const models = correlatedModels(base, 3, 0.6, rng);
    for (const rows of [undefined, 4]) {
      const r = modelStock(base, models, { rows, theta: 'mean-angle' });
      const ref = referenceMerge(base, models, { unitLength: rows ? 250 : 1000, theta: 'mean-angle' });
      assert.ok(r.merged instanceof Float64Array);
      assert.deepEqual(r.merged, ref.out);
      assert.deepEqual(rows ? r.t : [r.t], rows ? ref.t : [ref.t[0]]);
      const c = rows ? (r.c as Float64Array)[0]! : (r.c as number);
      const cos = unitRatio(referenceGram(base, models, rows ? 250 : 1000), 0, 3, 'mean-angle').c;
      assert.ok(Math.abs(c - cos) < 1e-12);
    }
  });

  it('writes into `out`, including in place over the base or a fine-tune', () => {
    const base = Float32Array.from(randomTensor(300, rng));
    const models = correlatedModels(Float64Array.from(base), 2, 0.5, rng).map((m) => Float32Array.from(m));
    const want = modelStock(base, models).merged;
    const out64 = new Float64Array(300);
    assert.equal(modelStock(base, models, { out: out64 }).merged, out64);
    for (let k = 0; k < 300; k++) assert.equal(Math.fround(out64[k]!), want[k]);
    const inPlace = Float32Array.from(models[0]!);
    const r = modelStock(base, [inPlace, models[1]!], { out: inPlace });
    assert.equal(r.merged, inPlace);
    assert.deepEqual(inPlace, want);
    const baseCopy = Float32Array.from(base);
    modelStock(baseCopy, models, { out: baseCopy });
    assert.deepEqual(baseCopy, want);
  });

  it('validates its inputs', () => {
    const a = new Float32Array(12).fill(1);
    const b = new Float32Array(12).fill(2);
    const c = new Float32Array(12).fill(3);
    throwsCode(() => modelStock(a, [b]), 'TOO_FEW_MODELS');
    throwsCode(() => modelStock(a, []), 'TOO_FEW_MODELS');
    throwsCode(() => modelStock(a, [b, new Float32Array(11)]), 'SHAPE_MISMATCH', /fine-tuned model 1/);
    throwsCode(() => modelStock(a, [b, c], { rows: 5 }), 'SHAPE_MISMATCH', /rows/);
    throwsCode(() => modelStock(a, [b, c], { rows: 0 }), 'SHAPE_MISMATCH');
    throwsCode(() => modelStock(a, [b, c], { out: new Float32Array(3) }), 'SHAPE_MISMATCH');
    throwsCode(
      () => modelStock(a, [b, c], { out: new Float32Array(b.buffer, 4, 12 - 1) as Float32Array }),
      'SHAPE_MISMATCH',
    );
    const shared = new Float32Array(30);
    throwsCode(
      () => modelStock(shared.subarray(0, 12), [b, c], { out: shared.subarray(4, 16) }),
      'BAD_CONFIG',
      /overlap/,
    );
    throwsCode(() => modelStock(a, [b, c], { theta: 'median' as never }), 'BAD_CONFIG');
    throwsCode(() => modelStock(a, [b, [1, 2] as never]), 'BAD_CONFIG');
    const bad = Float32Array.from(c);
    bad[7] = NaN;
    throwsCode(() => modelStock(a, [b, bad]), 'NON_FINITE', /fine-tuned model 1 has NaN at element 7/);
    const inf = new Float64Array(12);
    inf[0] = -Infinity;
    throwsCode(() => modelStock(inf, [b, c]), 'NON_FINITE', /base/);
  });

  it('an empty tensor merges to an empty tensor', () => {
    const r = modelStock(new Float32Array(0), [new Float32Array(0), new Float32Array(0)]);
    assert.equal(r.merged.length, 0);
    assert.equal(r.t, 0);
  });
});

describe('modelStockTensors (state dict)', () => {
  const rng = mulberry32(77);

  it('merges each tensor over the fine-tunes that have it, copies the rest, drops extras', () => {
    const names = ['embed', 'layer.0.weight', 'layer.0.bias', 'head'];
    const base: Record<string, Float32Array> = {};
    for (const name of names)
      base[name] = Float32Array.from(randomTensor(name === 'layer.0.weight' ? 4 * 50 : 30, rng));
    const fine: Record<string, Float32Array>[] = [{}, {}, {}];
    for (const name of names) {
      const models = correlatedModels(Float64Array.from(base[name]!), 3, 0.4, rng);
      models.forEach((m, i) => (fine[i]![name] = Float32Array.from(m)));
    }
    delete fine[1]!['layer.0.bias']; // present in 2 → merged over models 0 and 2
    delete fine[0]!['head'];
    delete fine[2]!['head']; // present in 1 → copied
    fine[2]!['extra'] = new Float32Array(3);

    const r = modelStockTensors(base, fine, { rows: { 'layer.0.weight': 4 } });
    assert.deepEqual(Object.keys(r.merged), names);
    assert.deepEqual(r.dropped, ['extra']);

    assert.equal(r.tensors['embed']!.action, 'merge');
    assert.deepEqual(
      r.merged['embed'],
      modelStock(
        base['embed']!,
        fine.map((f) => f['embed']!),
      ).merged,
    );

    const w = r.tensors['layer.0.weight']!;
    assert.ok(w.t instanceof Float64Array && w.t.length === 4);
    const rows = modelStock(
      base['layer.0.weight']!,
      fine.map((f) => f['layer.0.weight']!),
      { rows: 4 },
    );
    assert.deepEqual(r.merged['layer.0.weight'], rows.merged);

    const bias = r.tensors['layer.0.bias']!;
    assert.equal(bias.action, 'merge');
    assert.deepEqual(bias.models, [0, 2]);
    assert.match(bias.reason!, /missing in fine-tuned model\(s\) 1/);
    assert.deepEqual(
      r.merged['layer.0.bias'],
      modelStock(base['layer.0.bias']!, [fine[0]!['layer.0.bias']!, fine[2]!['layer.0.bias']!]).merged,
    );

    assert.equal(r.tensors['head']!.action, 'copy');
    assert.deepEqual(r.tensors['head']!.models, [1]);
    assert.deepEqual(r.merged['head'], base['head']);
    assert.notEqual(r.merged['head'], base['head']); // a copy, not the base's own array
  });

  it('names the tensor and the original model index in errors, and writes into `out`', () => {
    const base = { a: new Float32Array(4), b: new Float32Array(4) };
    const ok = (v: number) => ({ a: new Float32Array(4).fill(v), b: new Float32Array(4).fill(-v) });
    const bad = { b: Float32Array.from([1, 2, NaN, 4]) };
    throwsCode(
      () => modelStockTensors(base, [ok(1), bad, ok(2)]),
      'NON_FINITE',
      /tensor "b".*fine-tuned model 1/,
    );
    throwsCode(
      () => modelStockTensors(base, [ok(1), { a: new Float32Array(5) }, ok(2)]),
      'SHAPE_MISMATCH',
      /"a"/,
    );
    throwsCode(() => modelStockTensors(base, [ok(1)]), 'TOO_FEW_MODELS');
    const live = { a: new Float32Array(4), b: new Float32Array(4) };
    const r = modelStockTensors(base, [ok(1), ok(3)], { out: live });
    assert.equal(r.merged['a'], live.a);
    assert.equal(r.merged['b'], live.b);
    assert.deepEqual([...live.a], [2, 2, 2, 2]); // task vectors parallel: t = 1, the average
  });
});
