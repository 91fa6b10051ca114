import type { GramJob, InterpolateJob } from './backend';

/**
 * Everything `model_stock.node` exports, typed (native/addon.cc registers them; each lives in the
 * file named). Nothing outside lib/engine/native.ts touches the addon untyped.
 *
 * Errors: a rejected Promise or a thrown Error whose `code` is 'NATIVE_ERROR' (bad arguments, a kernel
 * failure) or 'IO_ERROR' (a failed or short read), with a message naming the field or file.
 */
export interface NativeAddon {
  /**
   * The Gram pass of GramJob (backend.ts) on the addon's thread pool, off the event loop. Reads
   * exactly the job's fields; holds every typed array until the Promise settles. native/workers.cc
   */
  gram(job: GramJob): Promise<void>;
  /** The interpolation pass of InterpolateJob, same contract. native/workers.cc */
  interpolate(job: InterpolateJob): Promise<void>;

  /** What the kernels run on now. native/runtime.cc */
  info(): NativeInfo;
  /** Forces an ISA for the whole process; throws (code NATIVE_ERROR) naming what this CPU lacks. */
  setIsa(isa: NativeIsa): void;
  /** Total parallelism of one pass, the calling thread included; 0 = all cores. Process-wide. */
  setThreads(threads: number): void;

  /**
   * Reads exactly `target.byteLength` bytes of `fd` from `position`, split into chunks read in
   * parallel over the pool. Rejects with code IO_ERROR on a failed or short read (EOF). native/io.cc
   */
  preadInto(fd: number, position: number, target: Uint8Array): Promise<void>;
  /** Maps a whole file read-only. The mapping lives until `unmap` and every view is collected. */
  mapFile(path: string): NativeMapping;
  /**
   * A zero-copy view of bytes [offset, offset + length) of the mapping (length < 4 GiB: Node 20 aborts
   * on a larger external buffer), advised sequential + will-need. The view keeps the mapping alive.
   */
  mapView(mapping: NativeMapping, offset: number, length: number): Uint8Array;
  /**
   * Drops the pages of [offset, offset + length) from this process (madvise DONTNEED): mapped pages
   * count in RSS. Views stay valid: a later access faults the file's bytes back in. native/io.cc
   */
  mapRelease(mapping: NativeMapping, offset: number, length: number): void;
  /** Drops the mapping's own reference: later mapView calls throw; existing views stay valid. */
  unmap(mapping: NativeMapping): void;
}

export type NativeIsa = 'avx512' | 'avx2' | 'scalar';

export interface NativeInfo {
  readonly isa: NativeIsa;
  readonly threads: number;
  readonly cudaCompiled: boolean;
  /** ISAs this CPU and OS can run, best first; `scalar` always last. */
  readonly availableIsas: readonly NativeIsa[];
  readonly arch: 'x64' | 'arm64' | 'other';
  /** CPUID feature bits and whether the OS saves the YMM / ZMM state (XCR0). */
  readonly features: Readonly<Record<NativeCpuFeature, boolean>>;
}

export type NativeCpuFeature =
  'avx' | 'avx2' | 'fma' | 'f16c' | 'avx512f' | 'avx512bw' | 'avx512vl' | 'avx512dq' | 'osAvx' | 'osAvx512';

/** An opaque handle from mapFile. */
export interface NativeMapping {
  readonly path: string;
  readonly size: number;
  /** Not a real property: makes the handle nominal, so only mapFile's result type-checks. */
  readonly __nativeMapping?: never;
}

/** The shape a failure from the addon has. */
export interface NativeError extends Error {
  readonly code: 'NATIVE_ERROR' | 'IO_ERROR';
}
