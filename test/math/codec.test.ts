import { strict as assert } from 'node:assert';
import type { FloatDType } from '../../lib/dtype';
import {
  decodeFloats,
  encodeFloats,
  f64ToBf16Bits,
  f64ToF16Bits,
  bf16BitsToNumber,
  f16BitsToNumber,
  ulp,
} from '../../lib/math/codec';
import { mulberry32, randomTensor } from '../helpers/random';

const ALL_16 = Uint16Array.from({ length: 65536 }, (_, i) => i);
const BYTES_16 = new Uint8Array(ALL_16.buffer);

/** The IEEE layout of the two 16-bit dtypes. */
const HALF = {
  F16: { expMask: 0x7c00, mantMask: 0x03ff, quiet: 0x0200, encode: f64ToF16Bits, decode: f16BitsToNumber },
  BF16: { expMask: 0x7f80, mantMask: 0x007f, quiet: 0x0040, encode: f64ToBf16Bits, decode: bf16BitsToNumber },
} as const;

function isNaNBits(bits: number, d: 'F16' | 'BF16'): boolean {
  const { expMask, mantMask } = HALF[d];
  return (bits & expMask) === expMask && (bits & mantMask) !== 0;
}

/** The next float64 above / below x (x finite, positive). */
function nextUp(x: number): number {
  const f = new Float64Array([x]);
  const w = new BigUint64Array(f.buffer);
  w[0] = w[0]! + 1n;
  return f[0]!;
}
function nextDown(x: number): number {
  const f = new Float64Array([x]);
  const w = new BigUint64Array(f.buffer);
  w[0] = w[0]! - 1n;
  return f[0]!;
}

describe('codec', () => {
  for (const d of ['F16', 'BF16'] as const) {
    describe(d, () => {
      const { expMask, quiet, encode } = HALF[d];

      it('round-trips every bit pattern (NaNs to a quiet NaN of the same sign)', () => {
        const values = decodeFloats(BYTES_16, d);
        const back = new Uint16Array(encodeFloats(values, d).slice().buffer);
        for (let b = 0; b < 65536; b++) {
          const got = back[b]!;
          if (isNaNBits(b, d)) {
            assert.ok(isNaNBits(got, d), `${d} ${b.toString(16)} → ${got.toString(16)} is not NaN`);
            assert.equal(got & quiet, quiet, `${d} NaN ${b.toString(16)} not quiet`);
            assert.equal(got & 0x8000, b & 0x8000, `${d} NaN ${b.toString(16)} lost its sign`);
          } else {
            assert.equal(got, b, `${d} ${b.toString(16)} → ${values[b]} → ${got.toString(16)}`);
            assert.equal(encode(values[b]!), b);
          }
        }
      });

      it('rounds every halfway case to even, and just off it to nearest', () => {
        const values = decodeFloats(BYTES_16, d);
        for (let b = 0; b < 0x8000; b++) {
          if ((b & expMask) === expMask || ((b + 1) & expMask) === expMask) continue;
          const lo = values[b]!;
          const hi = values[b + 1]!;
          const mid = (lo + hi) / 2; // exact in float64
          const even = b % 2 === 0 ? b : b + 1;
          for (const sign of [0, 0x8000]) {
            const s = sign ? -1 : 1;
            assert.equal(encode(s * mid), even | sign, `${d} tie ${s * mid}`);
            assert.equal(encode(s * nextDown(mid)), b | sign, `${d} below tie ${s * mid}`);
            assert.equal(encode(s * nextUp(mid)), (b + 1) | sign, `${d} above tie ${s * mid}`);
          }
        }
      });

      it('overflows to ±Inf past the largest finite value, ties included', () => {
        const max = expMask - 1; // all-ones mantissa below the Inf exponent
        const maxValue = HALF[d].decode(max);
        const next = 2 * HALF[d].decode(expMask - (HALF[d].mantMask + 1)); // 2^(emax+1)
        const mid = (maxValue + next) / 2;
        assert.equal(encode(mid), expMask); // max is odd: the tie goes to Inf
        assert.equal(encode(-mid), expMask | 0x8000);
        assert.equal(encode(nextDown(mid)), max);
        assert.equal(encode(1e300), expMask);
        assert.equal(encode(-Infinity), expMask | 0x8000);
        assert.equal(encode(Number.MAX_VALUE), expMask);
      });

      it('keeps subnormals and rounds below the smallest to ±0', () => {
        const tiny = HALF[d].decode(1);
        assert.equal(encode(tiny), 1);
        assert.equal(encode(tiny / 2), 0); // tie to even: 0
        assert.equal(encode(nextUp(tiny / 2)), 1);
        assert.equal(encode((3 * tiny) / 2), 2); // tie between 1 and 2 → 2
        assert.equal(encode(-tiny / 4), 0x8000);
        assert.equal(encode(-0), 0x8000);
        assert.equal(encode(5e-324), 0);
        const largestSub = HALF[d].mantMask;
        const minNormal = largestSub + 1;
        assert.equal(encode((HALF[d].decode(largestSub) + HALF[d].decode(minNormal)) / 2), minNormal);
      });

      it('encodes NaN as a quiet NaN', () => {
        assert.ok(isNaNBits(encode(NaN), d));
        assert.equal(encode(NaN) & quiet, quiet);
        const bytes = encodeFloats([NaN, -NaN, 1], d);
        const back = decodeFloats(bytes, d);
        assert.ok(Number.isNaN(back[0]) && Number.isNaN(back[1]));
        assert.equal(back[2], 1);
      });
    });
  }

  it('BF16 rounds once, from the float64 value (no double rounding through float32)', () => {
    // 1 + 2^-8 + 2^-30: float32 drops the 2^-30 and lands on the BF16 tie, which goes to even (1.0);
    // the float64 value is above the tie, so BF16 must round up to 1 + 2^-7.
    const x = 1 + 2 ** -8 + 2 ** -30;
    assert.equal(f64ToBf16Bits(Math.fround(x)), 0x3f80);
    assert.equal(f64ToBf16Bits(x), 0x3f81);
    assert.deepEqual([...encodeFloats([x], 'BF16')], [0x81, 0x3f]);
    // F16: 1 + 2^-11 + 2^-40 is above the F16 tie at 1 + 2^-11.
    assert.equal(f64ToF16Bits(1 + 2 ** -11 + 2 ** -40), 0x3c01);
  });

  it('F32 and F64 encode with RNE and decode exactly', () => {
    const rng = mulberry32(7);
    const v = randomTensor(10000, rng, 1e3);
    v[0] = 1 + 2 ** -24; // tie → 1
    v[1] = 1 + 3 * 2 ** -24; // tie → 1 + 2^-22
    v[2] = 1e39; // → Inf
    v[3] = 1e-46; // below half the smallest subnormal → 0
    const f32 = decodeFloats(encodeFloats(v, 'F32'), 'F32');
    for (let k = 0; k < v.length; k++) assert.equal(f32[k], Math.fround(v[k]!));
    assert.equal(f32[0], 1);
    assert.equal(f32[1], 1 + 2 ** -22);
    assert.equal(f32[2], Infinity);
    assert.equal(f32[3], 0);
    assert.deepEqual(decodeFloats(encodeFloats(v, 'F64'), 'F64'), v);
  });

  it('accepts any byte alignment, and decodes into a given array', () => {
    const rng = mulberry32(11);
    const v = randomTensor(37, rng);
    for (const d of ['F64', 'F32', 'F16', 'BF16'] as FloatDType[]) {
      const bytes = encodeFloats(v, d);
      const expected = decodeFloats(bytes, d);
      for (const shift of [1, 2, 3, 5]) {
        const host = new Uint8Array(bytes.byteLength + 8);
        const view = host.subarray(shift, shift + bytes.byteLength);
        encodeFloats(v, d, view);
        assert.deepEqual([...view], [...bytes], `${d} encode at offset ${shift}`);
        assert.deepEqual(decodeFloats(view, d), expected, `${d} decode at offset ${shift}`);
      }
      const into32 = new Float32Array(50);
      const got = decodeFloats(bytes, d, into32);
      assert.equal(got.length, 37);
      assert.ok(got instanceof Float32Array && got.buffer === into32.buffer);
      for (let k = 0; k < 37; k++) assert.equal(got[k], Math.fround(expected[k]!));
      const into64 = new Float64Array(37);
      assert.equal(decodeFloats(bytes, d, into64), into64);
      assert.deepEqual(into64, expected);
    }
    assert.throws(() => decodeFloats(new Uint8Array(3), 'F16'), RangeError);
    assert.throws(() => decodeFloats(new Uint8Array(8), 'F32', new Float32Array(1)), RangeError);
    assert.throws(() => encodeFloats([1, 2], 'F32', new Uint8Array(7)), RangeError);
  });

  it('ulp is the spacing of the output dtype at a value, subnormal spacing at 0', () => {
    assert.equal(ulp(1, 'F64'), 2 ** -52);
    assert.equal(ulp(1, 'F32'), 2 ** -23);
    assert.equal(ulp(1, 'F16'), 2 ** -10);
    assert.equal(ulp(1, 'BF16'), 2 ** -7);
    assert.equal(ulp(-1.999, 'BF16'), 2 ** -7);
    assert.equal(ulp(2, 'BF16'), 2 ** -6);
    assert.equal(ulp(65504, 'F16'), 32);
    assert.equal(ulp(0, 'F64'), 2 ** -1074);
    assert.equal(ulp(0, 'F32'), 2 ** -149);
    assert.equal(ulp(0, 'F16'), 2 ** -24);
    assert.equal(ulp(0, 'BF16'), 2 ** -133);
    assert.equal(ulp(2 ** -20, 'F16'), 2 ** -24);
    assert.equal(ulp(2 ** -14, 'F16'), 2 ** -24);
    assert.equal(ulp(2 ** -13, 'F16'), 2 ** -23);
    assert.equal(ulp(1e-310, 'F64'), 2 ** -1074);
    assert.equal(ulp(Infinity, 'F32'), Infinity);
    assert.ok(Number.isNaN(ulp(NaN, 'F32')));
    // Matches the gap to the next representable value everywhere in range.
    for (const d of ['F16', 'BF16'] as const) {
      for (let b = 0; b < HALF[d].expMask - 1; b += 97) {
        assert.equal(ulp(HALF[d].decode(b), d), HALF[d].decode(b + 1) - HALF[d].decode(b), `${d} ${b}`);
      }
    }
  });
});
