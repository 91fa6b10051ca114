import { floatSize } from '../../dtype';
import { ModelStockError, type ErrorCode } from '../../errors';
import type { Backend, BackendInfo, GramJob, InterpolateJob, WindowJob } from '../backend';
import type { CudaAddon, CudaInfo, CudaTensorSession, CudaTensorSpec } from './addon-types';
import { loadCudaAddon } from './addon';

/**
 * The CUDA backend over the addon's per-tensor sessions, written for the per-tensor backend seam
 * (openTensor → session.gram / interpolate / close, allocHost, capacity) and, until the engine calls
 * that seam, also behind today's window-at-a-time `Backend` interface: each such call runs in a
 * session of its own, so a tensor's inputs cross PCIe twice (once per pass) instead of once.
 */

/** Device memory a session's resident copy may use, and the alignment host buffers get. */
export interface CudaCapacity {
  readonly memory: number;
  readonly alignment: number;
}

/** Page-aligned (cudaHostAlloc), so any element dtype lines up. */
const HOST_ALIGNMENT = 4096;
/** Kept free for the kernels' own buffers (output window, partials) and the CUDA context's needs. */
const DEVICE_RESERVE = 512 << 20;

const CODES: readonly ErrorCode[] = ['BACKEND_UNAVAILABLE', 'CUDA_OUT_OF_MEMORY', 'CUDA_ERROR', 'IO_ERROR'];

/** An addon failure as a ModelStockError with the addon's code (NATIVE_ERROR when it has none). */
function coded(e: unknown, tensor?: string): ModelStockError {
  if (e instanceof ModelStockError) return e;
  const code = (e as { code?: unknown }).code;
  return new ModelStockError(
    CODES.includes(code as ErrorCode) ? (code as ErrorCode) : 'NATIVE_ERROR',
    e instanceof Error ? e.message : String(e),
    { tensor, cause: e },
  );
}

async function call<T>(run: () => Promise<T>, tensor?: string): Promise<T> {
  try {
    return await run();
  } catch (e) {
    throw coded(e, tensor);
  }
}

export interface CudaBackendOptions {
  readonly device?: number;
  /** For tests: the addon to use instead of the loaded one. */
  readonly addon?: CudaAddon;
}

export class CudaBackend implements Backend {
  readonly name = 'cuda' as const;
  private readonly addon: CudaAddon;
  private readonly device: number;
  private readonly cudaInfo: CudaInfo;
  private readonly pinned = new WeakSet<Uint8Array>();

  /** Throws BACKEND_UNAVAILABLE saying why (not compiled in, no driver, no such device). */
  constructor(opts: CudaBackendOptions = {}) {
    let addon = opts.addon;
    if (addon === undefined) {
      const loaded = loadCudaAddon();
      if (loaded.addon === undefined) {
        throw new ModelStockError('BACKEND_UNAVAILABLE', `CUDA backend unavailable: ${loaded.reason}`);
      }
      addon = loaded.addon;
    }
    const device = opts.device ?? 0;
    const info = addon.cudaInfo();
    if (info.reason !== undefined || info.devices[device] === undefined) {
      const why = info.reason ?? `no CUDA device ${device} (${info.devices.length} present)`;
      throw new ModelStockError('BACKEND_UNAVAILABLE', `CUDA backend unavailable: ${why}`);
    }
    this.addon = addon;
    this.device = device;
    this.cudaInfo = info;
  }

  info(): BackendInfo {
    const d = this.cudaInfo.devices[this.device]!;
    return {
      name: 'cuda',
      isa: `cuda sm_${d.computeCapability.replace('.', '')}`,
      threads: 1,
      cudaCompiled: true,
      cudaDevice: `${d.name} (${(d.totalMemory / 2 ** 30).toFixed(0)} GiB, compute ${d.computeCapability})`,
    };
  }

  /** What a resident tensor may take: the device's available memory less a reserve. */
  async capacity(): Promise<CudaCapacity> {
    const m = await call(() => this.addon.cudaMemoryInfo(this.device));
    return { memory: Math.max(0, m.available - DEVICE_RESERVE), alignment: HOST_ALIGNMENT };
  }

  /**
   * Pinned host memory the engine fills; copies from it skip staging. When the system will not pin
   * that much (ggml does the same), ordinary memory instead: correct, only staged and slower.
   */
  allocHost(bytes: number): Uint8Array {
    try {
      const buffer = this.addon.cudaAllocHost(bytes);
      this.pinned.add(buffer);
      return buffer;
    } catch (e) {
      const error = coded(e);
      if (error.code === 'CUDA_OUT_OF_MEMORY') return new Uint8Array(bytes);
      throw error;
    }
  }

  /** Frees a buffer from allocHost now (pinned ones; ordinary ones are left to the GC). */
  freeHost(buffer: Uint8Array): void {
    if (!this.pinned.has(buffer)) return;
    try {
      this.addon.cudaFreeHost(buffer);
      this.pinned.delete(buffer);
    } catch (e) {
      throw coded(e);
    }
  }

  /** A session for one tensor; errors from it are ModelStockErrors naming the tensor. */
  openTensor(spec: CudaTensorSpec): CudaSession {
    try {
      return new CudaSession(this.addon.cudaOpenTensor({ device: this.device, ...spec }), spec.name);
    } catch (e) {
      throw coded(e, spec.name);
    }
  }

  // Today's window-at-a-time interface: a session per call, spanning the tensor up to the window's end.
  async gram(job: GramJob): Promise<void> {
    await this.once(job, job.base.dtype, (s) => s.gram(job));
  }

  async interpolate(job: InterpolateJob): Promise<void> {
    await this.once(job, job.outDtype, (s) => s.interpolate(job));
  }

  async dispose(): Promise<void> {
    // Sessions free their own device memory; the context and pool live as long as the process.
  }

  private async once(
    job: WindowJob,
    outDtype: InterpolateJob['outDtype'],
    run: (s: CudaSession) => Promise<void>,
  ) {
    if (!Number.isSafeInteger(job.count) || !Number.isSafeInteger(job.firstElement)) {
      throw new ModelStockError('NATIVE_ERROR', 'cuda: expected integer count and firstElement');
    }
    const session = this.openTensor({
      count: job.firstElement + job.count,
      unitLength: job.unitLength,
      base: job.base.dtype,
      models: job.models.map((m) => m.dtype),
      outDtype,
    });
    try {
      await run(session);
    } finally {
      await session.close();
    }
  }
}

export class CudaSession {
  constructor(
    private readonly session: CudaTensorSession,
    private readonly tensor: string | undefined,
  ) {}

  gram(job: GramJob): Promise<void> {
    return call(() => this.session.gram(job), this.tensor);
  }

  interpolate(job: InterpolateJob): Promise<void> {
    if (job.out.byteLength !== job.count * floatSize(job.outDtype)) {
      throw new ModelStockError(
        'NATIVE_ERROR',
        `interpolate: job.out has ${job.out.byteLength} bytes but count × size(${job.outDtype}) = ${job.count * floatSize(job.outDtype)}`,
        { tensor: this.tensor },
      );
    }
    return call(() => this.session.interpolate(job), this.tensor);
  }

  close(): Promise<void> {
    return call(() => this.session.close(), this.tensor);
  }

  stats() {
    return this.session.stats();
  }
}
