import { strict as assert } from 'node:assert';
import type {
  NativeAddon,
  NativeLowRankGramJob,
  NativeLowRankInterpolateJob,
  NativeLowRankPackJob,
} from '../../../lib/engine/native/addon-types';
import { ModelStockError } from '../../../lib/errors';
import { addonOrSkip } from '../../helpers/addon';

/**
 * The addon's last-line checks on the low-rank jobs (native/lowrank_job.cc): JS validates first
 * (lib/engine/checked.ts); a job that reaches the addon malformed anyway is a ModelStockError with code
 * INVALID_ARGUMENT naming the field, never a crash or an out-of-bounds read.
 */

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

// A [6, 5] tensor, two fine-tunes of ranks 2 (plain) and 3 (transposed): S = 5, one panel each way.
const ROWS = 6;
const COLS = 5;
const S = 5;

function packJob(): Mutable<NativeLowRankPackJob> {
  return {
    rows: ROWS,
    cols: COLS,
    uFirstRow: 0,
    uRows: ROWS,
    factors: [
      { a: { bytes: new Uint8Array(2 * COLS * 2), dtype: 'BF16' }, b: { bytes: new Uint8Array(ROWS * 2 * 4), dtype: 'F32' }, rank: 2, transposed: false },
      { a: { bytes: new Uint8Array(3 * ROWS * 8), dtype: 'F64' }, b: { bytes: new Uint8Array(COLS * 3 * 2), dtype: 'F16' }, rank: 3, transposed: true },
    ],
    u: new Float64Array(S * 16),
    v: new Float64Array(S * 16),
  };
}

function gramJob(): Mutable<NativeLowRankGramJob> {
  return {
    cols: COLS,
    uRows: ROWS,
    ranks: [2, 3],
    u: new Float64Array(S * 16),
    v: new Float64Array(S * 16),
    scales: new Float64Array([1, 2]),
    filterWise: true,
    gram: new Float64Array(ROWS * 3),
  };
}

function outputJob(): Mutable<NativeLowRankInterpolateJob> {
  return {
    cols: COLS,
    uRows: ROWS,
    ranks: [2, 3],
    u: new Float64Array(S * 16),
    v: new Float64Array(S * 16),
    coef: new Float64Array(4 * 2),
    firstRow: 2,
    rows: 4,
    base: { bytes: new Uint8Array(4 * COLS * 2), dtype: 'BF16' },
    out: new Uint8Array(4 * COLS * 4),
    outDtype: 'F32',
  };
}

type Step = 'lowRankPack' | 'lowRankGram' | 'lowRankInterpolate';
const BAD: [Step, string, (j: Record<string, unknown>) => void, RegExp][] = [
  ['lowRankPack', 'rows 0', (j) => (j.rows = 0), /job\.rows/],
  ['lowRankPack', 'cols past 2^40', (j) => (j.cols = 2 ** 41), /job\.cols/],
  ['lowRankPack', 'U rows past the tensor', (j) => (j.uFirstRow = 1), /job\.uFirstRow \+ job\.uRows/],
  ['lowRankPack', 'no factors', (j) => (j.factors = []), /job\.factors/],
  ['lowRankPack', 'a rank of 0', (j) => (j.factors = [{ ...(j.factors as object[])[0], rank: 0 }]), /job\.factors\[0\]\.rank/],
  ['lowRankPack', 'A of the wrong size', (j) => ((j.factors as { a: unknown }[])[0]!.a = { bytes: new Uint8Array(3), dtype: 'BF16' }), /job\.factors\[0\]\.a\.bytes/],
  ['lowRankPack', 'transposed not a boolean', (j) => ((j.factors as { transposed: unknown }[])[1]!.transposed = 1), /job\.factors\[1\]\.transposed/],
  ['lowRankPack', 'u too short', (j) => (j.u = new Float64Array(S * 16 - 1)), /job\.u\b/],
  ['lowRankGram', 'a negative rank', (j) => (j.ranks = [2, -3]), /job\.ranks\[1\]/],
  ['lowRankGram', 'ranks past the limit', (j) => (j.ranks = [40000, 40000]), /job\.ranks/],
  ['lowRankGram', 'v too short', (j) => (j.v = new Float64Array(10)), /job\.v\b/],
  ['lowRankGram', 'one scale for two fine-tunes', (j) => (j.scales = new Float64Array(1)), /job\.scales/],
  ['lowRankGram', 'filterWise missing', (j) => delete j.filterWise, /job\.filterWise/],
  ['lowRankGram', 'gram too short', (j) => (j.gram = new Float64Array(ROWS * 3 - 1)), /job\.gram/],
  ['lowRankInterpolate', 'a window past U', (j) => (j.rows = 5), /job\.firstRow \+ job\.rows/],
  ['lowRankInterpolate', 'too few coefficients', (j) => (j.coef = new Float64Array(7)), /job\.coef/],
  ['lowRankInterpolate', 'base of the wrong size', (j) => (j.base = { bytes: new Uint8Array(3), dtype: 'BF16' }), /job\.base\.bytes/],
  ['lowRankInterpolate', 'out of the wrong size', (j) => (j.out = new Uint8Array(4 * COLS * 2)), /job\.out/],
  ['lowRankInterpolate', 'an unknown out dtype', (j) => (j.outDtype = 'F8_E4M3'), /job\.outDtype/],
  ['lowRankInterpolate', 'an unknown isa', (j) => (j.isa = 'sse9'), /job\.isa/],
];

describe('native argument checks: low-rank jobs', function () {
  let addon: NativeAddon;
  before(function () {
    addon = addonOrSkip(this);
  });

  const good = (step: Step): Record<string, unknown> =>
    step === 'lowRankPack' ? packJob() : step === 'lowRankGram' ? gramJob() : outputJob();
  const call = (step: Step, job: Record<string, unknown>): Promise<void> =>
    (addon[step] as (j: unknown) => Promise<void>)(job);

  it('good jobs pass, on every ISA', async () => {
    for (const isa of addon.info().availableIsas) {
      for (const step of ['lowRankPack', 'lowRankGram', 'lowRankInterpolate'] as const)
        await call(step, { ...good(step), isa, threads: 2 });
    }
  });

  for (const [step, what, mutate, field] of BAD) {
    it(`${step} rejects ${what}: INVALID_ARGUMENT naming the field`, async () => {
      const job = good(step);
      mutate(job);
      await assert.rejects(call(step, job), (e: unknown) => {
        assert.ok(e instanceof ModelStockError, `${what}: not a ModelStockError: ${String(e)}`);
        assert.equal(e.code, 'INVALID_ARGUMENT');
        assert.match(e.message, field);
        return true;
      });
    });
  }
});
