import { strict as assert } from 'node:assert';
import { floatSize, type FloatDType } from '../../../lib/dtype';
import type { NativeAddon, NativeIsa } from '../../../lib/engine/native/addon-types';
import { decodeFloats, encodeFloats } from '../../../lib/math/codec';
import { mulberry32 } from '../../helpers/random';
import { addonOrSkip, forEachIsa, shifted } from '../../helpers/addon';

/**
 * Exact conversions, through the interpolation kernel: with w0 = −0, w1 = w2 = x and t = 1 the
 * result is exactly x (a = 0, b = ½, x + x exact), so every output byte must equal the codec's
 * round-to-nearest-even encoding of x — ties, subnormals, overflow, signed zeros, NaN.
 */

async function passThrough(
  addon: NativeAddon,
  x: Uint8Array,
  inDtype: FloatDType,
  outDtype: FloatDType,
  shift: number,
  isa: NativeIsa,
): Promise<Uint8Array> {
  const count = x.byteLength / floatSize(inDtype);
  const base = encodeFloats(new Float64Array(count).fill(-0), inDtype);
  const out = shifted(new Uint8Array(count * floatSize(outDtype)), shift);
  await addon.interpolate({
    base: { bytes: shifted(base, shift), dtype: inDtype },
    models: [
      { bytes: shifted(x, shift + 1), dtype: inDtype },
      { bytes: shifted(x, shift + 2), dtype: inDtype },
    ],
    count,
    firstElement: 0,
    unitLength: count,
    t: new Float64Array([1]),
    out,
    outDtype,
    isa,
  });
  return out;
}

function assertSameValues(got: Uint8Array, want: Uint8Array, dtype: FloatDType, input: Float64Array, label: string) {
  const g = decodeFloats(got, dtype);
  const w = decodeFloats(want, dtype);
  const size = floatSize(dtype);
  for (let k = 0; k < g.length; k++) {
    if (Number.isNaN(w[k]!)) {
      assert.ok(Number.isNaN(g[k]!), `${label}: element ${k} (${input[k]}) should be NaN, got ${g[k]}`);
      continue;
    }
    const gb = Buffer.from(got.subarray(k * size, (k + 1) * size)).toString('hex');
    const wb = Buffer.from(want.subarray(k * size, (k + 1) * size)).toString('hex');
    assert.equal(gb, wb, `${label}: element ${k}: ${input[k]} encoded as ${g[k]} (${gb}), expected ${w[k]} (${wb})`);
  }
}

/** float32 bit patterns: random, plus the rounding boundaries of BF16 and F16. */
function float32Cases(): Float32Array {
  const rng = mulberry32(11);
  const bits: number[] = [];
  for (let k = 0; k < 20000; k++) bits.push((rng() * 2 ** 32) >>> 0);
  for (let e = 0; e < 255; e++) {
    for (const low of [0x0000, 0x7fff, 0x8000, 0x8001, 0xffff, 0x18000, 0x17fff, 0x00001000, 0x00000fff, 0x00003000]) {
      for (const sign of [0, 0x80000000]) bits.push((sign | (e << 23) | low) >>> 0);
    }
  }
  // F16: ties at every spacing from 2^-25 to the overflow threshold 65520
  for (let e = 102; e <= 143; e++) {
    for (let m = 0; m < 64; m++) bits.push(((e << 23) | (m << 13) | 0x1000) >>> 0, ((e << 23) | (m << 13) | 0xfff) >>> 0);
  }
  bits.push(0x477fefff, 0x477ff000, 0x477fe000, 0x33000000, 0x33000001, 0x32ffffff, 0x38800000, 0x387fffff);
  bits.push(0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffbfffff, 0x00000001, 0x80000000, 0x007fffff);
  const u = Uint32Array.from(bits);
  const f = new Float32Array(u.buffer);
  // x + x must not overflow: keep |x| < 2^127 (Inf and NaN stay)
  return f.filter((v) => !Number.isFinite(v) || Math.abs(v) < 2 ** 127);
}

/** float64 values on and next to the rounding boundaries of F32, BF16 and F16. */
function float64Cases(): Float64Array {
  const rng = mulberry32(12);
  const out: number[] = [];
  const f32 = float32Cases();
  for (let k = 0; k < f32.length; k += 3) {
    const v = f32[k]!;
    if (!Number.isFinite(v) || v === 0) {
      out.push(v);
      continue;
    }
    const ulp32 = 2 ** (Math.floor(Math.log2(Math.abs(v))) - 23);
    out.push(v, v + ulp32 / 2, v - ulp32 / 2, v + ulp32 * (0.5 + 2 ** -20), v + ulp32 * (0.5 - 2 ** -20));
    out.push(v * (1 + (rng() - 0.5) * 2 ** -10));
  }
  out.push(2 ** -1074, -(2 ** -1074), 1e-300, 1e300, -1e300, 2 ** 128, 65520 - 2 ** -30, 65520);
  return Float64Array.from(out.filter((v) => !Number.isFinite(v) || Math.abs(v) < 2 ** 1022));
}

describe('native conversions are exact (round to nearest even, NaN kept quiet)', function () {
  this.timeout(300_000);
  let addon: NativeAddon;
  before(function () {
    addon = addonOrSkip(this);
  });

  it('float32 → BF16, F16, F32, F64', async () => {
    const xs = float32Cases();
    const input = new Uint8Array(xs.buffer);
    const values = Float64Array.from(xs);
    await forEachIsa(addon, async (isa) => {
      for (const outDtype of ['BF16', 'F16', 'F32', 'F64'] as const) {
        const got = await passThrough(addon, input, 'F32', outDtype, 3, isa);
        assertSameValues(got, encodeFloats(values, outDtype), outDtype, values, `${isa} F32 → ${outDtype}`);
      }
    });
  });

  it('float64 → BF16, F16, F32 without double rounding', async () => {
    const values = float64Cases();
    const input = encodeFloats(values, 'F64');
    await forEachIsa(addon, async (isa) => {
      for (const outDtype of ['BF16', 'F16', 'F32', 'F64'] as const) {
        const got = await passThrough(addon, input, 'F64', outDtype, 5, isa);
        assertSameValues(got, encodeFloats(values, outDtype), outDtype, values, `${isa} F64 → ${outDtype}`);
      }
    });
  });

  it('every BF16 and F16 bit pattern decodes exactly', async () => {
    const all = new Uint16Array(65536).map((_, k) => k);
    const input = new Uint8Array(all.buffer);
    await forEachIsa(addon, async (isa) => {
      for (const inDtype of ['BF16', 'F16'] as const) {
        const values = decodeFloats(input, inDtype) as Float64Array;
        // x + x overflows above half the largest value: those patterns are covered by F32 → F64 above
        const keep = values.map((v) => (Number.isFinite(v) && Math.abs(v) >= 2 ** 127 ? 0 : v));
        const bytes = encodeFloats(keep, inDtype);
        for (const outDtype of ['F32', 'F64', inDtype] as const) {
          const got = await passThrough(addon, bytes, inDtype, outDtype, 1, isa);
          assertSameValues(got, encodeFloats(keep, outDtype), outDtype, keep, `${isa} ${inDtype} → ${outDtype}`);
        }
      }
    });
  });
});
