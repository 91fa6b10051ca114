import * as fs from 'node:fs';
import { ModelStockError } from '../errors';
import { TensorReader } from '../safetensors/window';
import type { TensorInfo } from '../safetensors/types';
import type { NativeAddon, NativeMapping } from './native/addon-types';
import { loadNativeAddon } from './native/loader';

/**
 * How tensor bytes are read. `mmap`: zero-copy views of mapped input files, pages dropped from the
 * process after each tensor; `pread`: native reads split over the thread pool into reused buffers;
 * `fs`: Node's own positional reads (no addon needed). `auto` picks by measurement (README, Performance).
 */
export type IoMode = 'auto' | 'mmap' | 'pread' | 'fs';
export const IO_MODES: readonly IoMode[] = ['auto', 'mmap', 'pread', 'fs'];

export interface TensorSource {
  readonly kind: Exclude<IoMode, 'auto'>;
  /** Fills `into` with tensor bytes [byteStart, byteStart + into.byteLength). */
  readInto(tensor: TensorInfo, byteStart: number, into: Uint8Array): Promise<void>;
  /** A zero-copy view of tensor bytes, where the source maps files. */
  view?(tensor: TensorInfo, byteStart: number, length: number): Uint8Array;
  /** Done with a range given by view(): its pages may leave the process. */
  release?(tensor: TensorInfo, byteStart: number, length: number): void;
  /**
   * Read-ahead: tensor bytes [byteStart, byteStart + length) will be read soon, so the kernel may start
   * reading them now (cold inputs). Advice: settles once given, never rejects, never drops a page.
   */
  willNeed?(tensor: TensorInfo, byteStart: number, length: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * Hints given and not yet settled: close() waits for them, so no hint outlives its file descriptor, and
 * a hint asked for after close() is not given (it would reopen a file nobody closes).
 */
class Hints {
  private readonly pending = new Set<Promise<void>>();
  private closed = false;

  add(hint: () => Promise<void>): Promise<void> {
    if (this.closed) return Promise.resolve();
    const p = hint().catch(() => undefined);
    this.pending.add(p);
    void p.then(() => this.pending.delete(p));
    return p;
  }

  close(): Promise<unknown> {
    this.closed = true;
    return Promise.all([...this.pending]);
  }
}

class FsSource extends TensorReader implements TensorSource {
  readonly kind = 'fs' as const;
  private readonly hints = new Hints();

  /** Node has no fadvise: the addon gives it when it loads; without it the kernel's own read-ahead works alone. */
  constructor(private readonly addon: NativeAddon | undefined) {
    super();
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

class PreadSource implements TensorSource {
  readonly kind = 'pread' as const;
  private readonly files = new Map<string, Promise<fs.promises.FileHandle>>();
  private readonly hints = new Hints();

  constructor(
    private readonly addon: NativeAddon,
    private readonly threads: number,
  ) {}

  private file(t: TensorInfo): Promise<fs.promises.FileHandle> {
    let fh = this.files.get(t.file);
    if (fh === undefined) {
      fh = fs.promises.open(t.file, 'r');
      this.files.set(t.file, fh);
    }
    return fh;
  }

  async readInto(t: TensorInfo, byteStart: number, into: Uint8Array): Promise<void> {
    try {
      await this.addon.preadInto((await this.file(t)).fd, t.offset + byteStart, into, this.threads);
    } catch (e) {
      throw ioError(e, t);
    }
  }

  willNeed(t: TensorInfo, byteStart: number, length: number): Promise<void> {
    return this.hints.add(() =>
      this.file(t).then((h) => this.addon.fileWillNeed(h.fd, t.offset + byteStart, length)),
    );
  }

  async close(): Promise<void> {
    await this.hints.close();
    const all = [...this.files.values()];
    this.files.clear();
    await Promise.all(all.map((p) => p.then((f) => f.close()).catch(() => undefined)));
  }
}

/**
 * Views are cut from 1 GiB segment views made once per file: every new view is external memory to V8,
 * and one per tensor (3 × 131 MB for an embedding) made it run ~150 full GCs per TinyLlama merge
 * (--trace-gc), about 5% of the CPU in perf.
 */
const SEGMENT = 1 << 30;

class MmapSource implements TensorSource {
  readonly kind = 'mmap' as const;
  private readonly maps = new Map<string, NativeMapping>();
  private readonly hints = new Hints();
  private readonly segments = new Map<string, Uint8Array[]>();

  constructor(
    private readonly addon: NativeAddon,
    private readonly segmentBytes = SEGMENT,
  ) {}

  private mapping(t: TensorInfo): NativeMapping {
    let m = this.maps.get(t.file);
    if (m === undefined) {
      try {
        m = this.addon.mapFile(t.file);
      } catch (e) {
        throw ioError(e, t);
      }
      this.maps.set(t.file, m);
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
      if (from + length > segmentEnd) return this.addon.mapView(m, from, length);
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
    const m = this.maps.get(t.file);
    if (m !== undefined && length > 0) this.addon.mapRelease(m, t.offset + byteStart, length);
  }

  willNeed(t: TensorInfo, byteStart: number, length: number): Promise<void> {
    // A hint holds the mapping it advises: unmapping during one is safe.
    return this.hints.add(async () => this.addon.mapWillNeed(this.mapping(t), t.offset + byteStart, length));
  }

  async readInto(t: TensorInfo, byteStart: number, into: Uint8Array): Promise<void> {
    into.set(this.view(t, byteStart, into.byteLength));
    this.release(t, byteStart, into.byteLength);
  }

  async close(): Promise<void> {
    await this.hints.close();
    for (const m of this.maps.values()) this.addon.unmap(m);
    this.maps.clear();
    this.segments.clear();
  }
}

/**
 * The source for `mode`; `auto` → mmap when the addon loads, else fs. `threads` bounds the parallel
 * reads of `pread` (default 0: all cores); `segmentBytes` (tests) sets the size of the mmap source's
 * segment views.
 */
export function openTensorSource(
  mode: IoMode,
  opts: { threads?: number; segmentBytes?: number } = {},
): TensorSource {
  const loaded = loadNativeAddon();
  if (mode === 'fs') return new FsSource(loaded.addon);
  if (loaded.addon === undefined) {
    if (mode === 'auto') return new FsSource(undefined);
    throw new ModelStockError(
      'BACKEND_UNAVAILABLE',
      `--io ${mode} needs the native addon, which did not load: ${loaded.reasons.join('; ')}`,
    );
  }
  return mode === 'pread'
    ? new PreadSource(loaded.addon, opts.threads ?? 0)
    : new MmapSource(loaded.addon, opts.segmentBytes);
}
