import { ModelStockError, throwIfCancelled } from '../errors';
import { FileSource } from './fileSource';
import { Hints } from './hints';
import { TensorReader } from '../safetensors/window';
import type { TensorInfo } from '../checkpoint/types';
import type { NativeAddon, NativeMapping } from './native/addon-types';
import { loadNativeAddon } from './native/loader';

/**
 * How tensor bytes are read. `mmap`: zero-copy views of mapped input files, pages dropped from the
 * process after each tensor; `direct`: O_DIRECT reads by the addon's I/O threads into the pipeline's
 * buffers, nothing through the page cache (fileSource.ts); `pread`: the same reads, buffered; `fs`:
 * Node's own positional reads (no addon needed). `auto` chooses per input by measurement: cold inputs
 * direct, cached ones mapped (inputSources.ts; README, Performance).
 */
export type IoMode = 'auto' | 'mmap' | 'direct' | 'pread' | 'fs';
export const IO_MODES: readonly IoMode[] = ['auto', 'mmap', 'direct', 'pread', 'fs'];

/** Where a read lands in the region the engine sets aside for it: bytes [head, head + length). */
export interface ReadLayout {
  readonly head: number;
  /** The region's size (whole blocks for direct reads). */
  readonly bytes: number;
  /** The region's alignment within the engine's buffer. */
  readonly alignment: number;
}

/** One read of a batch: tensor bytes [byteStart, byteStart + length) into region[head …]. */
export interface RegionRead {
  readonly tensor: TensorInfo;
  readonly byteStart: number;
  readonly length: number;
  readonly region: Uint8Array;
  readonly head: number;
}

export interface TensorSource {
  readonly kind: Exclude<IoMode, 'auto'>;
  /** Fills `into` with tensor bytes [byteStart, byteStart + into.byteLength). */
  readInto(tensor: TensorInfo, byteStart: number, into: Uint8Array): Promise<void>;
  /** A zero-copy view of tensor bytes, where the source maps files. */
  view?(tensor: TensorInfo, byteStart: number, length: number): Uint8Array;
  /** When view() serves only some inputs (per-input modes): whether it serves this tensor's file. */
  maps?(tensor: TensorInfo): boolean;
  /**
   * Done with a range given by view(): its pages may leave the process. Throws IO_ERROR naming the file
   * when the mapping faulted (the file shrank or could not be read) while the range was in use.
   */
  release?(tensor: TensorInfo, byteStart: number, length: number): void;
  /**
   * How a read of tensor bytes [byteStart, byteStart + length) wants its region laid out (direct reads:
   * whole aligned blocks); undefined: `length` bytes at head 0, any alignment.
   */
  layout?(tensor: TensorInfo, byteStart: number, length: number): ReadLayout | undefined;
  /** Reads several ranges at once (a pipeline step's inputs), each into its region at its head. */
  readRegions?(reads: readonly RegionRead[]): Promise<void>;
  /**
   * Read-ahead: tensor bytes [byteStart, byteStart + length) will be read soon, so the kernel may start
   * reading them now (cold inputs). Advice: settles once given, never rejects, never drops a page.
   */
  willNeed?(tensor: TensorInfo, byteStart: number, length: number): Promise<void>;
  /** Throws IO_ERROR naming the file when any mapped input faulted: a last check before committing. */
  check?(): void;
  close(): Promise<void>;
}

const FS_CHUNK = 16 << 20;

class FsSource extends TensorReader implements TensorSource {
  readonly kind = 'fs' as const;
  private readonly hints = new Hints();

  /** Node has no fadvise: the addon gives it when it loads; without it the kernel's own read-ahead works alone. */
  constructor(
    private readonly addon: NativeAddon | undefined,
    private readonly signal: AbortSignal | undefined,
  ) {
    super();
  }

  /** In reads of ≤ 16 MiB, so a cancelled merge stops between them even mid-window. */
  override async readInto(tensor: TensorInfo, byteStart: number, into: Uint8Array): Promise<void> {
    let done = 0;
    do {
      throwIfCancelled(this.signal, `reading ${tensor.file}`);
      const part = into.subarray(done, Math.min(into.byteLength, done + FS_CHUNK));
      await super.readInto(tensor, byteStart + done, part);
      done += part.byteLength;
    } while (done < into.byteLength);
  }

  willNeed(t: TensorInfo, byteStart: number, length: number): Promise<void> {
    const addon = this.addon;
    if (addon === undefined) return Promise.resolve();
    return this.hints.add(() =>
      this.open(t.file).then((h) => addon.fileWillNeed(h.fd, t.offset + byteStart, length)),
    );
  }

  override async close(): Promise<void> {
    await this.hints.close();
    await super.close();
  }
}

function ioError(e: unknown, t: TensorInfo): ModelStockError {
  return new ModelStockError('IO_ERROR', (e as Error).message, { file: t.file, tensor: t.name, cause: e });
}

const SHRANK = 'truncated by another program during the merge, or its storage failed';

function mappedReadError(file: string, at: number, tensor: string | undefined): ModelStockError {
  return new ModelStockError(
    'IO_ERROR',
    `could not be read through its mapping at byte ${at} (SIGBUS: ${SHRANK}); nothing was written`,
    tensor === undefined ? { file } : { file, tensor },
  );
}

/**
 * A write() whose source is a mapped view of an input that shrank fails with EFAULT (the kernel's copy
 * gets no SIGBUS): that is the input's fault, not the output's. Other errors are returned as they are.
 */
export function mappedWriteError(e: unknown, t: TensorInfo): unknown {
  for (let c: unknown = e; c instanceof Error; c = c.cause) {
    if ((c as NodeJS.ErrnoException).code === 'EFAULT') {
      return new ModelStockError('IO_ERROR', `could not be read through its mapping (EFAULT: ${SHRANK})`, {
        file: t.file,
        tensor: t.name,
        cause: e,
      });
    }
  }
  return e;
}

/**
 * Views are cut from 1 GiB segment views made once per file: every new view is external memory to V8,
 * and one per tensor (3 × 131 MB for an embedding) made it run ~150 full GCs per TinyLlama merge
 * (--trace-gc), about 5% of the CPU in perf.
 */
const SEGMENT = 1 << 30;

class MmapSource implements TensorSource {
  readonly kind = 'mmap' as const;
  private readonly mappings = new Map<string, NativeMapping>();
  private readonly hints = new Hints();
  private readonly segments = new Map<string, Uint8Array[]>();
  /** Views of ranges across a segment boundary, per file: detached with the segments at close. */
  private readonly strays = new Map<string, Uint8Array[]>();
  /** The first fault a mapping reported, said the same way by every later check. */
  private fault: ModelStockError | undefined;

  constructor(
    private readonly addon: NativeAddon,
    private readonly segmentBytes = SEGMENT,
  ) {}

  private mapping(t: TensorInfo): NativeMapping {
    let m = this.mappings.get(t.file);
    if (m === undefined) {
      try {
        m = this.addon.mapFile(t.file);
      } catch (e) {
        throw ioError(e, t);
      }
      this.mappings.set(t.file, m);
    }
    return m;
  }

  view(t: TensorInfo, byteStart: number, length: number): Uint8Array {
    try {
      const m = this.mapping(t);
      const from = t.offset + byteStart;
      const segment = Math.floor(from / this.segmentBytes);
      const segmentStart = segment * this.segmentBytes;
      const segmentEnd = Math.min(segmentStart + this.segmentBytes, m.size);
      // A range across a segment boundary (rare) gets a view of its own.
      if (from + length > segmentEnd) {
        const stray = this.addon.mapView(m, from, length);
        this.strays.set(t.file, [...(this.strays.get(t.file) ?? []), stray]);
        return stray;
      }
      let views = this.segments.get(t.file);
      if (views === undefined) this.segments.set(t.file, (views = []));
      let v = views[segment];
      if (v === undefined)
        views[segment] = v = this.addon.mapView(m, segmentStart, segmentEnd - segmentStart);
      return v.subarray(from - segmentStart, from - segmentStart + length);
    } catch (e) {
      throw ioError(e, t);
    }
  }

  release(t: TensorInfo, byteStart: number, length: number): void {
    const m = this.mappings.get(t.file);
    if (m === undefined) return;
    if (length > 0) this.addon.mapRelease(m, t.offset + byteStart, length);
    this.checkMapping(t.file, m, t.name);
  }

  check(): void {
    if (this.fault !== undefined) throw this.fault;
    for (const [file, m] of this.mappings) this.checkMapping(file, m, undefined);
  }

  private checkMapping(file: string, m: NativeMapping, tensor: string | undefined): void {
    const at = this.addon.mapFault(m);
    if (at !== undefined) throw (this.fault ??= mappedReadError(file, at, tensor));
  }

  willNeed(t: TensorInfo, byteStart: number, length: number): Promise<void> {
    // A hint holds the mapping it advises: unmapping during one is safe.
    return this.hints.add(async () => this.addon.mapWillNeed(this.mapping(t), t.offset + byteStart, length));
  }

  async readInto(t: TensorInfo, byteStart: number, into: Uint8Array): Promise<void> {
    into.set(this.view(t, byteStart, into.byteLength));
    this.release(t, byteStart, into.byteLength);
  }

  /**
   * Unmaps every input now, detaching every view it handed out (they read as empty afterwards): no
   * mapping of an input outlives the merge waiting for a GC. The engine has settled every read, kernel
   * and write that used them before the source is closed.
   */
  async close(): Promise<void> {
    await this.hints.close();
    for (const [file, m] of this.mappings) {
      const views = [...(this.segments.get(file) ?? []), ...(this.strays.get(file) ?? [])];
      this.addon.mapClose(
        m,
        views.filter((v) => v !== undefined),
      );
    }
    this.mappings.clear();
    this.segments.clear();
    this.strays.clear();
  }
}

/**
 * The source for one `mode` (every input alike; merges choose per input: inputSources.ts). `direct`,
 * `pread` and `mmap` need the addon. `threads` is accepted for compatibility (reads run on the addon's
 * I/O threads); `queueDepth` sets direct and pread reads in flight per input; `signal` stops reads
 * between chunks (CANCELLED); `segmentBytes` (tests) sets the size of the mmap source's segment views.
 */
export function openTensorSource(
  mode: Exclude<IoMode, 'auto'>,
  opts: { segmentBytes?: number; signal?: AbortSignal; queueDepth?: number } = {},
): TensorSource {
  const loaded = loadNativeAddon();
  if (mode === 'fs') return new FsSource(loaded.addon, opts.signal);
  if (loaded.addon === undefined) {
    throw new ModelStockError(
      'BACKEND_UNAVAILABLE',
      `--io ${mode} needs the native addon, which did not load: ${loaded.reasons.join('; ')}`,
    );
  }
  if (mode === 'mmap') return new MmapSource(loaded.addon, opts.segmentBytes);
  return new FileSource(loaded.addon, {
    direct: mode === 'direct',
    signal: opts.signal,
    queueDepth: opts.queueDepth,
  });
}
