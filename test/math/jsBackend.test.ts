import { strict as assert } from 'node:assert';
import { FLOAT_DTYPES, floatSize, type FloatDType } from '../../lib/dtype';
import { gramSize, type InputWindow } from '../../lib/engine/backend';
import { JsBackend } from '../../lib/engine/js';
import { decodeFloats, encodeFloats } from '../../lib/math/codec';
import { pairCosines, unitRatio, type ThetaRule } from '../../lib/math/ratio';
import { assertWithinContract, referenceGram, referenceMerge } from '../../lib/math/reference';
import { correlatedModels, mulberry32, randomTensor, type Rng } from '../helpers/random';

interface Case {
  /** Decoded inputs: exactly what the backend sees. */
  base: Float64Array;
  models: Float64Array[];
  windows: InputWindow[];
  unitLength: number;
  units: number;
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** unitLength: the whole tensor layer-wise or for rank ≤ 1; one row of [shape[0], rest] filter-wise. */
function unitLengthOf(shape: readonly number[], filterWise: boolean): number {
  return filterWise && shape.length >= 2 ? numel(shape) / shape[0]! : numel(shape);
}

/** `bytes` copied to `shift` bytes past an 8-aligned start, so views at any alignment are tested. */
function at(bytes: Uint8Array, shift: number): Uint8Array {
  const host = new Uint8Array(bytes.byteLength + 16);
  host.set(bytes, shift);
  return host.subarray(shift, shift + bytes.byteLength);
}

function makeCase(
  rng: Rng,
  shape: readonly number[],
  dtypes: readonly FloatDType[],
  filterWise: boolean,
  cos = 0.4,
  shift = 0,
): Case {
  const n = dtypes.length - 1;
  const len = numel(shape);
  const raw = randomTensor(len, rng, 0.05);
  const fine = correlatedModels(raw, n, cos, rng);
  const windows = [raw, ...fine].map((v, i) => ({
    bytes: at(encodeFloats(v, dtypes[i]!), shift * i),
    dtype: dtypes[i]!,
  }));
  const decoded = windows.map((w) => decodeFloats(w.bytes, w.dtype) as Float64Array);
  const unitLength = unitLengthOf(shape, filterWise);
  return {
    base: decoded[0]!,
    models: decoded.slice(1),
    windows,
    unitLength,
    units: len === 0 ? 0 : len / unitLength,
  };
}

/** Runs both passes over windows cut at `cuts` (element indices); returns the Gram, t and output bytes. */
async function runBackend(
  be: JsBackend,
  c: Case,
  outDtype: FloatDType,
  theta: ThetaRule,
  cuts: number[] = [],
  outShift = 0,
): Promise<{ gram: Float64Array; t: Float64Array; out: Uint8Array }> {
  const len = c.base.length;
  const n = c.models.length;
  const bounds = [0, ...cuts.filter((x) => x > 0 && x < len).sort((a, b) => a - b), len];
  const slices = (first: number, count: number) =>
    c.windows.map((w) => {
      const size = floatSize(w.dtype);
      return { bytes: w.bytes.subarray(first * size, (first + count) * size), dtype: w.dtype };
    });
  const gram = new Float64Array(c.units * gramSize(n));
  for (let b = 0; b + 1 < bounds.length; b++) {
    const first = bounds[b]!;
    const count = bounds[b + 1]! - first;
    const [base, ...models] = slices(first, count);
    await be.gram({ base: base!, models, count, firstElement: first, unitLength: c.unitLength, gram });
  }
  const t = new Float64Array(c.units);
  for (let u = 0; u < c.units; u++) t[u] = unitRatio(gram, u * gramSize(n), n, theta).t;
  const outSize = floatSize(outDtype);
  const out = at(new Uint8Array(len * outSize), outShift);
  for (let b = 0; b + 1 < bounds.length; b++) {
    const first = bounds[b]!;
    const count = bounds[b + 1]! - first;
    const [base, ...models] = slices(first, count);
    await be.interpolate({
      base: base!,
      models,
      count,
      firstElement: first,
      unitLength: c.unitLength,
      t,
      out: out.subarray(first * outSize, (first + count) * outSize),
      outDtype,
    });
  }
  return { gram, t, out };
}

function assertGramClose(got: Float64Array, want: Float64Array, label: string): void {
  assert.equal(got.length, want.length, label);
  for (let k = 0; k < want.length; k++) {
    const tol = 1e-12 * Math.max(Math.abs(want[k]!), 1e-300);
    assert.ok(Math.abs(got[k]! - want[k]!) <= tol, `${label}: gram[${k}] = ${got[k]}, reference ${want[k]}`);
  }
}

function assertCosinesClose(
  gram: Float64Array,
  ref: Float64Array,
  n: number,
  units: number,
  label: string,
): void {
  for (let u = 0; u < units; u++) {
    const a = pairCosines(gram, u * gramSize(n), n);
    const b = pairCosines(ref, u * gramSize(n), n);
    a.forEach((x, i) => assert.ok(Math.abs(x - b[i]!) <= 1e-9, `${label}: unit ${u} cos ${x} vs ${b[i]}`));
  }
}

async function checkAgainstReference(
  be: JsBackend,
  c: Case,
  outDtype: FloatDType,
  theta: ThetaRule,
  label: string,
): Promise<void> {
  const { gram, t, out } = await runBackend(be, c, outDtype, theta);
  const refGram = referenceGram(c.base, c.models, c.unitLength);
  assertGramClose(gram, refGram, label);
  assertCosinesClose(gram, refGram, c.models.length, c.units, label);
  const ref = referenceMerge(c.base, c.models, { unitLength: c.unitLength, theta });
  for (let u = 0; u < c.units; u++) assert.ok(Math.abs(t[u]! - ref.t[u]!) <= 1e-9, `${label}: t[${u}]`);
  const actual = decodeFloats(out, outDtype) as Float64Array;
  assertWithinContract(actual, c.base, c.models, t, c.unitLength, outDtype, label);
}

const SHAPES: number[][] = [[], [1], [7], [1031], [5, 13], [3, 4, 5], [2, 3, 2, 3], [4, 9000], [1, 17]];

describe('JsBackend', () => {
  const be = new JsBackend();
  after(() => be.dispose());

  it('reports itself', () => {
    assert.deepEqual(be.info(), {
      name: 'js',
      isa: 'js',
      threads: 1,
      cudaCompiled: false,
      cudaDevice: undefined,
    });
    assert.equal(be.name, 'js');
  });

  for (const inDtype of FLOAT_DTYPES) {
    for (const outDtype of FLOAT_DTYPES) {
      it(`${inDtype} inputs → ${outDtype}: N = 2, 3, 4, every shape, layer- and filter-wise, vs reference`, async () => {
        const rng = mulberry32(FLOAT_DTYPES.indexOf(inDtype) * 10 + FLOAT_DTYPES.indexOf(outDtype));
        for (const n of [2, 3, 4]) {
          for (const shape of SHAPES) {
            for (const filterWise of [false, true]) {
              const c = makeCase(rng, shape, new Array<FloatDType>(n + 1).fill(inDtype), filterWise);
              const label = `${inDtype}→${outDtype} N=${n} [${shape}] ${filterWise ? 'rows' : 'layer'}`;
              await checkAgainstReference(
                be,
                c,
                outDtype,
                n === 3 && filterWise ? 'mean-angle' : 'mean-cos',
                label,
              );
            }
          }
        }
      });
    }
  }

  it('mixed input dtypes, with a negative and a near-1 cosine', async () => {
    const rng = mulberry32(99);
    const combos: FloatDType[][] = [
      ['BF16', 'F32', 'F16'],
      ['F16', 'BF16', 'F64', 'F32'],
      ['F64', 'BF16', 'BF16'],
      ['F32', 'F16', 'F16', 'BF16', 'F64'],
    ];
    for (const dtypes of combos) {
      for (const cos of [-0.2, 0.05, 0.99]) {
        if (cos < -1 / (dtypes.length - 2)) continue;
        for (const outDtype of FLOAT_DTYPES) {
          for (const shape of [[1031], [6, 35]]) {
            const c = makeCase(rng, shape, dtypes, shape.length > 1, cos);
            await checkAgainstReference(be, c, outDtype, 'mean-cos', `[${dtypes}] cos ${cos} → ${outDtype}`);
          }
        }
      }
    }
  });

  it('windows cut anywhere (mid-unit included) give the Gram and output of one window, bit for bit', async () => {
    const rng = mulberry32(5);
    for (const dtypes of [
      ['BF16', 'BF16', 'BF16'],
      ['F32', 'F16', 'F64', 'BF16'],
      ['F16', 'F16', 'F16', 'F16', 'F16'],
    ] as FloatDType[][]) {
      for (const shape of [[40000], [7, 5003], [3, 5, 7], [17]]) {
        for (const filterWise of [false, true]) {
          const c = makeCase(rng, shape, dtypes, filterWise);
          const one = await runBackend(be, c, 'BF16', 'mean-cos');
          const len = c.base.length;
          const cutSets = [
            [1],
            [len - 1],
            [c.unitLength - 1, c.unitLength + 1],
            Array.from({ length: 6 }, () => Math.floor(rng() * len)),
            Array.from({ length: Math.min(len - 1, 40) }, (_, i) => i + 1),
          ];
          for (const cuts of cutSets) {
            const split = await runBackend(be, c, 'BF16', 'mean-cos', cuts);
            const label = `[${dtypes}] [${shape}] ${filterWise ? 'rows' : 'layer'} cuts ${cuts.slice(0, 6)}`;
            assert.deepEqual(split.gram, one.gram, label);
            assert.deepEqual([...split.out], [...one.out], label);
          }
        }
      }
    }
  });

  it('accepts inputs and output at any byte offset', async () => {
    const rng = mulberry32(8);
    for (const dtypes of [
      ['BF16', 'F16', 'F32', 'F64'],
      ['F32', 'F32', 'F32'],
      ['F64', 'F64', 'F64'],
    ] as FloatDType[][]) {
      for (const outDtype of FLOAT_DTYPES) {
        const aligned = makeCase(mulberry32(1), [3, 20001], dtypes, true);
        const want = await runBackend(be, aligned, outDtype, 'mean-cos');
        for (const shift of [1, 3, 5]) {
          const c = makeCase(mulberry32(1), [3, 20001], dtypes, true, 0.4, shift);
          assert.ok(c.windows.every((w, i) => w.bytes.byteOffset === shift * i));
          const got = await runBackend(
            be,
            c,
            outDtype,
            'mean-cos',
            [7, 30000],
            shift + Math.floor(rng() * 3),
          );
          assert.deepEqual(got.gram, want.gram);
          assert.deepEqual([...got.out], [...want.out], `${dtypes} → ${outDtype} shift ${shift}`);
        }
      }
    }
  });

  it('propagates NaN/Inf into the diagonal of the model that has it', async () => {
    const rng = mulberry32(13);
    for (const dtype of FLOAT_DTYPES) {
      for (const bad of [NaN, Infinity]) {
        const c = makeCase(rng, [100], [dtype, dtype, dtype, dtype], false);
        const v = decodeFloats(c.windows[2]!.bytes, dtype);
        v[42] = bad;
        c.windows[2] = { bytes: encodeFloats(v, dtype), dtype };
        const { gram } = await runBackend(be, c, dtype, 'mean-cos');
        assert.ok(!Number.isFinite(gram[3]!), `${dtype} ${bad}: G_11 = ${gram[3]}`); // gramIndex(1, 1, 3) = 3
      }
    }
  });

  it('yields to the event loop during a long window, and concurrent jobs do not share scratch', async () => {
    const rng = mulberry32(21);
    const c = makeCase(rng, [1 << 20], ['F32', 'F32', 'F32'], false);
    const d = makeCase(rng, [2, 1 << 19], ['BF16', 'F16', 'BF16', 'F32'], true);
    const soloC = await runBackend(be, c, 'BF16', 'mean-cos');
    const soloD = await runBackend(be, d, 'F16', 'mean-cos');
    let ticked = false;
    setImmediate(() => (ticked = true));
    const [pc, pd] = await Promise.all([
      runBackend(be, c, 'BF16', 'mean-cos'),
      runBackend(be, d, 'F16', 'mean-cos'),
    ]);
    assert.ok(ticked, 'the event loop ran while the jobs were in progress');
    assert.deepEqual(pc.gram, soloC.gram);
    assert.deepEqual([...pc.out], [...soloC.out]);
    assert.deepEqual(pd.gram, soloD.gram);
    assert.deepEqual([...pd.out], [...soloD.out]);
  });

  it('rejects malformed jobs', async () => {
    const w = (n: number, dtype: FloatDType = 'F32'): InputWindow => ({
      bytes: new Uint8Array(n * floatSize(dtype)),
      dtype,
    });
    const gram = new Float64Array(3);
    const job = { base: w(4), models: [w(4), w(4)], count: 4, firstElement: 0, unitLength: 4, gram };
    await be.gram(job);
    await assert.rejects(be.gram({ ...job, models: [w(4)] }), RangeError);
    await assert.rejects(be.gram({ ...job, models: [w(4), w(3)] }), /input 2/);
    await assert.rejects(be.gram({ ...job, unitLength: 0 }), RangeError);
    await assert.rejects(be.gram({ ...job, unitLength: 2 }), /accumulators/);
    await assert.rejects(be.gram({ ...job, firstElement: -1 }), RangeError);
    const ijob = { ...job, t: new Float64Array(1), out: new Uint8Array(8), outDtype: 'BF16' as const };
    await be.interpolate(ijob);
    await assert.rejects(be.interpolate({ ...ijob, out: new Uint8Array(9) }), /out has/);
    await assert.rejects(be.interpolate({ ...ijob, firstElement: 4 }), /ratios/);
  });
});
