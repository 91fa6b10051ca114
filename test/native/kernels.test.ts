import { strict as assert } from 'node:assert';
import { FLOAT_DTYPES, floatSize, type FloatDType } from '../../lib/dtype';
import type { NativeAddon, NativeIsa } from '../../lib/engine/addon-types';
import { gramSize, type GramJob, type InputWindow, type InterpolateJob } from '../../lib/engine/backend';
import { JsBackend } from '../../lib/engine/js';
import { NativeBackend } from '../../lib/engine/native';
import { decodeFloats, encodeFloats } from '../../lib/math/codec';
import { pairCosines, unitRatio } from '../../lib/math/ratio';
import { assertWithinContract, referenceGram } from '../../lib/math/reference';
import { correlatedModels, mulberry32, randomTensor, type Rng } from '../helpers/random';
import { addonOrSkip, forEachIsa, shifted } from './addon';

/** Native vs pure TypeScript vs the float64 reference, on seeded random inputs, every ISA forced. */

interface Case {
  label: string;
  base: Float64Array; // decoded: exactly what every backend sees
  models: Float64Array[];
  inputs: InputWindow[]; // [base, ...models] as bytes, possibly unaligned
  count: number;
  unitLength: number;
  units: number;
}

function makeCase(rng: Rng, dtypes: readonly FloatDType[], count: number, unitLength: number, shift = 0): Case {
  const n = dtypes.length - 1;
  const raw = randomTensor(count, rng, 0.05);
  const fine = correlatedModels(raw, n, 0.2 + 0.6 * rng(), rng);
  const inputs = [raw, ...fine].map((v, i) => ({
    bytes: shifted(encodeFloats(v, dtypes[i]!), (shift * (i + 1)) % 8),
    dtype: dtypes[i]!,
  }));
  const decoded = inputs.map((w) => decodeFloats(w.bytes, w.dtype) as Float64Array);
  return {
    label: `${dtypes.join('+')} ×${count} unit ${unitLength} shift ${shift}`,
    base: decoded[0]!,
    models: decoded.slice(1),
    inputs,
    count,
    unitLength,
    units: count === 0 ? 0 : Math.ceil(count / unitLength),
  };
}

function gramJob(c: Case, gram: Float64Array, from = 0, to = c.count): GramJob {
  return {
    base: window(c.inputs[0]!, from, to),
    models: c.inputs.slice(1).map((w) => window(w, from, to)),
    count: to - from,
    firstElement: from,
    unitLength: c.unitLength,
    gram,
  };
}

function window(w: InputWindow, from: number, to: number): InputWindow {
  const s = floatSize(w.dtype);
  return { bytes: w.bytes.subarray(from * s, to * s), dtype: w.dtype };
}

function interpolateJob(c: Case, t: Float64Array, outDtype: FloatDType, out: Uint8Array, from = 0, to = c.count) {
  const s = floatSize(outDtype);
  const job: InterpolateJob = {
    ...gramJob(c, new Float64Array(0), from, to),
    t,
    outDtype,
    out: out.subarray(from * s, to * s),
  };
  return job;
}

/** |g − ref| ≤ 1e-12 · sqrt(ref_ii · ref_jj) per accumulator, and cosines within 1e-9. */
function assertGramClose(got: Float64Array, ref: Float64Array, n: number, units: number, label: string): void {
  const p = gramSize(n);
  for (let u = 0; u < units; u++) {
    const o = u * p;
    let idx = 0;
    for (let i = 0; i < n; i++) {
      for (let j = i; j < n; j++, idx++) {
        const scale = Math.sqrt(ref[o + gramIndexOf(i, i, n)]! * ref[o + gramIndexOf(j, j, n)]!);
        const err = Math.abs(got[o + idx]! - ref[o + idx]!);
        assert.ok(
          err <= 1e-12 * scale || err === 0,
          `${label}: unit ${u} G[${i}][${j}] = ${got[o + idx]} vs reference ${ref[o + idx]} (rel ${err / scale})`,
        );
      }
    }
    const cg = pairCosines(got, o, n);
    const cr = pairCosines(ref, o, n);
    cg.forEach((c, k) =>
      assert.ok(Math.abs(c - cr[k]!) <= 1e-9, `${label}: unit ${u} cosine ${k}: ${c} vs ${cr[k]}`),
    );
  }
}

function gramIndexOf(i: number, j: number, n: number): number {
  return i * n - (i * (i - 1)) / 2 + (j - i);
}

async function nativeGram(addon: NativeAddon, c: Case): Promise<Float64Array> {
  const gram = new Float64Array(c.units * gramSize(c.models.length));
  await addon.gram(gramJob(c, gram));
  return gram;
}

function ratios(gram: Float64Array, n: number, units: number): Float64Array {
  const t = new Float64Array(units);
  for (let u = 0; u < units; u++) t[u] = unitRatio(gram, u * gramSize(n), n, 'mean-cos').t;
  return t;
}

/** Runs both passes on the native addon and on JsBackend and checks everything this file promises. */
async function checkCase(addon: NativeAddon, c: Case, outDtypes: readonly FloatDType[], isa: string) {
  const n = c.models.length;
  const ref = referenceGram(c.base, c.models, c.unitLength);
  const got = await nativeGram(addon, c);
  assertGramClose(got, ref, n, c.units, `${isa} ${c.label} gram`);
  const jsGram = new Float64Array(got.length);
  await new JsBackend().gram(gramJob(c, jsGram));
  assertGramClose(jsGram, ref, n, c.units, `js ${c.label} gram`);

  const t = ratios(ref, n, c.units);
  const outs: Uint8Array[] = [];
  for (const outDtype of outDtypes) {
    const label = `${isa} ${c.label} → ${outDtype}`;
    const out = new Uint8Array(c.count * floatSize(outDtype));
    await addon.interpolate(interpolateJob(c, t, outDtype, out));
    assertWithinContract(decodeFloats(out, outDtype) as Float64Array, c.base, c.models, t, c.unitLength, outDtype, label);
    const jsOut = new Uint8Array(out.byteLength);
    await new JsBackend().interpolate(interpolateJob(c, t, outDtype, jsOut));
    // Where the bytes differ, both must be within the contract (JS rounds once from float64, native
    // computes in float32 when every input fits, then rounds).
    if (!Buffer.from(out).equals(Buffer.from(jsOut))) {
      assertWithinContract(decodeFloats(jsOut, outDtype) as Float64Array, c.base, c.models, t, c.unitLength, outDtype, `js ${label}`);
    }
    outs.push(out);
  }
  return outs;
}

describe('native kernels vs JsBackend vs float64 reference', function () {
  this.timeout(600_000);
  let addon: NativeAddon;
  before(function () {
    addon = addonOrSkip(this);
  });

  it('every input dtype × every output dtype, N = 2, 3, 4, 5, unaligned, same bytes on every ISA', async () => {
    const rng = mulberry32(1);
    const cases: Case[] = [];
    for (const d of FLOAT_DTYPES) {
      cases.push(makeCase(rng, [d, d, d], 1023, 1023, 1));
      cases.push(makeCase(rng, [d, d, d, d], 517, 517, 3));
    }
    cases.push(makeCase(rng, ['BF16', 'F16', 'F32'], 999, 999, 5));
    cases.push(makeCase(rng, ['F32', 'BF16', 'BF16', 'F16'], 301, 301, 7));
    cases.push(makeCase(rng, ['F16', 'F64', 'BF16', 'F32'], 333, 333, 1));
    cases.push(makeCase(rng, ['BF16', 'BF16', 'BF16', 'BF16', 'BF16'], 250, 250, 3));
    cases.push(makeCase(rng, ['F32', 'F16', 'F32', 'BF16', 'F32', 'F64'], 97, 97, 2));
    const byIsa = new Map<string, Uint8Array[][]>();
    await forEachIsa(addon, async (isa) => {
      const all: Uint8Array[][] = [];
      for (const c of cases) all.push(await checkCase(addon, c, FLOAT_DTYPES, isa));
      byIsa.set(isa, all);
    });
    const [first, ...rest] = [...byIsa.entries()];
    for (const [isa, all] of rest) {
      all.forEach((outs, k) =>
        outs.forEach((o, m) =>
          assert.ok(
            Buffer.from(o).equals(Buffer.from(first![1][k]![m]!)),
            `${isa} and ${first![0]} differ on ${cases[k]!.label} → ${FLOAT_DTYPES[m]}`,
          ),
        ),
      );
    }
  });

  it('odd sizes and tails (1 … 100003), byte offsets 0–7', async () => {
    const rng = mulberry32(2);
    const sizes = [1, 2, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 127, 1023, 4097, 65535, 65537, 100003];
    await forEachIsa(addon, async (isa) => {
      for (const [k, size] of sizes.entries()) {
        const dtypes: FloatDType[] = [
          ['BF16', 'BF16', 'BF16'],
          ['F16', 'F16', 'F16'],
          ['F32', 'F32', 'F32'],
          ['F64', 'F64', 'F64'],
        ][k % 4] as FloatDType[];
        const c = makeCase(rng, dtypes, size, size, k % 8);
        await checkCase(addon, c, [dtypes[0]!, 'F32'], isa);
      }
    });
  });

  it('filter-wise units (rows), including rows cut by the 64Ki-element blocks', async () => {
    const rng = mulberry32(3);
    const shapes: [number, number][] = [
      [37, 65],
      [5, 1],
      [300, 17],
      [3, 70001],
      [200, 1000],
    ];
    await forEachIsa(addon, async (isa) => {
      for (const [rows, cols] of shapes) {
        const c = makeCase(rng, ['BF16', 'BF16', 'F16', 'BF16'], rows * cols, cols, 1);
        await checkCase(addon, c, ['BF16', 'F32'], isa);
      }
    });
  });

  it('windows much smaller than the tensor, split mid-unit, give the same Gram and bytes', async () => {
    const rng = mulberry32(4);
    await forEachIsa(addon, async (isa) => {
      for (const [count, unitLength] of [
        [5000, 5000],
        [4096, 64],
        [3001, 7],
        [140000, 140000],
      ] as const) {
        const c = makeCase(rng, ['BF16', 'F32', 'F16'], count, unitLength, 3);
        const n = c.models.length;
        const whole = await nativeGram(addon, c);
        const windowed = new Float64Array(whole.length);
        const t = ratios(whole, n, c.units);
        const wholeOut = new Uint8Array(count * 2);
        await addon.interpolate(interpolateJob(c, t, 'BF16', wholeOut));
        const out = new Uint8Array(count * 2);
        for (let from = 0; from < count; ) {
          const to = Math.min(count, from + 1 + Math.floor(rng() * (count > 10000 ? 30000 : 97)));
          await addon.gram(gramJob(c, windowed, from, to));
          await addon.interpolate(interpolateJob(c, t, 'BF16', out, from, to));
          from = to;
        }
        assertGramClose(windowed, whole, n, c.units, `${isa} windows of ${c.label}`);
        assert.ok(Buffer.from(out).equals(Buffer.from(wholeOut)), `${isa} windowed output of ${c.label}`);
      }
    });
  });

  it('the Gram does not depend on the thread count, and concurrent jobs do not interfere', async () => {
    const rng = mulberry32(5);
    const c = makeCase(rng, ['BF16', 'BF16', 'BF16'], 1_000_003, 100_000, 1);
    const cs = [1, 2, 3].map(() => makeCase(rng, ['F16', 'F32', 'BF16'], 70_001, 70_001));
    const results: Float64Array[] = [];
    try {
      for (const threads of [1, 2, 3]) {
        addon.setThreads(threads);
        assert.equal(addon.info().threads, threads);
        results.push(await nativeGram(addon, c));
      }
      const sequential: Float64Array[] = [];
      for (const x of cs) sequential.push(await nativeGram(addon, x));
      const concurrent = await Promise.all([...cs, ...cs].map((x) => nativeGram(addon, x)));
      concurrent.forEach((g, k) => assert.deepEqual(g, sequential[k % cs.length]));
      // resizing the pool while a job runs: retired threads hand their share back to the caller
      const inFlight = nativeGram(addon, c);
      addon.setThreads(1);
      addon.setThreads(3);
      results.push(await inFlight);
    } finally {
      addon.setThreads(0);
    }
    assert.deepEqual(results[1], results[0]);
    assert.deepEqual(results[2], results[0]);
    assert.deepEqual(results[3], results[0]);
  });

  it('NaN and Inf in any input reach the Gram diagonal', async () => {
    const rng = mulberry32(6);
    await forEachIsa(addon, async (isa) => {
      for (const dtype of FLOAT_DTYPES) {
        for (const [which, at, value] of [
          [0, 0, Infinity],
          [1, 40, NaN],
          [2, 1030, -Infinity],
          [1, 1032, NaN], // in the leftovers
        ] as const) {
          const count = 1033;
          const raw = randomTensor(count, rng);
          const vals = [raw, ...correlatedModels(raw, 2, 0.5, rng)];
          vals[which]![at] = value;
          const inputs = vals.map((v) => ({ bytes: shifted(encodeFloats(v, dtype), 1), dtype }));
          const gram = new Float64Array(3);
          await addon.gram({ base: inputs[0]!, models: inputs.slice(1), count, firstElement: 0, unitLength: count, gram });
          const diag = which === 0 ? [gram[0]!, gram[2]!] : [gram[which === 1 ? 0 : 2]!];
          for (const g of diag) assert.ok(!Number.isFinite(g), `${isa} ${dtype}: ${value} in input ${which} at ${at} gave ${gram}`);
        }
      }
    });
  });

  it('NativeBackend runs the same passes behind the Backend seam', async () => {
    const rng = mulberry32(7);
    const backend = new NativeBackend({ threads: 2 });
    try {
      assert.equal(backend.info().name, 'native');
      assert.equal(backend.info().threads, 2);
      const c = makeCase(rng, ['BF16', 'BF16', 'BF16'], 4099, 4099, 1);
      const gram = new Float64Array(3);
      await backend.gram(gramJob(c, gram));
      assertGramClose(gram, referenceGram(c.base, c.models, c.unitLength), 2, 1, 'NativeBackend');
      const t = ratios(gram, 2, 1);
      const out = new Uint8Array(c.count * 2);
      await backend.interpolate(interpolateJob(c, t, 'BF16', out));
      assertWithinContract(decodeFloats(out, 'BF16') as Float64Array, c.base, c.models, t, c.unitLength, 'BF16', 'NativeBackend');
      for (const isa of addon.info().availableIsas) {
        assert.equal(new NativeBackend({ isa }).info().isa, isa as NativeIsa);
      }
    } finally {
      await backend.dispose();
      addon.setThreads(0);
      addon.setIsa(addon.info().availableIsas[0]!);
    }
  });
});
