import * as os from 'node:os';
import type { FloatDType } from '../dtype';

/**
 * The compute seam, shaped after ggml's backend interface: the engine owns I/O, windowing, the plan
 * and the ratio t; a backend owns the arithmetic and whatever memory it needs for it.
 *
 * Per merged tensor the engine opens one *session*: the Gram pass over the tensor's windows, then
 * (after the engine turned the Gram matrix into t) the interpolation pass over the same windows. A
 * session may keep inputs between the two passes (a device keeps them on the device: each input byte
 * crosses the bus once) and says so with `holds`. Backends allocate the host buffers the engine reads
 * into (aligned here, pinned for a device) and report what they can hold, so the engine's choice between
 * one whole-tensor window and several windows fits the backend.
 *
 * Implementations (js, native, cuda) never see unchecked input: the registry hands out backends wrapped
 * by checked.ts, which validates every spec and window once, for all of them, and fails with the same
 * ModelStockError codes whatever the backend.
 */

/** One merged tensor (or the merged row range of one: see `numel`). */
export interface TensorSpec {
  /** The tensor's name, for messages. */
  readonly name: string;
  /** dtypes of the base and the N ≥ 2 fine-tunes, in that order (mixed dtypes are allowed). */
  readonly dtypes: readonly FloatDType[];
  readonly outDtype: FloatDType;
  /**
   * Elements merged, counted from the tensor's first element: the whole tensor, or its first rows (a
   * row range — fine-tunes that added tokens merge only the rows every input has).
   */
  readonly numel: number;
  /**
   * Elements per unit: numel (layer-wise, one ratio) or one row (filter-wise, one ratio per row). Every
   * unit is whole: unitLength divides numel.
   */
  readonly unitLength: number;
}

/** `count` consecutive elements of the spec's range, starting at element `firstElement`. */
export interface TensorWindow {
  readonly firstElement: number;
  readonly count: number;
  /**
   * The base's and the N fine-tunes' bytes for those elements (count × size(dtype) each, any byte
   * alignment). In `interpolate` they may be omitted when `session.holds(firstElement, count)`.
   */
  readonly inputs?: readonly Uint8Array[];
}

export interface TensorSession {
  readonly spec: TensorSpec;
  /**
   * Gram pass over one window: for every unit u it touches and every pair i ≤ j of fine-tunes,
   * accumulates Σ (w_i − w0)·(w_j − w0) over the window's elements of u, in float64 (or float32
   * partials over ≤ 64Ki elements added in float64). NaN/Inf in an input must reach the diagonal (the
   * engine looks there). The windows of one pass never overlap; calls are awaited one at a time.
   */
  gram(window: TensorWindow): Promise<void>;
  /** After the last gram(): units × P accumulators packed by gramIndex (lib/math/gram.ts). */
  gramResult(): Promise<Float64Array>;
  /** True when the session still has the inputs of exactly this window from the Gram pass. */
  holds(firstElement: number, count: number): boolean;
  /**
   * Interpolation pass over one window: out[k] = encode(w0 + t[u]·(avg − w0)), avg = Σ w_i / N, computed
   * in at least float32 and rounded to `outDtype` with round-to-nearest-even; u is the unit of element
   * firstElement + k, and `t` has one ratio per unit of the spec. `out` is count × size(outDtype) bytes.
   */
  interpolate(window: TensorWindow, t: Float64Array, out: Uint8Array): Promise<void>;
  /** Frees what the session holds. Called once the tensor is done or failed; safe to call twice. */
  close(): Promise<void>;
}

/**
 * Low-rank task vectors (LoRA adapters). A stored tensor W of shape [R, C] (`[shape[0], rest]`) gets,
 * from fine-tune i, the task vector d_i = s_i·B_i·A_i (plain: a Linear layer, B [R, r], A [r, C]) or
 * d_i = s_i·(B_i·A_i)ᵀ (transposed: a Conv1D layer stored [in, out], fan_in_fan_out: B [C, r],
 * A [r, R]), or none (zero: an adapter that does not target W). A low-rank session computes what Model
 * Stock needs from the factors alone — the Gram matrix exactly, in float64, from r × r products
 * (⟨d_i, d_j⟩ = s_i s_j Σ (B_iᵀB_j) ⊙ (A_i A_jᵀ); filter-wise, per stored row k,
 * s_i s_j B_i[k,:](A_i A_jᵀ)B_j[k,:]ᵀ, transposed s_i s_j A_i[:,k]ᵀ(B_iᵀB_j)A_j[:,k]), evaluated on
 * factors rewritten with orthonormal rows along the stored rows (A; Bᵀ when transposed), so that rank
 * terms cancelling each other cost no more accuracy than in a dense Gram (lib/math/lowRank.ts) — and the
 * merged rows W0 + (t/N)·Σ d_i in one fused pass that reads W0 once. No R × C product is ever formed.
 */
export interface LowRankFactor {
  /** lora_A: [rank, C] (plain) or [rank, R] (transposed), row-major, `aDtype` elements, any byte alignment. */
  readonly a: Uint8Array;
  readonly aDtype: FloatDType;
  /** lora_B: [R, rank] (plain) or [C, rank] (transposed). */
  readonly b: Uint8Array;
  readonly bDtype: FloatDType;
  /** r ≥ 1. */
  readonly rank: number;
  /** s: the task vector is s·B·A (LoRA's lora_alpha / r, or / √r with rsLoRA). Finite. */
  readonly scale: number;
  /** fan_in_fan_out: the tensor is stored [in, out] and its task vector is s·(B·A)ᵀ. */
  readonly transposed: boolean;
}

/** One merged tensor whose every fine-tune is low-rank or zero. */
export interface LowRankSpec {
  /** The tensor's name, for messages. */
  readonly name: string;
  /** The stored tensor seen as [rows, cols] = [shape[0], rest] (R and C above). */
  readonly rows: number;
  readonly cols: number;
  readonly baseDtype: FloatDType;
  readonly outDtype: FloatDType;
  /** One unit (and ratio) per stored row, else one for the whole merged range. */
  readonly filterWise: boolean;
  /** Rows merged, counted from row 0 (default: every row); windows lie inside them. */
  readonly mergedRows?: number;
  /**
   * The N ≥ 2 fine-tunes' task vectors: factors, or undefined for a zero task vector. The factor bytes
   * are read by the session's first step (gram or interpolate) and not after it settled.
   */
  readonly factors: readonly (LowRankFactor | undefined)[];
}

/** Rows [firstRow, firstRow + rows) of a stored [R, C] tensor. */
export interface RowWindow {
  readonly firstRow: number;
  readonly rows: number;
  /** The base's bytes of those rows: rows × C × size(baseDtype), any byte alignment. */
  readonly base: Uint8Array;
}

export interface LowRankSession {
  readonly spec: LowRankSpec;
  /**
   * The Gram matrix of the whole merged range from the factors, in float64: units × P accumulators
   * packed by gramIndex (units = mergedRows filter-wise, else 1). Reads no base weights. NaN/Inf in a
   * factor reaches the diagonal of that fine-tune (in the units it touches).
   */
  gram(): Promise<Float64Array>;
  /**
   * The merged rows of one window: out[k, c] = encode(w0[k, c] + (t[u]/N)·Σ_i d_i[k, c]), u the unit of
   * row k, accumulated in float64 and rounded once to `outDtype` (round-to-nearest-even). `t` has one
   * ratio per unit; `out` is rows × C × size(outDtype) bytes. Windows may be given in any order. A NaN
   * or ±Inf in the window's base rejects with NON_FINITE (the Gram from factors never sees the base).
   */
  interpolate(window: RowWindow, t: Float64Array, out: Uint8Array): Promise<void>;
  /** Frees what the session holds; safe to call twice. */
  close(): Promise<void>;
}

/**
 * W0 + s·B·A (or its transpose) for a window of rows, as float64: the fine-tune of one adapter, for
 * tensors that mix low-rank and dense fine-tunes (they then take the dense path with F64 inputs). In
 * float64, d = w − w0 comes back within ~2^-52·(|w0| + |s|·‖B[k,:]‖·‖A‖) of s·B·A, which keeps cosines
 * within the contract's 1e-9; a materialization in the base's dtype or in float32 would not.
 */
export interface MaterializeJob {
  /** The tensor's name, for messages. */
  readonly name: string;
  readonly rows: number;
  readonly cols: number;
  readonly baseDtype: FloatDType;
  readonly factor: LowRankFactor;
  readonly window: RowWindow;
  /** window.rows × C float64 values (8 bytes each), any byte alignment. */
  readonly out: Uint8Array;
}

export type BackendName = 'js' | 'native' | 'cuda';

/** What a backend computes on. */
export interface DeviceInfo {
  readonly kind: 'cpu' | 'cuda';
  /** e.g. the CPU model, or 'NVIDIA H100 80GB HBM3'. */
  readonly name: string;
  /** Device memory in bytes (devices only). */
  readonly memoryBytes?: number;
  /** e.g. '9.0' (CUDA only). */
  readonly computeCapability?: string;
  readonly driverVersion?: string;
  readonly runtimeVersion?: string;
}

export interface BackendInfo {
  readonly name: BackendName;
  /** The instruction set the kernels run on: 'avx512', 'avx2', 'scalar', 'js', 'cuda'. */
  readonly isa: string;
  /** Host threads this backend's passes use. */
  readonly threads: number;
  readonly device: DeviceInfo;
}

export interface BackendCapacity {
  /**
   * The largest session, in bytes of its inputs and output together, the backend can hold at once; a
   * larger tensor is given to it in windows. Infinity for host backends (the engine's memory budget
   * bounds them).
   */
  readonly sessionBytes: number;
  /** Byte alignment of allocHost buffers. */
  readonly alignment: number;
}

/** What one backend instance is created with: settings of one merge, never of the process. */
export interface BackendOptions {
  /** Host threads (default: all cores). */
  readonly threads?: number;
  /** Force an instruction set (native: 'avx512' | 'avx2' | 'scalar'; tests and benchmarks). */
  readonly isa?: string;
  /**
   * The merge's cancellation: once it fires, passes stop between blocks (native) or chunks (js) and
   * reject with ModelStockError code CANCELLED.
   */
  readonly signal?: AbortSignal;
  /** Where a backend says something the merge should report once (e.g. a step it runs elsewhere). */
  readonly onWarning?: (message: string) => void;
}

export interface Backend {
  readonly name: BackendName;
  info(): BackendInfo;
  capacity(): BackendCapacity;
  /** `bytes` of host memory for the engine to fill, aligned to capacity().alignment. */
  allocHost(bytes: number): Uint8Array;
  /** Returns memory from allocHost now (its views become empty); optional to call. */
  freeHost(buffer: Uint8Array): void;
  openTensor(spec: TensorSpec): TensorSession;
  /** A session for a tensor whose fine-tunes are all low-rank (or zero). */
  openLowRank(spec: LowRankSpec): LowRankSession;
  /** Fills `job.out` with W0 + s·B·A for the job's rows, in float64 (NON_FINITE for a NaN or Inf in W0). */
  materializeRows(job: MaterializeJob): Promise<void>;
  /** Frees everything the backend holds; it is not used afterwards. */
  dispose(): Promise<void>;
}

/** Units of a spec: numel / unitLength (0 for an empty range). */
export function unitsOf(spec: Pick<TensorSpec, 'numel' | 'unitLength'>): number {
  return spec.numel === 0 ? 0 : spec.numel / spec.unitLength;
}

/** Units of a low-rank spec: mergedRows filter-wise, else 1. */
export function lowRankUnits(spec: Pick<LowRankSpec, 'rows' | 'mergedRows' | 'filterWise'>): number {
  return spec.filterWise ? (spec.mergedRows ?? spec.rows) : 1;
}

/** The host CPU, as every CPU backend reports it. */
export function cpuDevice(): DeviceInfo {
  return { kind: 'cpu', name: os.cpus()[0]?.model.trim() ?? os.arch() };
}
