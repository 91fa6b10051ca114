import type { FloatDType } from '../dtype';

/**
 * The compute seam. A backend runs the two passes of Model Stock over *windows* of tensor bytes; the
 * engine owns I/O, windowing, the plan and the ratio t. Implementations: js (pure TypeScript), native
 * (C++ SIMD addon), cuda. All are async so native work never runs on the event loop.
 *
 * A window is `count` consecutive elements of one tensor, starting at element `firstElement`, given as
 * one byte view per input (base + N fine-tunes), each in its own dtype (mixed dtypes are allowed). A
 * *unit* is `unitLength` consecutive elements: the whole tensor (layer-wise) or one row (filter-wise).
 * A window may start or end inside a unit; accumulators are indexed by the global unit index
 * `floor((firstElement + k) / unitLength)`.
 */
export interface InputWindow {
  /** `count × size(dtype)` bytes. Any byte alignment must be accepted. */
  readonly bytes: Uint8Array;
  readonly dtype: FloatDType;
}

export interface WindowJob {
  readonly base: InputWindow;
  /** The N fine-tunes, N ≥ 2. */
  readonly models: readonly InputWindow[];
  readonly count: number;
  readonly firstElement: number;
  readonly unitLength: number;
}

/**
 * Gram pass: for every unit u touched by the window and every pair i ≤ j (i, j in 0..N−1),
 * `gram[u·P + gramIndex(i, j, N)] += Σ (w_i − w0)·(w_j − w0)` over the window's elements of that unit,
 * accumulated in float64 (or float32 partials over ≤ 64Ki elements added in float64).
 * P = N(N+1)/2. NaN/Inf in inputs must propagate into the diagonal (the engine checks it).
 */
export interface GramJob extends WindowJob {
  readonly gram: Float64Array;
}

/**
 * Interpolation pass: out[k] = encode(w0 + t[u]·(avg − w0)), avg = Σ w_i / N, computed in at least
 * float32 and rounded to `outDtype` with round-to-nearest-even; u the global unit index of element k.
 */
export interface InterpolateJob extends WindowJob {
  readonly t: Float64Array;
  /** `count × size(outDtype)` bytes. */
  readonly out: Uint8Array;
  readonly outDtype: FloatDType;
}

export type BackendName = 'js' | 'native' | 'cuda';

export interface BackendInfo {
  readonly name: BackendName;
  /** e.g. 'avx512', 'avx2', 'scalar', 'js'. */
  readonly isa: string;
  readonly threads: number;
  readonly cudaCompiled: boolean;
  readonly cudaDevice: string | undefined;
}

export interface Backend {
  readonly name: BackendName;
  info(): BackendInfo;
  gram(job: GramJob): Promise<void>;
  interpolate(job: InterpolateJob): Promise<void>;
  dispose(): Promise<void>;
}

/** Packed upper-triangle index of pair (i, j), i ≤ j < n, row-major: (0,0) (0,1) … (0,n−1) (1,1) … */
export function gramIndex(i: number, j: number, n: number): number {
  if (i > j) [i, j] = [j, i];
  return i * n - (i * (i - 1)) / 2 + (j - i);
}
/** P = N(N+1)/2 accumulators per unit. */
export function gramSize(n: number): number {
  return (n * (n + 1)) / 2;
}
