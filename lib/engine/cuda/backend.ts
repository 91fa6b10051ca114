import { ModelStockError, throwIfCancelled, type ErrorCode } from '../../errors';
import { gramSize } from '../../math/gram';
import {
  unitsOf,
  type Backend,
  type BackendCapacity,
  type BackendInfo,
  type BackendOptions,
  type LowRankSession,
  type LowRankSpec,
  type MaterializeJob,
  type TensorSession,
  type TensorSpec,
  type TensorWindow,
} from '../backend';
import { NativeBackend } from '../native/backend';
import { loadNativeAddon } from '../native/loader';
import type { NativeAddon, NativeInput } from '../native/addon-types';
import type { CudaAddon, CudaDeviceInfo, CudaInfo, CudaTensorSession } from './addon-types';
import { loadCudaAddon } from './addon';

/**
 * The CUDA backend: the addon's per-tensor device sessions behind the seam. A session keeps the
 * tensor's inputs on the device from the Gram pass to the interpolation pass when they fit (`holds`),
 * so each input byte crosses PCIe once; host buffers are pinned, so those copies need no staging.
 */

/** cudaHostAlloc memory is page-aligned. */
const ALIGNMENT = 4096;
/**
 * Share of the device's memory one session may plan for. The engine sizes windows from this without
 * asking the device (capacity() is synchronous); the rest is left to the CUDA context, the kernels'
 * output and partial buffers, and other sessions in flight.
 */
const SESSION_SHARE = 0.4;

/** Why CUDA cannot run here, one sentence per cause; empty when device 0 can be used. */
export function cudaUnavailable(): string[] {
  const loaded = loadCudaAddon();
  if (loaded.addon === undefined) return [loaded.reason];
  const info = loaded.addon.cudaInfo();
  if (info.reason !== undefined) return [info.reason];
  return info.devices.length === 0 ? ['no CUDA device'] : [];
}

class CudaSession implements TensorSession {
  private readonly gram_: Float64Array;
  /** Element ranges the Gram pass uploaded while the session was resident. */
  private readonly held: [number, number][] = [];

  constructor(
    readonly spec: TensorSpec,
    private readonly session: CudaTensorSession,
    private readonly signal: AbortSignal | undefined,
  ) {
    this.gram_ = new Float64Array(unitsOf(spec) * gramSize(spec.dtypes.length - 1));
  }

  private inputs(window: TensorWindow): { base: NativeInput; models: NativeInput[] } {
    const inputs = (window.inputs as readonly Uint8Array[]).map((bytes, i): NativeInput => ({
      bytes,
      dtype: this.spec.dtypes[i]!,
    }));
    return { base: inputs[0]!, models: inputs.slice(1) };
  }

  async gram(window: TensorWindow): Promise<void> {
    // A device pass is short (HBM-bound); the signal is checked between them, as the engine does.
    throwIfCancelled(this.signal, `tensor "${this.spec.name}"`);
    if (window.count === 0) return;
    await this.named(
      this.session.gram({
        ...this.inputs(window),
        count: window.count,
        firstElement: window.firstElement,
        unitLength: this.spec.unitLength,
        gram: this.gram_,
      }),
    );
    if (this.session.stats().resident)
      this.held.push([window.firstElement, window.firstElement + window.count]);
  }

  async gramResult(): Promise<Float64Array> {
    return this.gram_;
  }

  holds(firstElement: number, count: number): boolean {
    return this.held.some(([b, e]) => b <= firstElement && firstElement + count <= e);
  }

  async interpolate(window: TensorWindow, t: Float64Array, out: Uint8Array): Promise<void> {
    throwIfCancelled(this.signal, `tensor "${this.spec.name}"`);
    if (window.count === 0) return;
    const job = {
      count: window.count,
      firstElement: window.firstElement,
      unitLength: this.spec.unitLength,
      t,
      out,
      outDtype: this.spec.outDtype,
    };
    await this.named(
      this.session.interpolate(window.inputs === undefined ? job : { ...this.inputs(window), ...job }),
    );
  }

  async close(): Promise<void> {
    await this.named(this.session.close());
  }

  stats() {
    return this.session.stats();
  }

  /** Addon failures as ModelStockErrors naming the tensor. */
  private async named(p: Promise<void>): Promise<void> {
    try {
      await p;
    } catch (e) {
      throw named(e, this.spec.name);
    }
  }
}

const CODES: readonly ErrorCode[] = [
  'BACKEND_UNAVAILABLE',
  'CUDA_OUT_OF_MEMORY',
  'CUDA_ERROR',
  'INVALID_ARGUMENT',
  'IO_ERROR',
];

function named(e: unknown, tensor?: string): ModelStockError {
  if (e instanceof ModelStockError && (e.tensor !== undefined || tensor === undefined)) return e;
  const code = (e as { code?: unknown }).code;
  return new ModelStockError(
    CODES.includes(code as ErrorCode) ? (code as ErrorCode) : 'NATIVE_ERROR',
    e instanceof Error ? e.message : String(e),
    { tensor, cause: e },
  );
}

export class CudaBackend implements Backend {
  readonly name = 'cuda' as const;
  private readonly cuda: CudaAddon;
  private readonly native: NativeAddon;
  private readonly cudaInfo: CudaInfo;
  private readonly device: CudaDeviceInfo;
  private readonly pinned = new WeakSet<Uint8Array>();
  private host: NativeBackend | undefined;

  /** Device 0; BACKEND_UNAVAILABLE saying why (not compiled in, no driver, no device). */
  constructor(private readonly options: BackendOptions = {}) {
    const loaded = loadCudaAddon();
    const native = loadNativeAddon();
    const why = cudaUnavailable();
    if (loaded.addon === undefined || native.addon === undefined || why.length > 0) {
      throw new ModelStockError('BACKEND_UNAVAILABLE', `cuda backend unavailable: ${why.join('; ')}`);
    }
    this.cuda = loaded.addon;
    this.native = native.addon;
    this.cudaInfo = this.cuda.cudaInfo();
    this.device = this.cudaInfo.devices[0]!;
  }

  info(): BackendInfo {
    return {
      name: 'cuda',
      isa: 'cuda',
      threads: 1,
      device: {
        kind: 'cuda',
        name: this.device.name,
        memoryBytes: this.device.totalMemory,
        computeCapability: this.device.computeCapability,
        driverVersion: this.cudaInfo.driverVersion,
        runtimeVersion: this.cudaInfo.runtimeVersion,
      },
    };
  }

  capacity(): BackendCapacity {
    return { sessionBytes: Math.floor(this.device.totalMemory * SESSION_SHARE), alignment: ALIGNMENT };
  }

  /**
   * Pinned memory, so copies to the device skip staging. Where the system will not pin that much
   * (ggml does the same), ordinary aligned memory: correct, only staged and slower.
   */
  allocHost(bytes: number): Uint8Array {
    try {
      const buffer = this.cuda.cudaAllocHost(bytes);
      this.pinned.add(buffer);
      return buffer;
    } catch (e) {
      if ((e as { code?: unknown }).code !== 'CUDA_OUT_OF_MEMORY') throw named(e);
      return this.native.allocHost(bytes, ALIGNMENT);
    }
  }

  freeHost(buffer: Uint8Array): void {
    try {
      if (this.pinned.has(buffer)) {
        this.cuda.cudaFreeHost(buffer);
        this.pinned.delete(buffer);
      } else {
        this.native.freeHost(buffer);
      }
    } catch (e) {
      throw named(e);
    }
  }

  openTensor(spec: TensorSpec): TensorSession {
    try {
      const session = this.cuda.cudaOpenTensor({
        name: spec.name,
        count: spec.numel,
        unitLength: spec.unitLength,
        base: spec.dtypes[0]!,
        models: spec.dtypes.slice(1),
        outDtype: spec.outDtype,
      });
      return new CudaSession(spec, session, this.options.signal);
    } catch (e) {
      throw named(e, spec.name);
    }
  }

  /**
   * The low-rank (LoRA) steps run on the host's native kernels, and the merge hears so once. Why not
   * on the device: the Gram from factors is (R + C)·S² flops on megabytes of factors — less than one
   * kernel launch and copy costs; the fused output reads W0 once and writes once, so on the device it
   * would add a PCIe round trip of both per window, for a rank-S GEMM the host's SIMD kernels already
   * run near memory speed (bench:kernels). Falling back to dense windows instead would read N + 1
   * inputs and materialize every fine-tune. A device kernel is future work; measured nowhere yet.
   */
  private hostBackend(): NativeBackend {
    if (this.host === undefined) {
      this.host = new NativeBackend(
        { threads: this.options.threads, signal: this.options.signal },
        this.native,
      );
      const { isa, threads } = this.host.info();
      this.options.onWarning?.(
        `cuda backend: LoRA low-rank steps (the Gram from the adapters' factors and the merged output of ` +
          `adapted tensors) run on the CPU's native kernels (${isa}, ${threads} threads), not on the device`,
      );
    }
    return this.host;
  }

  openLowRank(spec: LowRankSpec): LowRankSession {
    return this.hostBackend().openLowRank(spec);
  }

  materializeRows(job: MaterializeJob): Promise<void> {
    return this.hostBackend().materializeRows(job);
  }

  async dispose(): Promise<void> {
    // Sessions free their device memory when closed; the context and memory pool live with the process.
    await this.host?.dispose();
  }
}
