import type { FloatDType } from '../../dtype';
import type { ErrorCode } from '../../errors';

/**
 * Everything `model_stock.node` exports, typed (native/addon.cc registers them; each lives in the
 * file named). Nothing outside lib/engine/native/ touches the addon untyped.
 *
 * Errors: once the loader called setErrorConstructor, a rejected Promise or a thrown ModelStockError
 * whose `code` is 'INVALID_ARGUMENT' (a call that breaks this contract), 'IO_ERROR' (a failed or short
 * read) or 'NATIVE_ERROR' (anything else), with a message naming the field or file.
 */
export interface NativeAddon {
  /**
   * The Gram pass over one window on the addon's thread pool, off the event loop: for every unit u the
   * window touches and every pair i ≤ j, `gram[u·P + gramIndex(i, j, N)] += Σ d_i·d_j`. Reads exactly
   * the job's fields; holds every typed array until the Promise settles. native/workers.cc
   */
  gram(job: NativeGramJob): Promise<void>;
  /** The interpolation pass over one window, same contract. native/workers.cc */
  interpolate(job: NativeInterpolateJob): Promise<void>;

  /**
   * Low-rank (LoRA) steps, native/lowrank_job.cc (the layout: native/lowrank.h). lowRankPack decodes a
   * tensor's factors into `u` and `v` (zero-filled by the caller), which the session keeps; the other two
   * read them. Same error contract as gram/interpolate; CANCELLED between tasks when `abort` is set.
   */
  lowRankPack(job: NativeLowRankPackJob): Promise<void>;
  /** Overwrites `gram` with the units × P Gram accumulators of the packed factors. */
  lowRankGram(job: NativeLowRankGramJob): Promise<void>;
  /** out = encode(w0 + Σ_i coef[k·N + i]·(U_i·V_i)[k, :]) for the window's rows, in float64. */
  lowRankInterpolate(job: NativeLowRankInterpolateJob): Promise<void>;

  /** What the addon can run on: the best ISA, the default thread count, CPU features. native/runtime.cc */
  info(): NativeInfo;
  /** The class native errors are made of: `new ctor(code, message)`. Called once by the loader. */
  setErrorConstructor(ctor: new (code: ErrorCode, message: string) => Error): void;
  /**
   * Every later kernel at this nice (0–19), on the pool's own threads only (the calling libuv worker
   * then waits rather than computing); returns the value before. Process-wide. native/pool.h
   */
  setPoolNice(nice: number): number;

  /** `bytes` of host memory aligned to `alignment` (a power of two ≤ 2 MiB). native/memory.cc */
  allocHost(bytes: number, alignment: number): Uint8Array;
  /** Returns allocHost memory now: the buffer is detached (its views become empty). */
  freeHost(buffer: Uint8Array): void;

  /**
   * Opens `path` for readRanges, off the event loop: with O_DIRECT when `direct` and the file system takes
   * it, else buffered (inputFileInfo says why). `refuse` (tests) makes the O_DIRECT open or the first
   * O_DIRECT read answer EINVAL, as a file system that refuses them would. native/reader.cc
   */
  openInputFile(
    path: string,
    options: { readonly direct: boolean; readonly refuse?: readonly NativeReadRefusal[] },
  ): Promise<NativeInputFile>;
  /** How the file is read now: a refused O_DIRECT read downgrades it to buffered reads, saying why. */
  inputFileInfo(file: NativeInputFile): { readonly direct: boolean; readonly fallback?: string };
  /** Drops the handle; the descriptor closes once no read in flight uses it. */
  closeInputFile(file: NativeInputFile): void;
  /**
   * Reads every range at once on the addon's I/O threads, in chunks of `chunkBytes`, `queueDepth` chunks
   * per range in flight; the Promise settles from those threads (no libuv thread waits). Rejects with
   * IO_ERROR naming the file on a failed or short read (the file shrank), CANCELLED once `abort` is set
   * (checked between chunks). Holds every target until settled. native/reader.cc
   */
  readRanges(
    reads: readonly NativeRangeRead[],
    options: { readonly queueDepth: number; readonly chunkBytes: number; readonly abort?: Int32Array },
  ): Promise<void>;
  /** Bytes of each file in the page cache (mincore), off the event loop (`--io auto`). native/reader.cc */
  inputResidency(paths: readonly string[]): Promise<NativeResidency[]>;
  /**
   * Whether `dir`'s file system takes O_DIRECT: a probe file created there (a new name, removed after) is
   * written and read with O_DIRECT; in a read-only folder an existing file is read. `true`, or why not.
   */
  probeDirectIo(dir: string): Promise<{ readonly read: true | string; readonly write: true | string }>;
  /** Input files open, read batches in flight and I/O threads of this process (tests: none leak). */
  inputReaderStats(): { readonly openFiles: number; readonly batches: number; readonly ioThreads: number };
  /** Maps a whole file read-only. The mapping lives until `unmap` and every view is collected. */
  mapFile(path: string): NativeMapping;
  /**
   * A zero-copy view of bytes [offset, offset + length) of the mapping (length < 4 GiB: Node 20 aborts
   * on a larger external buffer), advised sequential. The view keeps the mapping alive.
   */
  mapView(mapping: NativeMapping, offset: number, length: number): Uint8Array;
  /**
   * Drops the pages of [offset, offset + length) from this process (madvise DONTNEED): mapped pages
   * count in RSS. Views stay valid: a later access faults the file's bytes back in. native/io.cc
   */
  mapRelease(mapping: NativeMapping, offset: number, length: number): void;
  /**
   * Where the mapped file first failed to read, as an offset into the file, or undefined: a SIGBUS on
   * the mapping (file truncated by another program, storage gone) on any thread is absorbed by mapping
   * zero pages over the rest of it, and flags it here. Views of a faulted mapping read zeros, never to be
   * used. Check after every use of a view. native/fault_guard.cc
   */
  mapFault(mapping: NativeMapping): number | undefined;
  /** Drops the mapping's own reference: later mapView calls throw; existing views stay valid. */
  unmap(mapping: NativeMapping): void;
  /**
   * Read-ahead of bytes needed next: posix_fadvise(WILLNEED) on a file range, madvise(WILLNEED) on a
   * mapping's range, given on a worker (submitting reads can block). Advice: failures are not reported;
   * pages are never dropped. native/io.cc
   */
  fileWillNeed(fd: number, offset: number, length: number): Promise<void>;
  mapWillNeed(mapping: NativeMapping, offset: number, length: number): Promise<void>;

  /**
   * Creates `path` (never an existing file) for a shard of exactly `size` bytes, written off the event
   * loop with bounded dirty data (native/writer.cc): `direct` (O_DIRECT from aligned staging blocks),
   * `rolling` (sync_file_range writeback every flushBytes) or `plain` (fdatasync every flushBytes). A
   * refused call downgrades the mode (shardWriterInfo says to what and why).
   */
  openShardWriter(path: string, size: number, options: NativeShardWriterOptions): Promise<NativeShardWriter>;
  /** Writes `data` at `position`; writes may overlap in time but never in bytes. Holds `data` until settled. */
  shardWrite(writer: NativeShardWriter, position: number, data: Uint8Array): Promise<void>;
  shardWriterInfo(writer: NativeShardWriter): { readonly mode: NativeWriteMode; readonly fallback?: string };
  /** Once every write settled: flushes, fdatasyncs when `fsync`, closes; resolves with the fdatasync's seconds. */
  closeShardWriter(writer: NativeShardWriter, fsync: boolean): Promise<number>;
  /** Once every write settled: closes without flushing (the caller removes the file). */
  abortShardWriter(writer: NativeShardWriter): Promise<void>;
  /** Shard files open and staging blocks allocated by every writer of this process (tests: none leak). */
  shardWriterStats(): { readonly openFiles: number; readonly stagingBlocks: number };

  /**
   * Ends a mapping now: every view in `views` (all the caller made) is detached — empty from then on —
   * and the file is unmapped at once, instead of when the last view is collected. Nothing may still be
   * reading those views. native/io.cc
   */
  mapClose(mapping: NativeMapping, views: readonly Uint8Array[]): void;

  /**
   * Tries to take an exclusive flock(2) on `fd` without waiting (huggingface_hub's download lock): true
   * when held (released by closing fd), false when another open file holds it. native/lock.cc
   */
  lockFile(fd: number): boolean;

  /**
   * renameat2(2): `noreplace` fails with EEXIST rather than replace `to`; `exchange` swaps two existing
   * paths atomically. Resolves with 0, or the errno (EINVAL where the file system refuses the flag,
   * ENOSYS off Linux). native/fsops.cc
   */
  renamePaths(from: string, to: string, mode: 'noreplace' | 'exchange'): Promise<number>;
}

export type NativeIsa = 'avx512' | 'avx2' | 'scalar';

/** One input window: `count × size(dtype)` bytes, any alignment. */
export interface NativeInput {
  readonly bytes: Uint8Array;
  readonly dtype: FloatDType;
}

/** What both passes share. A unit is `unitLength` consecutive elements; units are counted from 0. */
export interface NativeWindowJob {
  readonly base: NativeInput;
  /** The N ≥ 2 fine-tunes. */
  readonly models: readonly NativeInput[];
  readonly count: number;
  /** Index of the window's first element among the units' elements. */
  readonly firstElement: number;
  readonly unitLength: number;
  /** The ISA to run on (default: the best this CPU runs). */
  readonly isa?: NativeIsa;
  /** Parallelism of this job, the calling thread included (default 0: all cores). */
  readonly threads?: number;
  /** The merge's abort flag (lib/engine/abort.ts): set, the job stops between blocks, rejecting CANCELLED. */
  readonly abort?: Int32Array;
}

export interface NativeGramJob extends NativeWindowJob {
  /** At least (last unit touched + 1) × P accumulators. */
  readonly gram: Float64Array;
}

export interface NativeInterpolateJob extends NativeWindowJob {
  /** One ratio per unit, at least up to the last unit touched. */
  readonly t: Float64Array;
  /** `count × size(outDtype)` bytes. */
  readonly out: Uint8Array;
  readonly outDtype: FloatDType;
}

/** A job's ISA, parallelism and abort flag (NativeWindowJob's fields of the same names). */
export interface NativeRuntime {
  readonly isa?: NativeIsa;
  readonly threads?: number;
  readonly abort?: Int32Array;
}

/** One fine-tune's factors (lib/engine/backend.ts LowRankFactor without its scale). */
export interface NativeLowRankFactor {
  readonly a: NativeInput;
  readonly b: NativeInput;
  readonly rank: number;
  readonly transposed: boolean;
}

/**
 * Packed factors of N fine-tunes: S = Σ ranks, U in stored-row order for `uRows` rows, V for `cols`
 * columns, each in panels of 16 along its long side: `u` holds ⌈uRows/16⌉·S·16 doubles, `v` ⌈cols/16⌉·S·16.
 */
export interface NativeLowRankPacked {
  readonly cols: number;
  readonly uRows: number;
  /** r_i per fine-tune, 0 for a zero task vector. */
  readonly ranks: readonly number[];
  readonly u: Float64Array;
  readonly v: Float64Array;
}

export interface NativeLowRankPackJob extends NativeRuntime {
  /** The stored tensor's rows R (a transposed factor's lora_A rows are that long) and columns C. */
  readonly rows: number;
  readonly cols: number;
  /** The rows of U to pack: [uFirstRow, uFirstRow + uRows). */
  readonly uFirstRow: number;
  readonly uRows: number;
  /** null: a zero task vector. a: [rank, C] (plain) or [rank, R]; b: [R, rank] (plain) or [C, rank]. */
  readonly factors: readonly (NativeLowRankFactor | null)[];
  readonly u: Float64Array;
  readonly v: Float64Array;
}

export interface NativeLowRankGramJob extends NativeLowRankPacked, NativeRuntime {
  /** s_i per fine-tune. */
  readonly scales: Float64Array;
  /** One unit per row of U, else one. */
  readonly filterWise: boolean;
  /** units × P entries. */
  readonly gram: Float64Array;
}

export interface NativeLowRankInterpolateJob extends NativeLowRankPacked, NativeRuntime {
  /** rows × N coefficients: row k's task vectors are weighted coef[k·N + i]. */
  readonly coef: Float64Array;
  /** The window: rows [firstRow, firstRow + rows) of U. */
  readonly firstRow: number;
  readonly rows: number;
  /** rows × cols elements. */
  readonly base: NativeInput;
  /** rows × cols × size(outDtype) bytes. */
  readonly out: Uint8Array;
  readonly outDtype: FloatDType;
}

export interface NativeInfo {
  /** The best ISA this CPU and OS run. */
  readonly isa: NativeIsa;
  /** What `threads: 0` means: the hardware threads. */
  readonly threads: number;
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

/** An opaque handle from openInputFile. */
export interface NativeInputFile {
  readonly path: string;
  /** Bytes when opened. */
  readonly size: number;
  /** The descriptor (read-ahead hints of buffered reads); valid until closeInputFile. */
  readonly fd: number;
  readonly __nativeInputFile?: never;
}

export type NativeReadRefusal = 'directOpen' | 'directRead';

/**
 * One range of readRanges: file bytes [position, position + length) land at target[head …]. When the
 * target is laid out for O_DIRECT (its address and length multiples of 4096, position − head a multiple
 * of 4096) whole blocks are read into it, bytes around the range included; otherwise through a bounce block.
 */
export interface NativeRangeRead {
  readonly file: NativeInputFile;
  readonly position: number;
  readonly length: number;
  readonly target: Uint8Array;
  readonly head: number;
}

export interface NativeResidency {
  readonly size: number;
  /** Bytes in the page cache. */
  readonly resident: number;
  /**
   * Whether `resident` can be trusted: the kernel answers only for files the caller owns or may write
   * (for others it says every page is cached).
   */
  readonly exact: boolean;
  readonly error?: string;
}

export type NativeWriteMode = 'direct' | 'rolling' | 'plain';

export interface NativeShardWriterOptions {
  readonly mode: NativeWriteMode;
  /** direct: staging block size, a multiple of 4096 (default 16 MiB). */
  readonly blockBytes?: number;
  /** rolling / plain: bytes written between flushes (default 32 MiB). */
  readonly flushBytes?: number;
  /** Tests only: calls that answer EINVAL, as a file system that refuses them would. */
  readonly refuse?: readonly ('direct' | 'directWrite' | 'syncFileRange')[];
}

/** An opaque handle from openShardWriter. */
export interface NativeShardWriter {
  readonly path: string;
  readonly size: number;
  readonly __nativeShardWriter?: never;
}
