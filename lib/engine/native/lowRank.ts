import { gramSize } from '../../math/gram';
import {
  lowRankUnits,
  type LowRankFactor,
  type LowRankSession,
  type LowRankSpec,
  type MaterializeJob,
  type RowWindow,
} from '../backend';
import type { NativeAddon, NativeLowRankPacked, NativeRuntime } from './addon-types';
import { withTensor } from './errors';

/**
 * The native backend's low-rank steps: the factors packed once per session into Float64Arrays the
 * session owns (native/lowrank.h's layout), then the Gram and the fused output on the addon's pool.
 */

/** Rows and columns are packed in panels of this many (native/lowrank.h kPanel). */
const PANEL = 16;
const panels = (n: number): number => Math.ceil(n / PANEL);

/** Packs `factors` (U for rows [uFirstRow, uFirstRow + uRows)) off the event loop. */
async function pack(
  addon: NativeAddon,
  factors: readonly (LowRankFactor | undefined)[],
  rows: number,
  cols: number,
  uFirstRow: number,
  uRows: number,
  runtime: NativeRuntime,
): Promise<NativeLowRankPacked> {
  const ranks = factors.map((f) => f?.rank ?? 0);
  const S = ranks.reduce((a, b) => a + b, 0);
  const packed = {
    cols,
    uRows,
    ranks,
    u: new Float64Array(panels(uRows) * S * PANEL),
    v: new Float64Array(panels(cols) * S * PANEL),
  };
  await addon.lowRankPack({
    ...runtime,
    rows,
    cols,
    uFirstRow,
    uRows,
    u: packed.u,
    v: packed.v,
    factors: factors.map((f) =>
      f === undefined
        ? null
        : {
            a: { bytes: f.a, dtype: f.aDtype },
            b: { bytes: f.b, dtype: f.bDtype },
            rank: f.rank,
            transposed: f.transposed,
          },
    ),
  });
  return packed;
}

export class NativeLowRankSession implements LowRankSession {
  private packed: Promise<NativeLowRankPacked> | undefined;
  private readonly scales: Float64Array;

  constructor(
    readonly spec: LowRankSpec,
    private readonly addon: NativeAddon,
    private readonly runtime: NativeRuntime,
  ) {
    this.scales = Float64Array.from(spec.factors, (f) => f?.scale ?? 0);
  }

  private factors(): Promise<NativeLowRankPacked> {
    const { factors, rows, cols, mergedRows } = this.spec;
    this.packed ??= pack(this.addon, factors, rows, cols, 0, mergedRows ?? rows, this.runtime);
    return this.packed;
  }

  gram(): Promise<Float64Array> {
    return withTensor(this.spec.name, async () => {
      const packed = await this.factors();
      const gram = new Float64Array(lowRankUnits(this.spec) * gramSize(this.spec.factors.length));
      await this.addon.lowRankGram({
        ...packed,
        ...this.runtime,
        scales: this.scales,
        filterWise: this.spec.filterWise,
        gram,
      });
      return gram;
    });
  }

  interpolate(window: RowWindow, t: Float64Array, out: Uint8Array): Promise<void> {
    return withTensor(this.spec.name, async () => {
      const packed = await this.factors();
      const n = this.spec.factors.length;
      const coef = new Float64Array(window.rows * n);
      for (let k = 0; k < window.rows; k++) {
        const tk = t[this.spec.filterWise ? window.firstRow + k : 0]!;
        for (let i = 0; i < n; i++) coef[k * n + i] = (tk / n) * this.scales[i]!;
      }
      if (window.rows === 0) return;
      await this.addon.lowRankInterpolate({
        ...packed,
        ...this.runtime,
        coef,
        firstRow: window.firstRow,
        rows: window.rows,
        base: { bytes: window.base, dtype: this.spec.baseDtype },
        out,
        outDtype: this.spec.outDtype,
      });
    });
  }

  async close(): Promise<void> {
    this.packed = undefined;
  }
}

/** W0 + s·B·A for the job's rows as float64: the one factor packed for those rows, then the fused kernel. */
export function materializeRowsNative(addon: NativeAddon, job: MaterializeJob, runtime: NativeRuntime): Promise<void> {
  return withTensor(job.name, async () => {
    const { factor, window } = job;
    if (window.rows === 0) return;
    const packed = await pack(addon, [factor], job.rows, job.cols, window.firstRow, window.rows, runtime);
    await addon.lowRankInterpolate({
      ...packed,
      ...runtime,
      coef: new Float64Array(window.rows).fill(factor.scale),
      firstRow: 0,
      rows: window.rows,
      base: { bytes: window.base, dtype: job.baseDtype },
      out: job.out,
      outDtype: 'F64',
    });
  });
}
