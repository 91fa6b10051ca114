import { strict as assert } from 'node:assert';
import { floatSize, type FloatDType } from '../../lib/dtype';
import type {
  NativeAddon,
  NativeGramJob,
  NativeInput,
  NativeInterpolateJob,
} from '../../lib/engine/native/addon-types';
import { gramSize } from '../../lib/math/gram';
import type { CudaAddon, CudaDeviceInfo } from '../../lib/engine/cuda/addon-types';
import { loadCudaAddon } from '../../lib/engine/cuda/addon';
import { encodeFloats } from '../../lib/math/codec';
import { unitRatio } from '../../lib/math/ratio';
import { correlatedModels, randomTensor, type Rng } from '../helpers/random';
import { addonOrSkip, shifted } from '../helpers/addon';

/**
 * Shared by the CUDA suites: the addon's CUDA exports, seeded cases of mixed dtypes at unaligned
 * offsets, window jobs over them, and the comparisons (bytes equal; Gram within rounding).
 */

export interface CudaCase {
  readonly label: string;
  readonly inputs: NativeInput[]; // [base, ...models]
  readonly count: number;
  readonly unitLength: number;
  readonly units: number;
}

/** The CUDA exports (skipping like the native suites when the addon is absent). */
export function cudaExports(ctx: Mocha.Context): { cuda: CudaAddon; native: NativeAddon } {
  const native = addonOrSkip(ctx);
  const loaded = loadCudaAddon();
  if (loaded.addon === undefined) throw new Error(loaded.reason);
  return { cuda: loaded.addon, native };
}

/**
 * The first device, or a skip naming why there is none. With MODEL_STOCK_REQUIRE_CUDA=1 (the GPU
 * check) a missing device fails instead.
 */
export function deviceOrSkip(ctx: Mocha.Context, cuda: CudaAddon): CudaDeviceInfo {
  const info = cuda.cudaInfo();
  const device = info.devices[0];
  if (device !== undefined && info.reason === undefined) return device;
  const why = info.reason ?? 'no CUDA device';
  if (process.env.MODEL_STOCK_REQUIRE_CUDA === '1') {
    throw new Error(`MODEL_STOCK_REQUIRE_CUDA=1 but CUDA cannot be used: ${why}`);
  }
  console.warn(`    (CUDA device tests skipped: ${why})`);
  ctx.skip();
}

export function makeCase(
  rng: Rng,
  dtypes: readonly FloatDType[],
  count: number,
  unitLength: number,
  shift = 0,
): CudaCase {
  const n = dtypes.length - 1;
  const raw = randomTensor(count, rng, 0.05);
  const fine = correlatedModels(raw, n, 0.2 + 0.6 * rng(), rng);
  return {
    label: `${dtypes.join('+')} ×${count} unit ${unitLength} shift ${shift}`,
    inputs: [raw, ...fine].map((v, i) => ({
      bytes: shifted(encodeFloats(v, dtypes[i]!), (shift * (i + 1)) % 8),
      dtype: dtypes[i]!,
    })),
    count,
    unitLength,
    units: count === 0 ? 0 : Math.ceil(count / unitLength),
  };
}

function slice(w: NativeInput, from: number, to: number): NativeInput {
  const s = floatSize(w.dtype);
  return { bytes: w.bytes.subarray(from * s, to * s), dtype: w.dtype };
}

export function gramJob(c: CudaCase, gram: Float64Array, from = 0, to = c.count): NativeGramJob {
  return {
    base: slice(c.inputs[0]!, from, to),
    models: c.inputs.slice(1).map((w) => slice(w, from, to)),
    count: to - from,
    firstElement: from,
    unitLength: c.unitLength,
    gram,
  };
}

/** `out` holds the whole tensor's output; the job writes elements [from, to) of it. */
export function interpolateJob(
  c: CudaCase,
  t: Float64Array,
  outDtype: FloatDType,
  out: Uint8Array,
  from = 0,
  to = c.count,
): NativeInterpolateJob {
  const s = floatSize(outDtype);
  return { ...gramJob(c, new Float64Array(0), from, to), t, outDtype, out: out.subarray(from * s, to * s) };
}

export function newGram(c: CudaCase): Float64Array {
  return new Float64Array(c.units * gramSize(c.inputs.length - 1));
}

/** t per unit from a Gram matrix (mean-cos), as the engine derives it. */
export function ratiosOf(gram: Float64Array, n: number, units: number): Float64Array {
  const t = new Float64Array(units);
  for (let u = 0; u < units; u++) t[u] = unitRatio(gram, u * gramSize(n), n, 'mean-cos').t;
  return t;
}

/** Same bytes, or the first differing element named. */
export function assertSameBytes(got: Uint8Array, want: Uint8Array, dtype: FloatDType, label: string) {
  assert.equal(got.byteLength, want.byteLength, `${label}: byte length`);
  if (Buffer.from(got).equals(Buffer.from(want))) return;
  const s = floatSize(dtype);
  for (let k = 0; k * s < got.byteLength; k++) {
    const g = Buffer.from(got.subarray(k * s, (k + 1) * s)).toString('hex');
    const w = Buffer.from(want.subarray(k * s, (k + 1) * s)).toString('hex');
    assert.equal(g, w, `${label}: element ${k} differs`);
  }
}

/** Same float64 values bit for bit (NaN payloads included). */
export function assertSameGram(got: Float64Array, want: Float64Array, label: string) {
  const g = Buffer.from(got.buffer, got.byteOffset, got.byteLength);
  const w = Buffer.from(want.buffer, want.byteOffset, want.byteLength);
  if (g.equals(w)) return;
  const k = got.findIndex((v, i) => !Object.is(v, want[i]));
  assert.fail(`${label}: accumulator ${k} is ${got[k]}, expected ${want[k]} bit for bit`);
}

/** The dtype mixes every suite runs: uniform in each dtype, and mixed with and without F64. */
export const DTYPE_MIXES: readonly (readonly FloatDType[])[] = [
  ['BF16', 'BF16', 'BF16'],
  ['F16', 'F16', 'F16'],
  ['F32', 'F32', 'F32'],
  ['F64', 'F64', 'F64'],
  ['BF16', 'F32', 'F16'],
  ['F32', 'BF16', 'F64', 'F16'],
];
