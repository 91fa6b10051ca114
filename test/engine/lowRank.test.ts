import { strict as assert } from 'node:assert';
import { FLOAT_DTYPES, floatSize, type FloatDType } from '../../lib/dtype';
import { isModelStockError } from '../../lib/errors';
import type { Backend, LowRankFactor, LowRankSpec, TensorSpec } from '../../lib/engine/backend';
import { createBackend } from '../../lib/engine/registry';
import { decodeFloats, encodeFloats } from '../../lib/math/codec';
import { gramIndex, gramSize } from '../../lib/math/gram';
import { pairCosines, unitRatio } from '../../lib/math/ratio';
import { shifted } from '../helpers/addon';
import { backendVariants, backendsUnderTest } from '../helpers/backends';
import { denseGram, makeFactor, type FactorCase, type FactorOptions } from '../helpers/lowRank';
import { mulberry32, randomTensor, type Rng } from '../helpers/random';
import { assertGramClose, assertWithinContract, contractTolerance } from '../helpers/reference';

/**
 * The low-rank half of the backend contract (lib/engine/backend.ts openLowRank / materializeRows), one
 * suite every backend runs — js, native with each ISA forced and on one thread, cuda when present —
 * against float64 references formed from the factors' dense task vectors: the Gram from factors vs the
 * dense Gram (cosines within 1e-9), the fused output within docs/merge-contract.md's contract, windows
 * cut at any row, cancellation-heavy adapters, NaN/Inf, errors, cancellation, concurrency.
 */

interface LowRankCase {
  readonly label: string;
  readonly rows: number;
  readonly cols: number;
  readonly mergedRows: number;
  readonly filterWise: boolean;
  readonly baseDtype: FloatDType;
  /** The base as encoded (at a byte offset), and decoded. */
  readonly baseBytes: Uint8Array;
  readonly base: Float64Array;
  /** Per fine-tune: factors and dense task vector, or undefined (zero). */
  readonly factors: readonly (FactorCase | undefined)[];
}

interface CaseOptions {
  readonly rows: number;
  readonly cols: number;
  readonly filterWise?: boolean;
  readonly mergedRows?: number;
  readonly baseDtype?: FloatDType;
  /** Per fine-tune: factor options, or undefined for a zero task vector. */
  readonly factors: readonly (FactorOptions | undefined)[];
  readonly base?: Float64Array;
  readonly shift?: number;
}

function makeCase(rng: Rng, o: CaseOptions): LowRankCase {
  const { rows, cols, filterWise = false, baseDtype = 'BF16', shift = 0 } = o;
  const baseBytes = shifted(
    encodeFloats(o.base ?? randomTensor(rows * cols, rng, 0.05), baseDtype),
    shift % 8,
  );
  const factors = o.factors.map((f) => (f === undefined ? undefined : makeFactor(rng, rows, cols, f)));
  const describe = (f: FactorOptions | undefined): string =>
    f === undefined ? '0' : `r${f.rank}${f.transposed ? 'ᵀ' : ''}${f.aDtype ?? 'F32'}/${f.bDtype ?? 'F32'}`;
  return {
    label: `[${rows}×${cols}] ${filterWise ? 'rows' : 'layer'} ${baseDtype} ${o.factors.map(describe).join(' ')}`,
    rows,
    cols,
    mergedRows: o.mergedRows ?? rows,
    filterWise,
    baseDtype,
    baseBytes,
    base: decodeFloats(baseBytes, baseDtype) as Float64Array,
    factors,
  };
}

const specOf = (c: LowRankCase, outDtype: FloatDType): LowRankSpec => ({
  name: c.label,
  rows: c.rows,
  cols: c.cols,
  baseDtype: c.baseDtype,
  outDtype,
  filterWise: c.filterWise,
  ...(c.mergedRows !== c.rows ? { mergedRows: c.mergedRows } : {}),
  factors: c.factors.map((f) => f?.factor),
});

const units = (c: LowRankCase): number => (c.filterWise ? c.mergedRows : 1);
const taskVectors = (c: LowRankCase): Float64Array[] =>
  c.factors.map((f) => f?.d ?? new Float64Array(c.rows * c.cols));

/** The float64 reference Gram: the dense task vectors' Gram over the merged rows. */
const referenceGram = (c: LowRankCase): Float64Array =>
  denseGram(taskVectors(c), c.cols, c.mergedRows, c.filterWise);

/** The merged rows' fine-tunes w_i = w0 + d_i, in float64 (what assertWithinContract reads). */
function fineTunes(c: LowRankCase): Float64Array[] {
  const n = c.mergedRows * c.cols;
  return taskVectors(c).map((d) => {
    const w = new Float64Array(n);
    for (let k = 0; k < n; k++) w[k] = c.base[k]! + d[k]!;
    return w;
  });
}

function ratiosOf(gram: Float64Array, n: number, count: number): Float64Array {
  const t = new Float64Array(count);
  for (let u = 0; u < count; u++) t[u] = unitRatio(gram, u * gramSize(n), n, 'mean-cos').t;
  return t;
}

interface Run {
  readonly gram: Float64Array;
  readonly t: Float64Array;
  readonly out: Uint8Array;
}

/** Gram, then the output over row windows cut at `cuts` (in a shuffled order); t from the backend's Gram. */
async function run(
  backend: Backend,
  c: LowRankCase,
  outDtype: FloatDType,
  opts: { cuts?: readonly number[]; t?: Float64Array; outShift?: number } = {},
): Promise<Run> {
  const session = backend.openLowRank(specOf(c, outDtype));
  try {
    const gram = Float64Array.from(await session.gram());
    const t = opts.t ?? ratiosOf(gram, c.factors.length, units(c));
    const bounds = [
      0,
      ...[...new Set(opts.cuts ?? [])].filter((x) => x > 0 && x < c.mergedRows).sort((a, b) => a - b),
      c.mergedRows,
    ];
    const inSize = floatSize(c.baseDtype);
    const outSize = floatSize(outDtype);
    const out = shifted(new Uint8Array(c.mergedRows * c.cols * outSize), opts.outShift ?? 0);
    // Last window first: windows are independent of each other and of their order.
    for (let w = bounds.length - 2; w >= 0; w--) {
      const first = bounds[w]!;
      const rows = bounds[w + 1]! - first;
      const row = c.cols;
      await session.interpolate(
        {
          firstRow: first,
          rows,
          base: c.baseBytes.subarray(first * row * inSize, (first + rows) * row * inSize),
        },
        t,
        out.subarray(first * row * outSize, (first + rows) * row * outSize),
      );
    }
    return { gram, t, out };
  } finally {
    await session.close();
  }
}

function checkGram(c: LowRankCase, gram: Float64Array, label: string): void {
  assertGramClose(gram, referenceGram(c), c.factors.length, units(c), label);
}

/**
 * For adapters whose rank terms cancel κ-fold, the float64 reference itself (d formed from the factors)
 * is only good to ~κ·2^-53 relative: accumulators within 1e-10 of it (κ ≤ 2^16), cosines within 1e-9.
 */
function checkGramCancelling(c: LowRankCase, gram: Float64Array, label: string): void {
  const ref = referenceGram(c);
  const n = c.factors.length;
  const p = gramSize(n);
  for (let u = 0; u < units(c); u++) {
    for (let i = 0; i < n; i++)
      for (let j = i; j < n; j++) {
        const k = u * p + gramIndex(i, j, n);
        const scale = Math.sqrt(ref[u * p + gramIndex(i, i, n)]! * ref[u * p + gramIndex(j, j, n)]!);
        assert.ok(
          Math.abs(gram[k]! - ref[k]!) <= 1e-10 * scale,
          `${label}: unit ${u} G[${i}][${j}] ${gram[k]} vs ${ref[k]}`,
        );
      }
    const a = pairCosines(gram, u * p, n);
    const b = pairCosines(ref, u * p, n);
    a.forEach((x, k) =>
      assert.ok(Math.abs(x - b[k]!) <= 1e-9, `${label}: unit ${u} cosine ${k}: ${x} vs ${b[k]}`),
    );
  }
}

function checkOutput(c: LowRankCase, r: Run, outDtype: FloatDType, label: string): void {
  const actual = decodeFloats(r.out, outDtype) as Float64Array;
  const merged = c.mergedRows * c.cols;
  assertWithinContract(
    actual,
    c.base.subarray(0, merged),
    fineTunes(c),
    r.t,
    c.filterWise ? c.cols : merged,
    outDtype,
    label,
  );
}

/** A random mix of dtypes for factors. */
const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)]!;

const SHAPES: readonly [number, number][] = [
  [1, 1],
  [1, 17],
  [17, 1],
  [7, 5],
  [37, 53],
  [130, 7],
  [33, 300],
  [64, 64],
];

/**
 * Factors whose rank terms cancel κ-fold (B = [X, X], A = [Y; E − Y] with E ≈ Y/κ, so d = s·X·E):
 * float32 accumulation of the rank terms loses ~κ·2^-24 of d — far outside the contract; the Gram
 * identity on the raw factors loses ~κ²·2^-53 (κ = 2^16: cosines off by ~1e-7).
 */
function cancellingFactor(
  rng: Rng,
  rows: number,
  cols: number,
  half: number,
  transposed: boolean,
  kappa: number,
): FactorOptions {
  const y = randomTensor(half * (transposed ? rows : cols), rng, 0.1);
  const e = randomTensor(y.length, rng, 0.1 / kappa);
  const x = randomTensor(half * (transposed ? cols : rows), rng, 0.02);
  const r = 2 * half;
  // A: [r, L] rows Y then E − Y; B: [L', r] columns X then X.
  const a = new Float64Array((r * y.length) / half);
  a.set(y, 0);
  for (let k = 0; k < y.length; k++) a[y.length + k] = e[k]! - y[k]!;
  const lb = x.length / half;
  const b = new Float64Array(lb * r);
  for (let k = 0; k < lb; k++)
    for (let q = 0; q < half; q++) {
      b[k * r + q] = x[q * lb + k]!;
      b[k * r + half + q] = x[q * lb + k]!;
    }
  return { rank: r, transposed, aDtype: 'F64', bDtype: 'F64', scale: 1.5, values: { a, b } };
}

/** The largest contract violation (error ÷ tolerance) of float32 accumulation of the rank terms. */
function float32Violation(c: LowRankCase, t: Float64Array, outDtype: FloatDType): number {
  const n = c.factors.length;
  const models = fineTunes(c);
  let worst = 0;
  for (let k = 0; k < c.mergedRows; k++) {
    const tk = t[c.filterWise ? k : 0]!;
    for (let col = 0; col < c.cols; col++) {
      const e = k * c.cols + col;
      let acc = 0;
      c.factors.forEach((f) => {
        if (f === undefined) return;
        const { a, b, rank, scale, transposed } = f.factor;
        const da = decodeFloats(a, f.factor.aDtype);
        const db = decodeFloats(b, f.factor.bDtype);
        for (let q = 0; q < rank; q++) {
          const u = transposed ? da[q * c.rows + k]! : db[k * rank + q]!;
          const v = transposed ? db[col * rank + q]! : da[q * c.cols + col]!;
          acc = Math.fround(acc + Math.fround(Math.fround((tk / n) * scale * u) * v));
        }
      });
      const got = Math.fround(c.base[e]! + acc);
      let avg = 0;
      for (const m of models) avg += m[e]!;
      avg /= n;
      const w0 = c.base[e]!;
      const ref = w0 + tk * (avg - w0);
      worst = Math.max(worst, Math.abs(got - ref) / contractTolerance(ref, tk, avg, w0, outDtype));
    }
  }
  return worst;
}

/** Outputs per variant with the reference t, for the byte comparisons across variants. */
const fixedOutputs = new Map<string, Map<string, Buffer>>();

describe('backend contract: low-rank (LoRA) task vectors', function () {
  this.timeout(600_000);

  for (const variant of backendVariants()) {
    describe(variant.label, () => {
      let backend: Backend;
      before(() => {
        backend = variant.create();
      });
      after(() => backend.dispose());

      it('the Gram from factors equals the dense Gram: N = 2, 3, 4, zero task vectors, mixed dtypes, ranks 1…64, odd shapes and offsets', async () => {
        const rng = mulberry32(1);
        let cases = 0;
        for (const [rows, cols] of SHAPES) {
          for (const n of [2, 3, 4]) {
            for (const filterWise of [false, true]) {
              for (const layout of ['plain', 'transposed', 'mixed'] as const) {
                const factors: (FactorOptions | undefined)[] = [];
                for (let i = 0; i < n; i++) {
                  // One zero task vector in every N ≥ 3 case, and in one N = 2 layout.
                  if ((n >= 3 && i === 1) || (n === 2 && layout === 'mixed' && i === 0)) {
                    factors.push(undefined);
                    continue;
                  }
                  factors.push({
                    rank: pick(rng, [1, 2, 3, 8, 16, 31, 64]),
                    transposed: layout === 'transposed' || (layout === 'mixed' && i % 2 === 1),
                    aDtype: pick(rng, FLOAT_DTYPES),
                    bDtype: pick(rng, FLOAT_DTYPES),
                    scale: pick(rng, [0.5, 2, 16 / Math.sqrt(8), -1]),
                    shift: i + cases,
                  });
                }
                const c = makeCase(rng, { rows, cols, filterWise, factors });
                const session = backend.openLowRank(specOf(c, 'BF16'));
                try {
                  checkGram(c, await session.gram(), `${variant.label}: ${c.label}`);
                } finally {
                  await session.close();
                }
                cases++;
              }
            }
          }
        }
      });

      it('the Gram of a row range: the first rows of the factors, layer- and filter-wise', async () => {
        const rng = mulberry32(2);
        for (const filterWise of [false, true]) {
          for (const transposed of [false, true]) {
            const c = makeCase(rng, {
              rows: 90,
              cols: 41,
              mergedRows: 77,
              filterWise,
              factors: [
                { rank: 5, transposed },
                { rank: 9, transposed, aDtype: 'BF16' },
              ],
            });
            const r = await run(backend, c, 'F32', { cuts: [30, 31] });
            checkGram(c, r.gram, `${variant.label}: ${c.label} rows 0…76`);
            checkOutput(c, r, 'F32', `${variant.label}: ${c.label} rows 0…76`);
          }
        }
      });

      it('the fused output within the contract: every base × output dtype, layer- and filter-wise, plain and transposed, windows cut at any row', async () => {
        const outputs = new Map<string, Buffer>();
        fixedOutputs.set(variant.label, outputs);
        const rng = mulberry32(3);
        for (const baseDtype of FLOAT_DTYPES) {
          for (const outDtype of FLOAT_DTYPES) {
            for (const filterWise of [false, true]) {
              for (const transposed of [false, true]) {
                const [rows, cols] = pick(rng, [
                  [29, 67],
                  [5, 300],
                  [64, 33],
                  [1, 45],
                ] as const);
                const c = makeCase(rng, {
                  rows,
                  cols,
                  filterWise,
                  baseDtype,
                  shift: rows,
                  factors: [
                    { rank: 16, transposed, aDtype: 'BF16', bDtype: 'BF16', shift: 1 },
                    { rank: 3, transposed, aDtype: 'F32', bDtype: 'F16', scale: 0.7 },
                    undefined,
                  ],
                });
                const label = `${variant.label}: ${c.label} → ${outDtype}`;
                const cuts = [Math.floor(rng() * rows), Math.floor(rng() * rows), 1, rows - 1];
                const r = await run(backend, c, outDtype, { cuts, outShift: cols % 8 });
                checkGram(c, r.gram, label);
                checkOutput(c, r, outDtype, label);
                // The reference t: every thread count (and js vs the scalar kernels) gives the same bytes.
                const refT = ratiosOf(referenceGram(c), 3, units(c));
                const fixed = await run(backend, c, outDtype, { t: refT, cuts: [rows >> 1] });
                outputs.set(label.slice(variant.label.length), Buffer.from(fixed.out));
              }
            }
          }
        }
      });

      it('cancellation-heavy rank terms: within the contract (float32 accumulation would not be)', async () => {
        const rng = mulberry32(4);
        for (const transposed of [false, true]) {
          for (const filterWise of [false, true]) {
            for (const outDtype of ['F32', 'F64'] as const) {
              const rows = 23;
              const cols = 70;
              // A base far smaller than the task vectors: the contract's slack is then ~2^-20·|t·avg|.
              const base = randomTensor(rows * cols, rng, 1e-6);
              const c = makeCase(rng, {
                rows,
                cols,
                filterWise,
                baseDtype: 'F64',
                base,
                factors: [
                  cancellingFactor(rng, rows, cols, 4, transposed, 2 ** 12),
                  cancellingFactor(rng, rows, cols, 8, transposed, 2 ** 16),
                  { rank: 2, transposed, aDtype: 'F64', bDtype: 'F64' },
                ],
              });
              const label = `${variant.label}: cancelling ${c.label} → ${outDtype}`;
              const r = await run(backend, c, outDtype, { cuts: [7] });
              checkGramCancelling(c, r.gram, label);
              checkOutput(c, r, outDtype, label);
              const f32 = float32Violation(c, r.t, outDtype);
              assert.ok(f32 > 4, `${label}: float32 accumulation would be off by only ${f32}× the tolerance`);
            }
          }
        }
      });

      it('NaN and Inf in either factor reach the Gram diagonal of that fine-tune', async () => {
        const rng = mulberry32(5);
        for (const filterWise of [false, true]) {
          for (const transposed of [false, true]) {
            for (const which of ['a', 'b'] as const) {
              for (const [dtype, value] of [
                ['BF16', NaN],
                ['F32', Infinity],
                ['F16', -Infinity],
                ['F64', NaN],
              ] as const) {
                const c = makeCase(rng, {
                  rows: 19,
                  cols: 23,
                  filterWise,
                  factors: [
                    { rank: 4, transposed },
                    { rank: 3, transposed, aDtype: dtype, bDtype: dtype },
                    undefined,
                  ],
                });
                const f = c.factors[1]!.factor;
                const values = decodeFloats(f[which], dtype);
                const at = Math.floor(rng() * values.length);
                values[at] = value;
                const spoiled: LowRankFactor = { ...f, [which]: shifted(encodeFloats(values, dtype), 3) };
                const spec = { ...specOf(c, 'BF16'), factors: [c.factors[0]!.factor, spoiled, undefined] };
                const session = backend.openLowRank(spec);
                const gram = await session.gram();
                await session.close();
                const p = gramSize(3);
                const diag = Array.from({ length: units(c) }, (_, u) => gram[u * p + gramIndex(1, 1, 3)]!);
                const label = `${variant.label}: ${value} in ${which} (${dtype}) ${c.label}`;
                assert.ok(
                  diag.some((g) => !Number.isFinite(g)),
                  `${label}: diagonal ${diag}`,
                );
                for (let u = 0; u < units(c); u++)
                  assert.ok(
                    Number.isFinite(gram[u * p + gramIndex(0, 0, 3)]!),
                    `${label}: input 0 unit ${u}`,
                  );
              }
            }
          }
        }
      });

      it('NaN or Inf in the base rejects the fused output and materializeRows with NON_FINITE (no Gram shows it)', async () => {
        const rng = mulberry32(15);
        for (const [dtype, value] of [
          ['BF16', NaN],
          ['F32', Infinity],
          ['F16', -Infinity],
        ] as const) {
          const c = makeCase(rng, {
            rows: 37,
            cols: 29,
            baseDtype: dtype,
            factors: [{ rank: 3 }, { rank: 2 }],
          });
          const base = decodeFloats(c.baseBytes, dtype);
          const at = 17 * 29 + 5;
          base[at] = value;
          const poisoned = shifted(encodeFloats(base, dtype), 1);
          const session = backend.openLowRank(specOf(c, 'BF16'));
          const t = ratiosOf(await session.gram(), 2, 1);
          const size = floatSize(dtype);
          const row = (first: number, rows: number) =>
            poisoned.subarray(first * 29 * size, (first + rows) * 29 * size);
          const label = `${variant.label}: ${value} in a ${dtype} base`;
          // Rows without it merge; the window holding row 17 fails.
          await session.interpolate(
            { firstRow: 0, rows: 17, base: row(0, 17) },
            t,
            new Uint8Array(17 * 29 * 2),
          );
          await assert.rejects(
            session.interpolate(
              { firstRow: 10, rows: 10, base: row(10, 10) },
              t,
              new Uint8Array(10 * 29 * 2),
            ),
            (e: unknown) => isModelStockError(e) && e.code === 'NON_FINITE',
            label,
          );
          await session.close();
          await assert.rejects(
            backend.materializeRows({
              name: 'w',
              rows: 37,
              cols: 29,
              baseDtype: dtype,
              factor: c.factors[0]!.factor,
              window: { firstRow: 16, rows: 3, base: row(16, 3) },
              out: new Uint8Array(3 * 29 * 8),
            }),
            (e: unknown) => isModelStockError(e) && e.code === 'NON_FINITE',
            `${label} (materializeRows)`,
          );
        }
      });

      it('materializeRows: W0 + s·B·A in float64, whose task vectors give the low-rank cosines within 1e-9', async () => {
        const rng = mulberry32(6);
        for (const transposed of [false, true]) {
          for (const baseDtype of ['BF16', 'F32'] as const) {
            const rows = 41;
            const cols = 37;
            const c = makeCase(rng, {
              rows,
              cols,
              baseDtype,
              filterWise: true,
              factors: [
                { rank: 8, transposed, aDtype: 'BF16', bDtype: 'BF16', shift: 3 },
                { rank: 5, transposed, aDtype: 'F16', bDtype: 'F32', scale: 0.25 },
              ],
            });
            const materialized: Uint8Array[] = [];
            for (const [i, f] of c.factors.entries()) {
              const out = shifted(new Uint8Array(rows * cols * 8), i + 1);
              // In windows, last first.
              for (const [first, count] of [
                [13, rows - 13],
                [0, 13],
              ] as const) {
                await backend.materializeRows({
                  name: c.label,
                  rows,
                  cols,
                  baseDtype,
                  factor: f!.factor,
                  window: {
                    firstRow: first,
                    rows: count,
                    base: c.baseBytes.subarray(
                      first * cols * floatSize(baseDtype),
                      (first + count) * cols * floatSize(baseDtype),
                    ),
                  },
                  out: out.subarray(first * cols * 8, (first + count) * cols * 8),
                });
              }
              // Float64 throughout: within ~2^-52 of |w0| + |s|·‖U_k‖·‖V‖ (a float32 route would be ~2^-24).
              const w = decodeFloats(out, 'F64');
              const { a, b, rank, scale } = f!.factor;
              const da = decodeFloats(a, f!.factor.aDtype);
              const db = decodeFloats(b, f!.factor.bDtype);
              let vNorm = 0;
              for (const x of transposed ? db : da) vNorm += x * x;
              for (let k = 0; k < rows; k++) {
                let uNorm = 0;
                for (let q = 0; q < rank; q++)
                  uNorm += (transposed ? da[q * rows + k]! : db[k * rank + q]!) ** 2;
                const terms = Math.abs(scale) * Math.sqrt(uNorm * vNorm);
                for (let col = 0; col < cols; col++) {
                  const e = k * cols + col;
                  const ref = c.base[e]! + f!.d[e]!;
                  const err = Math.abs(w[e]! - ref);
                  assert.ok(
                    err <= 2 ** -46 * (Math.abs(c.base[e]!) + terms),
                    `${variant.label} ${c.label}: element ${e} ${w[e]} vs ${ref} (off by ${err})`,
                  );
                }
              }
              materialized.push(out);
            }
            // The dense path on the materialized fine-tunes (F64) agrees with the low-rank Gram.
            const spec: TensorSpec = {
              name: c.label,
              dtypes: [baseDtype, 'F64', 'F64'],
              outDtype: baseDtype,
              numel: rows * cols,
              unitLength: cols,
            };
            const dense = backend.openTensor(spec);
            await dense.gram({ firstElement: 0, count: rows * cols, inputs: [c.baseBytes, ...materialized] });
            const denseGram = await dense.gramResult();
            await dense.close();
            const low = backend.openLowRank(specOf(c, baseDtype));
            const lowGram = await low.gram();
            await low.close();
            const label = `${variant.label}: materialized ${c.label}`;
            checkGram(c, denseGram, `${label} (dense path)`);
            checkGram(c, lowGram, `${label} (low rank)`);
          }
        }
      });

      it('rejects malformed specs, windows and jobs with INVALID_ARGUMENT, naming the field', async () => {
        const rng = mulberry32(7);
        const c = makeCase(rng, {
          rows: 6,
          cols: 5,
          filterWise: true,
          factors: [{ rank: 2 }, { rank: 3, transposed: true }],
        });
        const good = specOf(c, 'F32');
        const f0 = good.factors[0]!;
        const invalid = (field: RegExp) => (e: unknown) =>
          isModelStockError(e) && e.code === 'INVALID_ARGUMENT' && field.test(e.message);
        for (const [spec, field] of [
          [{ ...good, rows: 0 }, /spec\.rows/],
          [{ ...good, cols: 2.5 }, /spec\.cols/],
          [{ ...good, baseDtype: 'I32' }, /spec\.baseDtype/],
          [{ ...good, outDtype: 'F8_E4M3' }, /spec\.outDtype/],
          [{ ...good, filterWise: 1 }, /spec\.filterWise/],
          [{ ...good, mergedRows: 7 }, /spec\.mergedRows/],
          [{ ...good, factors: [f0] }, /spec\.factors/],
          [{ ...good, factors: [f0, { ...f0, rank: 0 }] }, /spec\.factors\[1\]\.rank/],
          [{ ...good, factors: [f0, { ...f0, scale: NaN }] }, /spec\.factors\[1\]\.scale/],
          [{ ...good, factors: [f0, { ...f0, transposed: 'yes' }] }, /spec\.factors\[1\]\.transposed/],
          [{ ...good, factors: [f0, { ...f0, aDtype: 'F8_E5M2' }] }, /spec\.factors\[1\]\.aDtype/],
          [{ ...good, factors: [f0, { ...f0, a: f0.a.subarray(1) }] }, /spec\.factors\[1\]\.a\b/],
          [{ ...good, factors: [f0, { ...f0, b: new Float32Array(12) }] }, /spec\.factors\[1\]\.b\b/],
          // A plain factor's shapes do not fit once read as transposed.
          [{ ...good, factors: [f0, { ...f0, transposed: true }] }, /spec\.factors\[1\]\.a\b/],
          [{ ...good, factors: [f0, { ...f0, rank: 100000 }] }, /spec\.factors\[1\]\.rank/],
        ] as [LowRankSpec, RegExp][]) {
          assert.throws(() => backend.openLowRank(spec), invalid(field), field.source);
        }
        const session = backend.openLowRank(good);
        const t = new Float64Array(6);
        const base = (rows: number) => new Uint8Array(rows * 5 * 2);
        const out = (rows: number) => new Uint8Array(rows * 5 * 4);
        for (const [window, field] of [
          [{ firstRow: 4, rows: 3, base: base(3) }, /window/],
          [{ firstRow: -1, rows: 1, base: base(1) }, /window\.firstRow/],
          [{ firstRow: 0, rows: 1.5, base: base(1) }, /window\.rows/],
          [{ firstRow: 0, rows: 2, base: base(3) }, /window\.base/],
          [{ firstRow: 0, rows: 2 }, /window\.base/],
        ] as const) {
          await assert.rejects(session.interpolate(window as never, t, out(2)), invalid(field));
        }
        const w = { firstRow: 1, rows: 2, base: base(2) };
        await assert.rejects(session.interpolate(w, new Float64Array(1), out(2)), invalid(/for t\b/));
        await assert.rejects(session.interpolate(w, t, out(3)), invalid(/for out\b/));
        await session.interpolate(w, t, out(2));
        await session.close();
        await session.close();
        await assert.rejects(session.gram(), invalid(/after close/));
        await assert.rejects(session.interpolate(w, t, out(2)), invalid(/after close/));
        const job = {
          name: 'w',
          rows: 6,
          cols: 5,
          baseDtype: 'BF16' as const,
          factor: f0,
          window: w,
          out: new Uint8Array(2 * 5 * 8),
        };
        await backend.materializeRows(job);
        for (const [bad, field] of [
          [{ ...job, out: new Uint8Array(2 * 5 * 4) }, /job\.out/],
          [{ ...job, factor: { ...f0, rank: 3 } }, /job\.factor\.a/],
          [{ ...job, window: { ...w, firstRow: 5 } }, /job\.window/],
          [{ ...job, cols: 0 }, /job\.cols/],
        ] as const) {
          await assert.rejects(backend.materializeRows(bad as never), invalid(field));
        }
      });

      it('a signal stops a long fused output between blocks: CANCELLED, long before the pass would end', async () => {
        const js = variant.name === 'js';
        const rows = js ? 512 : 4096;
        const cols = 2048;
        const c = makeCase(mulberry32(8), {
          rows,
          cols,
          baseDtype: 'BF16',
          factors: [
            { rank: 32, aDtype: 'BF16', bDtype: 'BF16' },
            { rank: 32, aDtype: 'BF16', bDtype: 'BF16' },
          ],
        });
        const window = { firstRow: 0, rows, base: c.baseBytes };
        const out = new Uint8Array(rows * cols * 2);
        const t = new Float64Array([0.7]);
        const timed = async (b: Backend): Promise<number> => {
          const session = b.openLowRank(specOf(c, 'BF16'));
          try {
            await session.gram(); // packs the factors: the timed part is the output alone
            const started = performance.now();
            await session.interpolate(window, t, out);
            return performance.now() - started;
          } finally {
            await session.close();
          }
        };
        const slow = variant.create({ threads: 1 });
        const whole = await timed(slow);
        await slow.dispose();
        const controller = new AbortController();
        const cancellable = variant.create({ threads: 1, signal: controller.signal });
        const session = cancellable.openLowRank(specOf(c, 'BF16'));
        await session.gram();
        const started = performance.now();
        const pass = session.interpolate(window, t, out);
        queueMicrotask(() => controller.abort(new Error('stop')));
        await assert.rejects(pass, (e: unknown) => isModelStockError(e) && e.code === 'CANCELLED');
        const stopped = performance.now() - started;
        await session.close();
        await cancellable.dispose();
        assert.ok(
          stopped < whole * 0.6,
          `stopped after ${stopped.toFixed(0)} ms of a ${whole.toFixed(0)} ms pass`,
        );
      });

      it('concurrent sessions do not interfere, and the event loop keeps running', async () => {
        const rng = mulberry32(9);
        const a = makeCase(rng, {
          rows: 700,
          cols: 900,
          factors: [{ rank: 16 }, { rank: 16, transposed: false }],
        });
        const b = makeCase(rng, {
          rows: 500,
          cols: 333,
          filterWise: true,
          factors: [{ rank: 8, transposed: true }, undefined, { rank: 4, transposed: true }],
        });
        const soloA = await run(backend, a, 'BF16', { cuts: [100, 350] });
        const soloB = await run(backend, b, 'F32', { cuts: [250] });
        let ticked = false;
        setImmediate(() => (ticked = true));
        const [pa, pb] = await Promise.all([
          run(backend, a, 'BF16', { cuts: [100, 350] }),
          run(backend, b, 'F32', { cuts: [250] }),
        ]);
        assert.ok(ticked, 'the event loop ran while the sessions were in progress');
        assert.deepEqual(pa.gram, soloA.gram);
        assert.ok(Buffer.from(pa.out).equals(Buffer.from(soloA.out)));
        assert.deepEqual(pb.gram, soloB.gram);
        assert.ok(Buffer.from(pb.out).equals(Buffer.from(soloB.out)));
        checkOutput(b, pb, 'F32', `${variant.label}: concurrent ${b.label}`);
      });
    });
  }

  describe('across variants', () => {
    it('with the same t, one thread and all threads of a native ISA give the same bytes, and so do js and the scalar kernels', function () {
      if (!backendsUnderTest().includes('native')) this.skip();
      const byLabel = (label: string) => fixedOutputs.get(label);
      const pairs: [string, string][] = [];
      const labels = [...fixedOutputs.keys()];
      const oneThread = labels.find((l) => l.endsWith(', 1 thread'));
      if (oneThread !== undefined) pairs.push([oneThread, oneThread.replace(', 1 thread', '')]);
      if (labels.includes('native scalar')) pairs.push(['js', 'native scalar']);
      assert.ok(pairs.length >= 2, `variants ran: ${labels.join(', ')}`);
      for (const [x, y] of pairs) {
        const a = byLabel(x)!;
        const b = byLabel(y)!;
        assert.ok(b !== undefined && b.size === a.size, `${y} ran the same cases as ${x}`);
        for (const [key, bytes] of a) assert.ok(bytes.equals(b.get(key)!), `${x} and ${y} differ on${key}`);
      }
    });

    it('the cuda backend runs low-rank steps on the host kernels and says so once', async function () {
      if (!backendsUnderTest().includes('cuda')) this.skip();
      const warnings: string[] = [];
      const cuda = createBackend('cuda', { onWarning: (m) => warnings.push(m) });
      const c = makeCase(mulberry32(10), { rows: 9, cols: 8, factors: [{ rank: 2 }, { rank: 1 }] });
      for (let k = 0; k < 2; k++) {
        const r = await run(cuda, c, 'F32');
        checkOutput(c, r, 'F32', 'cuda');
      }
      await cuda.dispose();
      assert.equal(warnings.length, 1, warnings.join('\n'));
      assert.match(warnings[0]!, /low-rank steps .* run on the CPU's native kernels/);
    });
  });
});
