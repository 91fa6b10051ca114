import { strict as assert } from 'node:assert';
import { FLOAT_DTYPES } from '../../lib/dtype';
import { encodeFloats } from '../../lib/math/codec';
import { findNonFinite } from '../../lib/math/nonfinite';
import { mulberry32, randomTensor } from '../helpers/random';

describe('findNonFinite', () => {
  const rng = mulberry32(3);
  for (const d of FLOAT_DTYPES) {
    it(`${d}: finds the first NaN/±Inf at any position and alignment`, () => {
      for (const n of [0, 1, 2, 3, 8, 33, 70001]) {
        const v = randomTensor(n, rng, 100);
        for (const shift of [0, 1, 2, 3]) {
          const put = (values: Float64Array) => {
            const bytes = encodeFloats(values, d);
            const host = new Uint8Array(bytes.byteLength + 4);
            host.set(bytes, shift);
            return host.subarray(shift, shift + bytes.byteLength);
          };
          assert.equal(findNonFinite(put(v), d), -1, `${d} n=${n} clean`);
          if (n === 0) continue;
          for (const at of new Set([0, n >> 1, n - 1])) {
            for (const bad of [NaN, Infinity, -Infinity]) {
              const w = Float64Array.from(v);
              w[at] = bad;
              if (at + 1 < n) w[n - 1] = NaN; // a later hit must not win
              assert.equal(findNonFinite(put(w), d), at, `${d} n=${n} ${bad} at ${at}, offset ${shift}`);
            }
          }
        }
      }
    });
  }

  it('treats the largest finite values and subnormals as finite', () => {
    assert.equal(findNonFinite(encodeFloats([65504, -65504, 6e-8], 'F16'), 'F16'), -1);
    assert.equal(findNonFinite(encodeFloats([3.3e38, -3.3e38, 1e-40], 'BF16'), 'BF16'), -1);
    assert.equal(findNonFinite(encodeFloats([3.4e38, 1e-45], 'F32'), 'F32'), -1);
    assert.equal(findNonFinite(encodeFloats([Number.MAX_VALUE, 5e-324], 'F64'), 'F64'), -1);
    assert.equal(findNonFinite(encodeFloats([1, 65520], 'F16'), 'F16'), 1); // rounds to Inf
  });

  it('rejects a byte length that is not whole elements', () => {
    assert.throws(() => findNonFinite(new Uint8Array(6), 'F32'), RangeError);
  });
});
