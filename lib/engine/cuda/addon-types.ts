import type { FloatDType } from '../../dtype';
import type { NativeGramJob, NativeInterpolateJob } from '../native/addon-types';

/**
 * The CUDA exports of `model_stock.node` (native/cuda/exports.cc, native/cuda/emulate.cc), typed.
 * Every build has them: without CUDA compiled in, `cudaInfo()` says why and the others throw
 * BACKEND_UNAVAILABLE. Nothing outside lib/engine/cuda touches them untyped.
 *
 * Errors: a thrown Error or rejected Promise with a `code`: 'BACKEND_UNAVAILABLE' (not compiled in,
 * no driver, no such device), 'CUDA_OUT_OF_MEMORY' (the message names the tensor, what needed the
 * memory, and the device's free and total memory), 'CUDA_ERROR' (any other CUDA failure, its CUDA
 * name included), 'INVALID_ARGUMENT' (arguments failing the native re-check, a closed session),
 * 'NATIVE_ERROR' (anything else).
 */
export interface CudaAddon {
  /** Compiled in?, runtime and driver versions, devices. Creates no CUDA context: cheap. */
  cudaInfo(): CudaInfo;
  /** Memory a new allocation on `device` (default 0) can get; creates its context off the event loop. */
  cudaMemoryInfo(device?: number): Promise<CudaMemoryInfo>;
  /**
   * `bytes` (1 … 2^32 − 1) of pinned (page-locked) host memory: copies between it and the device run
   * at full PCIe speed without staging. Freed by `cudaFreeHost` or, failing that, when collected.
   */
  cudaAllocHost(bytes: number): Uint8Array;
  /**
   * Frees now and detaches the buffer (every view then has length 0). Throws NATIVE_ERROR when a
   * session call using it is pending, or when it is not a live `cudaAllocHost` buffer.
   */
  cudaFreeHost(buffer: Uint8Array): void;
  /** A session for one tensor; touches no device until its first call. */
  cudaOpenTensor(spec: CudaTensorSpec): CudaTensorSession;

  /**
   * The CUDA kernels' arithmetic run on the CPU, in the kernels' order: a GPU must match these bit
   * for bit. Test hooks; same job contract as the native `gram` / `interpolate`.
   */
  cudaEmulateGram(job: NativeGramJob): Promise<void>;
  cudaEmulateInterpolate(job: NativeInterpolateJob): Promise<void>;
  /** native/cuda/codec.h against native/convert.h on the CPU; synchronous (~0.1 s), a test hook. */
  cudaCodecSelfTest(): { readonly checked: number; readonly mismatches: readonly string[] };
}

export interface CudaInfo {
  readonly compiled: boolean;
  /** Why no device can be used ('not compiled in …', 'no CUDA device: …'); absent when one can. */
  readonly reason?: string;
  /** e.g. '13.0' (compiled in only). */
  readonly runtimeVersion?: string;
  /** The installed driver's CUDA version, e.g. '12.8'; absent without a driver. */
  readonly driverVersion?: string;
  readonly devices: readonly CudaDeviceInfo[];
}

export interface CudaDeviceInfo {
  readonly index: number;
  readonly name: string;
  readonly totalMemory: number;
  /** e.g. '9.0' */
  readonly computeCapability: string;
  readonly multiprocessors: number;
  readonly pciBusId: string;
}

export interface CudaMemoryInfo {
  /** Free device memory plus what the addon's memory pool holds unused. */
  readonly available: number;
  readonly total: number;
}

export interface CudaTensorSpec {
  /** Named in errors. */
  readonly name?: string;
  /** Elements of the whole tensor. */
  readonly count: number;
  readonly unitLength: number;
  readonly base: FloatDType;
  /** 2 … 64 fine-tunes. */
  readonly models: readonly FloatDType[];
  readonly outDtype: FloatDType;
  readonly device?: number;
  /** Device bytes the resident copy of the inputs may take (default: what the device has free). */
  readonly budgetBytes?: number;
}

/**
 * One tensor on the device. On its first call it decides whether the whole tensor's inputs fit the
 * budget; if so every window the Gram pass uploads stays resident and the interpolation pass reads it
 * from there (each input byte crosses PCIe once). Calls of one session run one at a time; sessions
 * overlap on separate streams. A window's input bytes must not change between the two passes.
 */
export interface CudaTensorSession {
  /** The native gram job's contract; the window must lie inside the tensor and match the spec. */
  gram(job: NativeGramJob): Promise<void>;
  /**
   * The native interpolate job's contract; inputs already resident are not uploaded again. With
   * `base` and `models` left out, the resident copy must hold the window (else INVALID_ARGUMENT).
   */
  interpolate(job: NativeInterpolateJob | CudaHeldInterpolateJob): Promise<void>;
  /** Frees the device memory after pending calls; later calls reject. Idempotent. */
  close(): Promise<void>;
  stats(): CudaSessionStats;
}

export interface CudaSessionStats {
  readonly decided: boolean;
  readonly resident: boolean;
  readonly residentBytes: number;
  /** Host → device bytes of the inputs alone: their total once, when resident. */
  readonly uploadedInputBytes: number;
  readonly uploadedBytes: number;
  readonly downloadedBytes: number;
  /** GPU time in the kernels alone (CUDA events), summed over calls. */
  readonly gramKernelMs: number;
  readonly interpolateKernelMs: number;
}

/** An interpolation over inputs the session holds on the device from its Gram pass. */
export interface CudaHeldInterpolateJob {
  readonly count: number;
  readonly firstElement: number;
  readonly unitLength: number;
  readonly t: Float64Array;
  readonly out: Uint8Array;
  readonly outDtype: FloatDType;
}
