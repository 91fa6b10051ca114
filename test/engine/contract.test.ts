import { strict as assert } from 'node:assert';
import { FLOAT_DTYPES, floatSize, type FloatDType } from '../../lib/dtype';
import { isModelStockError } from '../../lib/errors';
import type { Backend, TensorSpec, TensorWindow } from '../../lib/engine/backend';
import { createBackend } from '../../lib/engine/registry';
import { decodeFloats, encodeFloats } from '../../lib/math/codec';
import { gramIndex, gramSize } from '../../lib/math/gram';
import { unitRatio, type ThetaRule } from '../../lib/math/ratio';
import { shifted } from '../helpers/addon';
import { backendVariants, backendsUnderTest } from '../helpers/backends';
import {
  assertGramClose,
  assertWithinContract,
  numel,
  referenceGram,
  referenceMerge,
  unitLengthOf,
} from '../helpers/reference';
import { correlatedModels, mulberry32, randomTensor, type Rng } from '../helpers/random';

/**
 * The backend contract (lib/engine/backend.ts), one suite every backend runs — js, native with each
 * ISA forced and on one thread, cuda when a device is present — on the same seeded inputs, against the
 * float64 reference: Gram accumulators, cosines, t and every output element within docs/merge-contract.md's
 * contract; windows, row ranges, odd sizes and offsets; NaN propagation; errors. (ggml's
 * test-backend-ops does the same for its backends.)
 */

interface Case {
  readonly label: string;
  /** Decoded inputs: exactly what every backend sees. */
  readonly base: Float64Array;
  readonly models: Float64Array[];
  /** [base, ...models] encoded, each at its own byte offset. */
  readonly inputs: Uint8Array[];
  readonly dtypes: FloatDType[];
  readonly unitLength: number;
  readonly units: number;
}

function makeCase(
  rng: Rng,
  count: number,
  unitLength: number,
  dtypes: readonly FloatDType[],
  opts: { cos?: number; shift?: number } = {},
): Case {
  const n = dtypes.length - 1;
  const raw = randomTensor(count, rng, 0.05);
  const fine = correlatedModels(raw, n, opts.cos ?? 0.2 + 0.6 * rng(), rng);
  const shift = opts.shift ?? 0;
  const inputs = [raw, ...fine].map((v, i) => shifted(encodeFloats(v, dtypes[i]!), (shift * (i + 1)) % 8));
  const decoded = inputs.map((b, i) => decodeFloats(b, dtypes[i]!) as Float64Array);
  return {
    label: `${dtypes.join('+')} ×${count} unit ${unitLength} shift ${shift}`,
    base: decoded[0]!,
    models: decoded.slice(1),
    inputs,
    dtypes: [...dtypes],
    unitLength,
    units: count === 0 ? 0 : count / unitLength,
  };
}

const specOf = (c: Case, outDtype: FloatDType): TensorSpec => ({
  name: c.label,
  dtypes: c.dtypes,
  outDtype,
  numel: c.base.length,
  unitLength: c.unitLength,
});

function windowOf(c: Case, first: number, count: number): TensorWindow {
  return {
    firstElement: first,
    count,
    inputs: c.inputs.map((b, i) => {
      const s = floatSize(c.dtypes[i]!);
      return b.subarray(first * s, (first + count) * s);
    }),
  };
}

interface Run {
  gram: Float64Array;
  t: Float64Array;
  out: Uint8Array;
}

/** Both passes through one session, over windows cut at `cuts`; t from the backend's own Gram. */
async function run(
  backend: Backend,
  c: Case,
  outDtype: FloatDType,
  opts: { theta?: ThetaRule; cuts?: readonly number[]; outShift?: number; t?: Float64Array } = {},
): Promise<Run> {
  const len = c.base.length;
  const n = c.models.length;
  const bounds = [0, ...(opts.cuts ?? []).filter((x) => x > 0 && x < len).sort((a, b) => a - b), len];
  const session = backend.openTensor(specOf(c, outDtype));
  try {
    for (let b = 0; b + 1 < bounds.length; b++) {
      await session.gram(windowOf(c, bounds[b]!, bounds[b + 1]! - bounds[b]!));
    }
    const gram = Float64Array.from(await session.gramResult());
    let t = opts.t;
    if (t === undefined) {
      t = new Float64Array(c.units);
      for (let u = 0; u < c.units; u++)
        t[u] = unitRatio(gram, u * gramSize(n), n, opts.theta ?? 'mean-cos').t;
    }
    const size = floatSize(outDtype);
    const out = shifted(new Uint8Array(len * size), opts.outShift ?? 0);
    for (let b = 0; b + 1 < bounds.length; b++) {
      const first = bounds[b]!;
      const count = bounds[b + 1]! - first;
      await session.interpolate(
        windowOf(c, first, count),
        t,
        out.subarray(first * size, (first + count) * size),
      );
    }
    return { gram, t, out };
  } finally {
    await session.close();
  }
}

/** Gram, cosines, t and every output element against the float64 reference. */
function check(c: Case, r: Run, outDtype: FloatDType, theta: ThetaRule, label: string): void {
  const n = c.models.length;
  const refGram = referenceGram(c.base, c.models, c.unitLength);
  assertGramClose(r.gram, refGram, n, c.units, label);
  const ref = referenceMerge(c.base, c.models, { unitLength: c.unitLength, theta });
  for (let u = 0; u < c.units; u++) {
    // dt/dc = N / (1 + (N−1)c)²: cosines within 1e-9 move t by at most that much more.
    const c0 = unitRatio(refGram, u * gramSize(n), n, theta).c;
    const slope = n / Math.max(1e-3, (1 + (n - 1) * c0) ** 2);
    assert.ok(Math.abs(r.t[u]! - ref.t[u]!) <= 2e-9 * slope, `${label}: t[${u}] ${r.t[u]} vs ${ref.t[u]}`);
  }
  const actual = decodeFloats(r.out, outDtype) as Float64Array;
  assertWithinContract(actual, c.base, c.models, r.t, c.unitLength, outDtype, label);
}

const SHAPES: number[][] = [[], [1], [7], [1031], [5, 13], [3, 4, 5], [2, 3, 2, 3], [4, 9000], [1, 17]];

/** Outputs of the dtype matrix, per variant, for the cross-variant comparison at the end. */
const matrixOutputs = new Map<string, Map<string, Buffer>>();

describe('backend contract', function () {
  this.timeout(600_000);

  for (const variant of backendVariants()) {
    describe(variant.label, () => {
      let backend: Backend;
      before(() => {
        backend = variant.create();
      });
      after(() => backend.dispose());

      it('every input × output dtype, N = 2, 3, 4, every rank, layer- and filter-wise, both theta rules', async () => {
        const outputs = new Map<string, Buffer>();
        matrixOutputs.set(variant.label, outputs);
        for (const inDtype of FLOAT_DTYPES) {
          for (const outDtype of FLOAT_DTYPES) {
            const rng = mulberry32(FLOAT_DTYPES.indexOf(inDtype) * 10 + FLOAT_DTYPES.indexOf(outDtype));
            for (const n of [2, 3, 4]) {
              for (const shape of SHAPES) {
                for (const filterWise of [false, true]) {
                  const c = makeCase(
                    rng,
                    numel(shape),
                    unitLengthOf(shape, filterWise),
                    Array(n + 1).fill(inDtype),
                  );
                  const theta: ThetaRule = n === 3 && filterWise ? 'mean-angle' : 'mean-cos';
                  const label = `${variant.label}: ${inDtype}→${outDtype} N=${n} [${shape}] ${filterWise ? 'rows' : 'layer'}`;
                  const r = await run(backend, c, outDtype, { theta });
                  check(c, r, outDtype, theta, label);
                  // With the reference's t, every native ISA and thread count must give the same bytes.
                  const { t } = referenceMerge(c.base, c.models, { unitLength: c.unitLength, theta });
                  const fixed = await run(backend, c, outDtype, { theta, t });
                  outputs.set(label.slice(variant.label.length), Buffer.from(fixed.out));
                }
              }
            }
          }
        }
      });

      it('mixed input dtypes, with negative and near-1 cosines', async () => {
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
              for (const [count, unitLength] of [
                [1031, 1031],
                [210, 35],
              ]) {
                const c = makeCase(rng, count!, unitLength!, dtypes, { cos });
                check(
                  c,
                  await run(backend, c, outDtype),
                  outDtype,
                  'mean-cos',
                  `${variant.label}: ${c.label} cos ${cos} → ${outDtype}`,
                );
              }
            }
          }
        }
      });

      it('odd sizes and tails (1 … 100003), inputs and output at byte offsets 0–7', async () => {
        const rng = mulberry32(2);
        const sizes = [1, 2, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 127, 1023, 4097, 65535, 65537, 100003];
        for (const [k, size] of sizes.entries()) {
          const d = FLOAT_DTYPES[k % 4]!;
          const c = makeCase(rng, size, size, [d, d, d], { shift: k % 8 });
          for (const outDtype of [d, 'F32'] as const) {
            const r = await run(backend, c, outDtype, { outShift: (k + 3) % 8 });
            check(c, r, outDtype, 'mean-cos', `${variant.label}: ${c.label} → ${outDtype}`);
          }
        }
      });

      it('filter-wise rows cut by the 64Ki-element blocks, and one-element units', async () => {
        const rng = mulberry32(3);
        for (const [rows, cols] of [
          [37, 65],
          [5, 1],
          [300, 17],
          [3, 70001],
          [200, 1000],
          [4099, 1],
        ] as const) {
          const c = makeCase(rng, rows * cols, cols, ['BF16', 'BF16', 'F16', 'BF16'], { shift: 1 });
          for (const outDtype of ['BF16', 'F32'] as const) {
            check(
              c,
              await run(backend, c, outDtype),
              outDtype,
              'mean-cos',
              `${variant.label}: ${c.label} → ${outDtype}`,
            );
          }
        }
      });

      it('windows cut anywhere (mid-unit included): the Gram within tolerance of one window, the same bytes', async () => {
        const rng = mulberry32(5);
        for (const dtypes of [
          ['BF16', 'BF16', 'BF16'],
          ['F32', 'F16', 'F64', 'BF16'],
          ['F16', 'F16', 'F16', 'F16', 'F16'],
        ] as FloatDType[][]) {
          for (const [count, unitLength] of [
            [40000, 40000],
            [35021, 5003],
            [105, 35],
            [17, 17],
            [140000, 140000],
          ]) {
            const c = makeCase(rng, count!, unitLength!, dtypes);
            const one = await run(backend, c, 'BF16');
            const len = c.base.length;
            for (const cuts of [
              [1],
              [len - 1],
              [c.unitLength - 1, c.unitLength + 1],
              Array.from({ length: 6 }, () => Math.floor(rng() * len)),
              Array.from({ length: Math.min(len - 1, 40) }, (_, i) => i + 1),
            ]) {
              const label = `${variant.label}: ${c.label} cuts ${cuts.slice(0, 6)}`;
              const split = await run(backend, c, 'BF16', { cuts });
              assertGramClose(split.gram, one.gram, c.models.length, c.units, label);
              // Same t, same bytes: the interpolation of an element does not depend on its window.
              const again = await run(backend, c, 'BF16', { cuts });
              assert.ok(Buffer.from(again.out).equals(Buffer.from(split.out)), `${label}: not deterministic`);
              check(c, split, 'BF16', 'mean-cos', label);
            }
          }
        }
      });

      it('a row range: the first r rows of larger inputs merge like an r-row tensor', async () => {
        const rng = mulberry32(11);
        const cols = 48;
        for (const filterWise of [false, true]) {
          const rows = 100;
          const big = makeCase(rng, (rows + 5) * cols, cols, ['BF16', 'BF16', 'F32'], { shift: 3 });
          // The spec covers rows 0 … 99 of inputs that have more rows; windows are prefixes of them.
          const prefix: Case = {
            ...big,
            label: `${big.label} rows 0…${rows - 1}`,
            base: big.base.subarray(0, rows * cols),
            models: big.models.map((m) => m.subarray(0, rows * cols)),
            unitLength: filterWise ? cols : rows * cols,
            units: filterWise ? rows : 1,
          };
          const r = await run(backend, prefix, 'BF16', { cuts: [17 * cols + 5] });
          check(prefix, r, 'BF16', 'mean-cos', `${variant.label}: ${prefix.label}`);
        }
      });

      it('zero elements, and one unit spanning many 64Ki-element blocks', async () => {
        const empty = makeCase(mulberry32(1), 0, 1, ['BF16', 'BF16', 'BF16']);
        const r = await run(backend, empty, 'BF16');
        assert.equal(r.gram.length, 0);
        assert.equal(r.out.byteLength, 0);
        const rng = mulberry32(12);
        const huge = makeCase(rng, (1 << 20) + 13, (1 << 20) + 13, ['BF16', 'F16', 'BF16']);
        check(huge, await run(backend, huge, 'BF16'), 'BF16', 'mean-cos', `${variant.label}: ${huge.label}`);
      });

      it('NaN and Inf in any input reach the Gram diagonal of that input', async () => {
        const rng = mulberry32(6);
        for (const dtype of FLOAT_DTYPES) {
          for (const [which, at, value] of [
            [0, 0, Infinity],
            [1, 40, NaN],
            [2, 1030, -Infinity],
            [1, 1032, NaN],
          ] as const) {
            const c = makeCase(rng, 1033, 1033, [dtype, dtype, dtype], { shift: 1 });
            const values = decodeFloats(c.inputs[which]!, dtype);
            values[at] = value;
            c.inputs[which] = shifted(encodeFloats(values, dtype), 1);
            const { gram } = await run(backend, c, dtype);
            const diagonal = which === 0 ? [gram[0]!, gram[2]!] : [gram[gramIndex(which - 1, which - 1, 2)]!];
            for (const g of diagonal)
              assert.ok(
                !Number.isFinite(g),
                `${variant.label} ${dtype}: ${value} in input ${which} at ${at} gave ${gram}`,
              );
          }
        }
      });

      it('concurrent sessions do not interfere, and the event loop keeps running', async () => {
        const rng = mulberry32(21);
        const c = makeCase(rng, 1 << 20, 1 << 20, ['F32', 'F32', 'F32']);
        const d = makeCase(rng, 1 << 20, 1 << 19, ['BF16', 'F16', 'BF16', 'F32']);
        const soloC = await run(backend, c, 'BF16');
        const soloD = await run(backend, d, 'F16');
        let ticked = false;
        setImmediate(() => (ticked = true));
        const [pc, pd] = await Promise.all([run(backend, c, 'BF16'), run(backend, d, 'F16')]);
        assert.ok(ticked, 'the event loop ran while the sessions were in progress');
        assert.deepEqual(pc.gram, soloC.gram);
        assert.ok(Buffer.from(pc.out).equals(Buffer.from(soloC.out)));
        assert.deepEqual(pd.gram, soloD.gram);
        assert.ok(Buffer.from(pd.out).equals(Buffer.from(soloD.out)));
      });

      it('rejects malformed specs and windows with INVALID_ARGUMENT, naming the field', async () => {
        const good: TensorSpec = {
          name: 'w',
          dtypes: ['BF16', 'F32', 'F16'],
          outDtype: 'BF16',
          numel: 20,
          unitLength: 4,
        };
        const inputs = (count: number) => good.dtypes.map((d) => new Uint8Array(count * floatSize(d)));
        const invalid = (field: RegExp) => (e: unknown) =>
          isModelStockError(e) && e.code === 'INVALID_ARGUMENT' && field.test(e.message);
        for (const [spec, field] of [
          [{ ...good, dtypes: ['BF16', 'F32'] }, /spec\.dtypes/],
          [{ ...good, dtypes: ['BF16', 'F32', 'I32'] }, /spec\.dtypes\[2\]/],
          [{ ...good, outDtype: 'F8_E4M3' }, /spec\.outDtype/],
          [{ ...good, numel: -1 }, /spec\.numel/],
          [{ ...good, numel: 2.5 }, /spec\.numel/],
          [{ ...good, unitLength: 3 }, /spec\.unitLength/],
          [{ ...good, unitLength: 0 }, /spec\.unitLength/],
        ] as [TensorSpec, RegExp][]) {
          assert.throws(() => backend.openTensor(spec), invalid(field), JSON.stringify(spec));
        }
        const session = backend.openTensor(good);
        const t = new Float64Array(5);
        const out = new Uint8Array(8 * 2);
        await session.gram({ firstElement: 4, count: 8, inputs: inputs(8) });
        for (const [window, field] of [
          [{ firstElement: 16, count: 8, inputs: inputs(8) }, /window/],
          [{ firstElement: -1, count: 8, inputs: inputs(8) }, /window\.firstElement/],
          [{ firstElement: 0, count: 1.5, inputs: inputs(8) }, /window\.count/],
          [{ firstElement: 0, count: 8, inputs: inputs(8).slice(1) }, /window\.inputs/],
          [
            { firstElement: 0, count: 8, inputs: [...inputs(8).slice(0, 2), new Uint8Array(15)] },
            /window\.inputs\[2\]/,
          ],
          [{ firstElement: 0, count: 8 }, /window\.inputs/],
        ] as [TensorWindow, RegExp][]) {
          await assert.rejects(session.gram(window), invalid(field), JSON.stringify(window.firstElement));
          await assert.rejects(session.interpolate(window, t, out), invalid(field));
        }
        const w = { firstElement: 0, count: 8, inputs: inputs(8) };
        await assert.rejects(session.interpolate(w, new Float64Array(4), out), invalid(/for t/));
        await assert.rejects(session.interpolate(w, t, new Uint8Array(17)), invalid(/for out/));
        await session.interpolate(w, t, out);
        await session.close();
        await session.close();
        await assert.rejects(session.gram(w), invalid(/after close/));
        assert.throws(() => backend.allocHost(0), invalid(/bytes/));
      });

      it('a signal stops a long pass between blocks: CANCELLED, long before the pass would end', async () => {
        const count = 1 << 24; // 3 × 64 MiB of F32
        const c = makeCase(mulberry32(31), 1 << 10, 1 << 10, ['F32', 'F32', 'F32']);
        const big: Case = {
          ...c,
          inputs: c.inputs.map(() => new Uint8Array(count * 4)),
          base: new Float64Array(0),
          unitLength: count,
          units: 1,
        };
        const spec: TensorSpec = { ...specOf(big, 'F32'), numel: count };
        const window = { firstElement: 0, count, inputs: big.inputs };
        const timed = async (b: Backend): Promise<number> => {
          const started = performance.now();
          const session = b.openTensor(spec);
          try {
            await session.gram(window);
          } finally {
            await session.close();
          }
          return performance.now() - started;
        };
        const slow = variant.create({ threads: 1 });
        const whole = await timed(slow);
        await slow.dispose();
        const controller = new AbortController();
        const reason = new Error('stop');
        const cancellable = variant.create({ threads: 1, signal: controller.signal });
        const started = performance.now();
        const pass = timed(cancellable);
        // The job is under way (queued to the pool, or in its first chunk) when the signal fires.
        queueMicrotask(() => controller.abort(reason));
        await assert.rejects(pass, (e: unknown) => isModelStockError(e) && e.code === 'CANCELLED');
        const stopped = performance.now() - started;
        await cancellable.dispose();
        assert.ok(
          stopped < whole * 0.6,
          `stopped after ${stopped.toFixed(0)} ms of a ${whole.toFixed(0)} ms pass`,
        );
      });

      it('allocHost gives aligned, writable memory; info and capacity describe the backend', () => {
        const { alignment, sessionBytes } = backend.capacity();
        assert.ok(Number.isInteger(Math.log2(alignment)) && alignment >= 64, `alignment ${alignment}`);
        assert.ok(sessionBytes > 1 << 20);
        const a = backend.allocHost(12345);
        assert.equal(a.byteLength, 12345);
        a.fill(7);
        assert.equal(a[12344], 7);
        backend.freeHost(a);
        const info = backend.info();
        assert.equal(info.name, variant.name);
        assert.ok(info.threads >= 1);
        assert.ok(info.device.name.length > 0);
      });
    });
  }

  // A nested suite, so it runs after every variant's suite above (a suite's own tests run first).
  describe('across variants', () => {
    it('with the same t, every native ISA and thread count gives the same bytes', function () {
      const native = [...matrixOutputs.entries()].filter(([label]) => label.startsWith('native'));
      if (!backendsUnderTest().includes('native')) this.skip();
      assert.ok(native.length >= 2, `native variants ran: ${native.map(([l]) => l).join(', ')}`);
      const [first, ...rest] = native;
      for (const [label, outputs] of rest) {
        for (const [key, bytes] of outputs) {
          assert.ok(bytes.equals(first![1].get(key)!), `${label} and ${first![0]} differ on${key}`);
        }
      }
    });

    it('two native backends with different thread counts run at once, each reporting its own', async function () {
      if (!backendsUnderTest().includes('native')) this.skip();
      const one = createBackend('native', { threads: 1 });
      const two = createBackend('native', { threads: 2 });
      assert.equal(one.info().threads, 1);
      assert.equal(two.info().threads, 2);
      const c = makeCase(mulberry32(9), 1_000_000, 100_000, ['BF16', 'BF16', 'BF16'], { shift: 1 });
      const [a, b] = await Promise.all([run(one, c, 'BF16'), run(two, c, 'BF16')]);
      assert.deepEqual(a.gram, b.gram);
      assert.ok(Buffer.from(a.out).equals(Buffer.from(b.out)));
      assert.equal(one.info().threads, 1);
    });
  });
});
