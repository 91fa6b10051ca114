import { strict as assert } from 'node:assert';
import { FLOAT_DTYPES, floatSize, type FloatDType } from '../../lib/dtype';
import type { NativeAddon } from '../../lib/engine/native/addon-types';
import { gramIndex, gramSize } from '../../lib/math/gram';
import type { CudaAddon } from '../../lib/engine/cuda/addon-types';
import { assertGramClose, referenceGram } from '../helpers/reference';
import { mulberry32 } from '../helpers/random';
import {
  DTYPE_MIXES,
  assertSameBytes,
  cudaExports,
  gramJob,
  interpolateJob,
  makeCase,
  newGram,
  ratiosOf,
  type CudaCase,
} from './cases';
import { decodeFloats, encodeFloats } from '../../lib/math/codec';

/**
 * The CUDA kernels' arithmetic (native/cuda/passes.h and codec.h), compiled by g++ and run on the CPU
 * in the kernels' order: the same text nvcc compiles, checked here on every machine. The device suite
 * (session.test.ts) then holds the GPU to these results bit for bit.
 */
describe('CUDA kernels, emulated on the CPU', function () {
  let cuda: CudaAddon;
  let native: NativeAddon;

  before(function () {
    ({ cuda, native } = cudaExports(this));
  });

  it('codec.h decodes, rounds and encodes like native/convert.h (every BF16/F16 value, every rounding boundary)', function () {
    const r = cuda.cudaCodecSelfTest();
    assert.deepEqual(r.mismatches, []);
    assert.ok(r.checked > 8_000_000, `only ${r.checked} values checked`);
  });

  it('interpolation writes the native backend’s bytes: every dtype mix and output dtype, N = 2…5, rows, windows, odd offsets', async function () {
    const rng = mulberry32(1301);
    const cases: CudaCase[] = [];
    for (const mix of DTYPE_MIXES) cases.push(makeCase(rng, mix, 5003, 5003, 1));
    cases.push(makeCase(rng, ['BF16', 'BF16', 'BF16', 'BF16', 'BF16', 'BF16'], 4074, 97, 3)); // N = 5, rows
    cases.push(makeCase(rng, ['F16', 'F32', 'BF16'], 7, 1, 5)); // units of one element
    for (const c of cases) {
      const t = ratiosOf(referenceGram(...decoded(c), c.unitLength), c.inputs.length - 1, c.units);
      for (const outDtype of FLOAT_DTYPES) {
        const want = new Uint8Array(c.count * floatSize(outDtype));
        await native.interpolate(interpolateJob(c, t, outDtype, want));
        const got = new Uint8Array(want.byteLength);
        // In three windows cut inside units: each window's units are looked up globally.
        const cuts = [0, Math.floor(c.count / 3), Math.floor((2 * c.count) / 3) + 1, c.count];
        for (let w = 0; w < 3; w++)
          await cuda.cudaEmulateInterpolate(interpolateJob(c, t, outDtype, got, cuts[w], cuts[w + 1]));
        assertSameBytes(got, want, outDtype, `${c.label} → ${outDtype}`);
      }
    }
  });

  it('Gram matches the native backend within rounding: N = 2…9 (triangle, padded and rectangle launches), rows shorter and longer than a chunk', async function () {
    const rng = mulberry32(1302);
    const shapes: [number, number][] = [
      [70001, 70001], // one unit, many chunks, a partial last chunk
      [9000, 3000], // rows of 1.5 chunks
      [6000, 100], // rows far shorter than a chunk: one warp per row
    ];
    for (const n of [2, 3, 4, 5, 9]) {
      for (const [count, unitLength] of shapes) {
        const dtypes: FloatDType[] = Array.from({ length: n + 1 }, (_, i) => FLOAT_DTYPES[(i + n) % 4]!);
        const c = makeCase(rng, dtypes, count, unitLength, n);
        const want = newGram(c);
        await native.gram(gramJob(c, want));
        const got = newGram(c);
        await cuda.cudaEmulateGram(gramJob(c, got));
        assertGramClose(got, want, n, c.units, `N=${n} ${c.label}`);
      }
    }
  });

  it('Gram over windows cut anywhere adds up to the whole tensor’s', async function () {
    const rng = mulberry32(1303);
    for (const [count, unitLength] of [
      [50000, 50000],
      [12432, 777],
    ] as const) {
      const c = makeCase(rng, ['BF16', 'F16', 'F32', 'BF16'], count, unitLength, 2);
      const whole = newGram(c);
      await cuda.cudaEmulateGram(gramJob(c, whole));
      const parts = newGram(c);
      const cuts = [0, 1, 2049, 4100, 30001 % count, count].sort((a, b) => a - b);
      for (let w = 0; w + 1 < cuts.length; w++)
        await cuda.cudaEmulateGram(gramJob(c, parts, cuts[w], cuts[w + 1]));
      assertGramClose(parts, whole, 3, c.units, c.label);
    }
  });

  it('NaN and Inf in any input reach the Gram diagonal, and the interpolated output', async function () {
    for (const [where, value] of [
      [0, NaN],
      [1, Infinity],
      [2, -Infinity],
      [0, Infinity],
    ] as const) {
      const values = [0, 1, 2].map((m) =>
        Float64Array.from({ length: 3000 }, (_, k) => Math.sin(k * (m + 1))),
      );
      values[where]![2500] = value;
      const c: CudaCase = {
        label: `${value} in input ${where}`,
        inputs: values.map((v) => ({ bytes: encodeFloats(v, 'BF16'), dtype: 'BF16' as FloatDType })),
        count: 3000,
        unitLength: 3000,
        units: 1,
      };
      const gram = newGram(c);
      await cuda.cudaEmulateGram(gramJob(c, gram));
      const touched = where === 0 ? [0, 1] : [where - 1];
      for (const i of touched) {
        assert.ok(
          !Number.isFinite(gram[gramIndex(i, i, 2)]!),
          `${c.label}: G[${i}][${i}] = ${gram[gramIndex(i, i, 2)]}`,
        );
      }
      const out = new Uint8Array(c.count * 2);
      await cuda.cudaEmulateInterpolate(interpolateJob(c, new Float64Array([0.5]), 'BF16', out));
      assert.ok(!Number.isFinite(decodeFloats(out, 'BF16')[2500]!), `${c.label}: output element 2500`);
    }
  });

  it('re-checks jobs like the native passes', async function () {
    const c = makeCase(mulberry32(1304), ['BF16', 'BF16', 'BF16'], 10, 10);
    await assert.rejects(cuda.cudaEmulateGram({ ...gramJob(c, newGram(c)), count: 11 }), {
      code: 'INVALID_ARGUMENT',
      message: /bytes has 20 bytes but count × size\(BF16\) = 22/,
    });
    await assert.rejects(cuda.cudaEmulateGram({ ...gramJob(c, new Float64Array(2)) }), {
      code: 'INVALID_ARGUMENT',
    });
    assert.equal(gramSize(2), 3);
  });

  it('says whether CUDA is compiled in and why no device can be used', async function () {
    const info = cuda.cudaInfo();
    assert.equal(typeof info.compiled, 'boolean');
    if (process.env.MODEL_STOCK_CUDA === 'on' && process.env.MODEL_STOCK_ADDON === undefined) {
      assert.ok(info.compiled, 'MODEL_STOCK_CUDA=on but the cmake-js addon has no CUDA compiled in');
    }
    if (!info.compiled) {
      assert.match(info.reason ?? '', /not compiled into this build/);
      assert.throws(() => cuda.cudaAllocHost(16), { code: 'BACKEND_UNAVAILABLE' });
      assert.throws(() => cuda.cudaOpenTensor(spec()), { code: 'BACKEND_UNAVAILABLE' });
      return;
    }
    assert.match(info.runtimeVersion ?? '', /^\d+\.\d+$/);
    if (info.devices.length > 0) return; // the device suite covers the rest
    assert.match(info.reason ?? '', /^no CUDA device/);
    assert.throws(() => cuda.cudaAllocHost(16), { code: 'BACKEND_UNAVAILABLE', message: /no CUDA device/ });
    await assert.rejects(cuda.cudaMemoryInfo(), { code: 'BACKEND_UNAVAILABLE' });
    // A session opens without touching CUDA; its first call says why it cannot run.
    const session = cuda.cudaOpenTensor(spec());
    const c = makeCase(mulberry32(1305), ['BF16', 'BF16', 'BF16'], 10, 10);
    await assert.rejects(session.gram(gramJob(c, newGram(c))), {
      code: 'BACKEND_UNAVAILABLE',
      message: /no CUDA device/,
    });
    await session.close();
  });
});

function spec() {
  return {
    name: 'w',
    count: 10,
    unitLength: 10,
    base: 'BF16',
    models: ['BF16', 'BF16'],
    outDtype: 'BF16',
  } as const;
}

function decoded(c: CudaCase): [Float64Array, Float64Array[]] {
  const all = c.inputs.map((w) => decodeFloats(w.bytes, w.dtype) as Float64Array);
  return [all[0]!, all.slice(1)];
}
