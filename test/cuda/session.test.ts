import { strict as assert } from 'node:assert';
import { FLOAT_DTYPES, floatSize, type FloatDType } from '../../lib/dtype';
import type { NativeAddon } from '../../lib/engine/native/addon-types';
import { gramIndex } from '../../lib/math/gram';
import type { CudaAddon, CudaTensorSpec } from '../../lib/engine/cuda/addon-types';
import { decodeFloats, encodeFloats } from '../../lib/math/codec';
import { mulberry32 } from '../helpers/random';
import {
  DTYPE_MIXES,
  assertSameBytes,
  assertSameGram,
  cudaExports,
  deviceOrSkip,
  gramJob,
  interpolateJob,
  makeCase,
  newGram,
  ratiosOf,
  type CudaCase,
} from './cases';

/**
 * The CUDA sessions on a real device: the Gram pass bit for bit the CPU emulation of the kernels
 * (emulation.test.ts ties that to the native backend), the interpolation byte for byte the native
 * backend, inputs uploaded once when resident, pinned buffers, errors. Skips without a device unless
 * MODEL_STOCK_REQUIRE_CUDA=1 (scripts/gpu-check.sh sets it).
 */
describe('CUDA tensor sessions (device)', function () {
  let cuda: CudaAddon;
  let native: NativeAddon;

  before(function () {
    ({ cuda, native } = cudaExports(this));
    deviceOrSkip(this, cuda);
  });

  function specOf(c: CudaCase, outDtype: FloatDType, extra: Partial<CudaTensorSpec> = {}): CudaTensorSpec {
    return {
      name: c.label,
      count: c.count,
      unitLength: c.unitLength,
      base: c.inputs[0]!.dtype,
      models: c.inputs.slice(1).map((w) => w.dtype),
      outDtype,
      ...extra,
    };
  }

  function inputBytes(c: CudaCase): number {
    return c.inputs.reduce((s, w) => s + w.bytes.byteLength, 0);
  }

  /** Both passes on the device over the given windows, checked against emulation and native. */
  async function checkBothPasses(
    c: CudaCase,
    outDtype: FloatDType,
    cuts: number[],
    extra: Partial<CudaTensorSpec> = {},
  ) {
    const n = c.inputs.length - 1;
    const session = cuda.cudaOpenTensor(specOf(c, outDtype, extra));
    try {
      const got = newGram(c);
      const want = newGram(c);
      for (let w = 0; w + 1 < cuts.length; w++) {
        await session.gram(gramJob(c, got, cuts[w], cuts[w + 1]));
        await cuda.cudaEmulateGram(gramJob(c, want, cuts[w], cuts[w + 1]));
      }
      assertSameGram(got, want, `${c.label} gram`);
      const t = ratiosOf(want, n, c.units);
      const out = new Uint8Array(c.count * floatSize(outDtype));
      const ref = new Uint8Array(out.byteLength);
      // The interpolation in windows of its own: resident inputs are found whatever the cuts.
      const half = Math.floor(c.count / 2) + 1;
      for (const [from, to] of [
        [0, Math.min(half, c.count)],
        [Math.min(half, c.count), c.count],
      ] as const) {
        await session.interpolate(interpolateJob(c, t, outDtype, out, from, to));
      }
      await native.interpolate(interpolateJob(c, t, outDtype, ref));
      assertSameBytes(out, ref, outDtype, `${c.label} → ${outDtype}`);
      return session.stats();
    } finally {
      await session.close();
    }
  }

  it('Gram bit for bit the emulation, interpolation byte for byte native: every dtype mix and output, N = 2…9, rows, windows', async function () {
    const rng = mulberry32(1310);
    for (const mix of DTYPE_MIXES) {
      const c = makeCase(rng, mix, 100003, 100003, 1);
      for (const outDtype of FLOAT_DTYPES) await checkBothPasses(c, outDtype, [0, 4097, 50000, c.count]);
    }
    for (const n of [4, 5, 9]) {
      const dtypes = Array.from({ length: n + 1 }, (_, i) => FLOAT_DTYPES[(i + n) % 4]!);
      for (const [count, unitLength] of [
        [30000, 3000],
        [20000, 100],
        [77, 1],
      ] as const) {
        await checkBothPasses(makeCase(rng, dtypes, count, unitLength, n), 'BF16', [
          0,
          Math.floor(count / 3),
          count,
        ]);
      }
    }
  });

  it('resident: each input byte crosses PCIe once; windowed (budget too small): twice, same results', async function () {
    const c = makeCase(mulberry32(1311), ['BF16', 'BF16', 'BF16'], 1 << 20, 1 << 20);
    const resident = await checkBothPasses(c, 'BF16', [0, 300000, c.count]);
    assert.ok(resident.resident, 'a 6 MiB tensor should stay resident');
    assert.equal(resident.uploadedInputBytes, inputBytes(c));
    assert.ok(resident.gramKernelMs > 0 && resident.interpolateKernelMs > 0);
    const windowed = await checkBothPasses(c, 'BF16', [0, 300000, c.count], { budgetBytes: 1 });
    assert.equal(windowed.resident, false);
    assert.equal(windowed.uploadedInputBytes, 2 * inputBytes(c));
  });

  it('a large tensor: staging in many pieces, hundreds of thousands of warps', async function () {
    this.timeout(300000);
    const count = 48 << 20; // 288 MiB of BF16 inputs for N = 2
    const rng = mulberry32(1312);
    const values = [0, 1, 2].map((m) =>
      Float64Array.from({ length: count }, (_, k) => Math.sin(k * 1e-3 + m) + rng() * 1e-2),
    );
    const c: CudaCase = {
      label: 'large',
      inputs: values.map((v) => ({ bytes: encodeFloats(v, 'BF16'), dtype: 'BF16' as FloatDType })),
      count,
      unitLength: 4096,
      units: count / 4096,
    };
    const stats = await checkBothPasses(c, 'BF16', [0, count]);
    assert.ok(stats.resident);
  });

  it('pinned host buffers: copied without staging, held while a call runs, freed and detached', async function () {
    const c0 = makeCase(mulberry32(1313), ['F16', 'F16', 'F16'], 200000, 1000);
    const pinnedInputs = c0.inputs.map((w) => {
      const p = cuda.cudaAllocHost(w.bytes.byteLength);
      p.set(w.bytes);
      return { bytes: p, dtype: w.dtype };
    });
    const c: CudaCase = { ...c0, inputs: pinnedInputs };
    const session = cuda.cudaOpenTensor(specOf(c, 'F16'));
    const gram = newGram(c);
    const pending = session.gram(gramJob(c, gram));
    assert.throws(() => cuda.cudaFreeHost(pinnedInputs[0]!.bytes), {
      code: 'INVALID_ARGUMENT',
      message: /in use/,
    });
    await pending;
    const want = newGram(c0);
    await cuda.cudaEmulateGram(gramJob(c0, want));
    assertSameGram(gram, want, 'pinned gram');
    const t = ratiosOf(want, 2, c.units);
    const out = cuda.cudaAllocHost(c.count * 2);
    await session.interpolate(interpolateJob(c, t, 'F16', out));
    const ref = new Uint8Array(out.byteLength);
    await native.interpolate(interpolateJob(c0, t, 'F16', ref));
    assertSameBytes(out, ref, 'F16', 'pinned interpolation');
    await session.close();
    for (const w of [...pinnedInputs.map((p) => p.bytes), out]) {
      cuda.cudaFreeHost(w);
      assert.equal(w.byteLength, 0, 'freed buffers are detached');
      assert.throws(() => cuda.cudaFreeHost(w), { code: 'INVALID_ARGUMENT' });
    }
  });

  it('NaN and Inf reach the diagonal on the device', async function () {
    const values = [0, 1, 2].map((m) => Float64Array.from({ length: 5000 }, (_, k) => Math.cos(k * (m + 2))));
    values[1]![4321] = NaN;
    const c: CudaCase = {
      label: 'nan',
      inputs: values.map((v) => ({ bytes: encodeFloats(v, 'F32'), dtype: 'F32' as FloatDType })),
      count: 5000,
      unitLength: 5000,
      units: 1,
    };
    const session = cuda.cudaOpenTensor(specOf(c, 'F32'));
    const gram = newGram(c);
    await session.gram(gramJob(c, gram));
    assert.ok(Number.isNaN(gram[gramIndex(0, 0, 2)]!));
    assert.ok(Number.isFinite(gram[gramIndex(1, 1, 2)]!));
    const out = new Uint8Array(c.count * 4);
    await session.interpolate(interpolateJob(c, new Float64Array([0.5]), 'F32', out));
    assert.ok(Number.isNaN(decodeFloats(out, 'F32')[4321]!));
    await session.close();
  });

  it('sessions on separate streams overlap and stay correct', async function () {
    const rng = mulberry32(1314);
    const cases = [0, 1, 2, 3, 4, 5].map((i) => makeCase(rng, DTYPE_MIXES[i]!, 300000 + i, 300000 + i));
    await Promise.all(cases.map((c) => checkBothPasses(c, 'BF16', [0, c.count])));
  });

  it('errors: a window that does not match the session, a closed session, memory info', async function () {
    const c = makeCase(mulberry32(1315), ['BF16', 'BF16', 'BF16'], 1000, 1000);
    const session = cuda.cudaOpenTensor({ ...specOf(c, 'BF16'), name: 'model.layers.0.mlp.up_proj.weight' });
    await assert.rejects(session.gram({ ...gramJob(c, newGram(c)), unitLength: 10 }), {
      code: 'INVALID_ARGUMENT',
      message: /model\.layers\.0\.mlp\.up_proj\.weight.*unitLength 10/,
    });
    await assert.rejects(
      session.interpolate(interpolateJob(c, new Float64Array([0.5]), 'F32', new Uint8Array(4000))),
      {
        code: 'INVALID_ARGUMENT',
        message: /outDtype F32 differs/,
      },
    );
    await session.close();
    await session.close();
    await assert.rejects(session.gram(gramJob(c, newGram(c))), {
      code: 'INVALID_ARGUMENT',
      message: /closed/,
    });
    const info = cuda.cudaInfo();
    const mem = await cuda.cudaMemoryInfo(0);
    assert.equal(mem.total, info.devices[0]!.totalMemory);
    assert.ok(mem.available > 0 && mem.available <= mem.total);
    await assert.rejects(cuda.cudaMemoryInfo(info.devices.length), { code: 'BACKEND_UNAVAILABLE' });
  });
});
