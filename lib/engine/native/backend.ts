import { ModelStockError } from '../../errors';
import { gramSize } from '../../math/gram';
import {
  cpuDevice,
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
import type { NativeAddon, NativeInput, NativeIsa, NativeWindowJob } from './addon-types';
import { AbortFlag } from '../abort';
import { withTensor } from './errors';
import { loadNativeAddon } from './loader';
import { NativeLowRankSession, materializeRowsNative } from './lowRank';

/**
 * The native backend: native/'s SIMD kernels on the addon's thread pool, behind the seam. Its ISA and
 * thread count belong to this instance (each job carries them), so two merges in one process run and
 * report their own settings.
 */

/** Host buffers: 4 KiB aligned, so O_DIRECT writes and page-granular advice can use them as they are. */
const ALIGNMENT = 4096;

class NativeSession implements TensorSession {
  private readonly gram_: Float64Array;

  constructor(
    readonly spec: TensorSpec,
    private readonly addon: NativeAddon,
    private readonly runtime: { readonly isa: NativeIsa; readonly threads: number; readonly abort?: Int32Array },
  ) {
    this.gram_ = new Float64Array(unitsOf(spec) * gramSize(spec.dtypes.length - 1));
  }

  private job(window: TensorWindow): NativeWindowJob {
    const inputs = (window.inputs as readonly Uint8Array[]).map(
      (bytes, i): NativeInput => ({ bytes, dtype: this.spec.dtypes[i]! }),
    );
    return {
      base: inputs[0]!,
      models: inputs.slice(1),
      count: window.count,
      firstElement: window.firstElement,
      unitLength: this.spec.unitLength,
      ...this.runtime,
    };
  }

  gram(window: TensorWindow): Promise<void> {
    if (window.count === 0) return Promise.resolve();
    return this.named(this.addon.gram({ ...this.job(window), gram: this.gram_ }));
  }

  async gramResult(): Promise<Float64Array> {
    return this.gram_;
  }

  holds(): boolean {
    return false;
  }

  interpolate(window: TensorWindow, t: Float64Array, out: Uint8Array): Promise<void> {
    if (window.count === 0) return Promise.resolve();
    return this.named(
      this.addon.interpolate({ ...this.job(window), t, out, outDtype: this.spec.outDtype }),
    );
  }

  async close(): Promise<void> {
    // The addon holds nothing between jobs.
  }

  private named(p: Promise<void>): Promise<void> {
    return withTensor(this.spec.name, () => p);
  }
}

export class NativeBackend implements Backend {
  readonly name = 'native' as const;
  private readonly addon: NativeAddon;
  private readonly runtime: { readonly isa: NativeIsa; readonly threads: number; readonly abort?: Int32Array };
  private readonly abort: AbortFlag;

  /** `addon` defaults to the one the loader finds; BACKEND_UNAVAILABLE lists why it did not load. */
  constructor(opts: BackendOptions = {}, addon?: NativeAddon) {
    if (addon === undefined) {
      const r = loadNativeAddon();
      if (r.addon === undefined) {
        throw new ModelStockError('BACKEND_UNAVAILABLE', `native backend unavailable: ${r.reasons.join('; ')}`);
      }
      addon = r.addon;
    }
    this.addon = addon;
    const { threads, isa } = opts;
    if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1 && threads <= 1024)) {
      throw new ModelStockError(
        'BAD_CONFIG',
        `Expected an integer from 1 to 1024 for threads but received ${String(threads)}`,
      );
    }
    const info = addon.info();
    const available = info.availableIsas;
    if (isa !== undefined && !available.includes(isa as NativeIsa)) {
      throw new ModelStockError(
        'BAD_CONFIG',
        `Expected one of ${available.join(', ')} (what this CPU runs) for isa but received ${String(isa)}`,
      );
    }
    this.abort = new AbortFlag(opts.signal);
    this.runtime = {
      isa: (isa as NativeIsa | undefined) ?? info.isa,
      threads: threads ?? info.threads,
      ...(this.abort.flag !== undefined ? { abort: this.abort.flag } : {}),
    };
  }

  info(): BackendInfo {
    const { isa, threads } = this.runtime;
    return { name: 'native', isa, threads, device: cpuDevice() };
  }

  capacity(): BackendCapacity {
    return { sessionBytes: Infinity, alignment: ALIGNMENT };
  }

  allocHost(bytes: number): Uint8Array {
    return this.addon.allocHost(bytes, ALIGNMENT);
  }

  freeHost(buffer: Uint8Array): void {
    this.addon.freeHost(buffer);
  }

  openTensor(spec: TensorSpec): TensorSession {
    return new NativeSession(spec, this.addon, this.runtime);
  }

  openLowRank(spec: LowRankSpec): LowRankSession {
    return new NativeLowRankSession(spec, this.addon, this.runtime);
  }

  materializeRows(job: MaterializeJob): Promise<void> {
    return materializeRowsNative(this.addon, job, this.runtime);
  }

  async dispose(): Promise<void> {
    // The pool is shared by every native backend in the process and lives with it.
    this.abort.dispose();
  }
}
