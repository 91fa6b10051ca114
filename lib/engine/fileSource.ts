/**
 * The `direct` and `pread` input modes: the addon's own I/O threads read tensor bytes straight into the
 * pipeline's buffers (native/reader.cc), several requests per input in flight at once.
 *
 * `direct` opens every input with O_DIRECT: no page of it enters the page cache, so a merge of inputs
 * larger than memory neither evicts what the machine holds nor pays for reclaiming it, and no compute
 * thread ever waits on a page fault. The kernel reads whole 4 KiB blocks, so layout() tells the engine
 * to set aside a block-aligned region that starts at the block holding the range's first byte: the
 * bytes land at the offset within the block they have in the file, read by DMA, heads and tails
 * included, never copied. A file system that refuses O_DIRECT (ramfs, some FUSE or network file
 * systems) is read buffered instead; inputIo() says so and why, for the report.
 *
 * `pread` is the same path without O_DIRECT: buffered reads, with read-ahead hints for the kernel.
 */
import { ModelStockError } from '../errors';
import { AbortFlag } from './abort';
import type { TensorInfo } from '../checkpoint/types';
import type { NativeAddon, NativeInputFile, NativeRangeRead, NativeReadRefusal } from './native/addon-types';
import { Hints } from './hints';
import type { ReadLayout, RegionRead, TensorSource } from './io';

/** O_DIRECT's alignment of offsets, lengths and memory: the largest logical block in common use. */
export const DIRECT_ALIGNMENT = 4096;

/**
 * Requests in flight per input, each of CHUNK_BYTES: what reached the parallel `cat` floor on this
 * project's machine (virtio disk, max_sectors_kb 4096; README, Performance). Overridable per merge
 * (`ioQueueDepth`, `--io-depth`).
 */
export const DEFAULT_QUEUE_DEPTH = 4;
/** The addon's I/O threads number at most 64: no more requests than that are in flight per input. */
export const MAX_QUEUE_DEPTH = 64;
export const CHUNK_BYTES = 4 << 20;

/**
 * Tests only: MODEL_STOCK_TEST_REFUSE_READ=directOpen,directRead (read at each open) makes the O_DIRECT
 * open, or the first O_DIRECT read of each file, answer EINVAL as a file system that refuses it would,
 * so the fallback runs here (tmpfs and ext4 on this kernel take O_DIRECT).
 */
function injectedRefusals(): NativeReadRefusal[] | undefined {
  const v = process.env.MODEL_STOCK_TEST_REFUSE_READ;
  if (v === undefined || v === '') return undefined;
  const known: readonly NativeReadRefusal[] = ['directOpen', 'directRead'];
  return v.split(',').map((s) => {
    const r = known.find((k) => k === s.trim());
    if (r === undefined)
      throw new Error(`MODEL_STOCK_TEST_REFUSE_READ: unknown call "${s}" (${known.join(', ')})`);
    return r;
  });
}

const alignUp = (n: number): number => Math.ceil(n / DIRECT_ALIGNMENT) * DIRECT_ALIGNMENT;

export interface FileSourceOptions {
  readonly direct: boolean;
  readonly signal?: AbortSignal;
  /** Requests in flight per input (default DEFAULT_QUEUE_DEPTH). */
  readonly queueDepth?: number;
}

export class FileSource implements TensorSource {
  readonly kind: 'direct' | 'pread';
  private readonly files = new Map<string, Promise<NativeInputFile>>();
  private readonly abort: AbortFlag;
  private readonly queueDepth: number;
  private readonly refuse = injectedRefusals();
  private readonly hints = new Hints();
  private closed = false;

  constructor(
    private readonly addon: NativeAddon,
    private readonly options: FileSourceOptions,
  ) {
    this.kind = options.direct ? 'direct' : 'pread';
    this.abort = new AbortFlag(options.signal);
    this.queueDepth = options.queueDepth ?? DEFAULT_QUEUE_DEPTH;
  }

  private file(t: TensorInfo): Promise<NativeInputFile> {
    if (this.closed) return Promise.reject(new Error('internal: read after the source was closed'));
    let f = this.files.get(t.file);
    if (f === undefined) {
      f = this.addon.openInputFile(t.file, { direct: this.options.direct, refuse: this.refuse });
      f.catch(() => this.files.delete(t.file));
      this.files.set(t.file, f);
    }
    return f;
  }

  /** Direct reads land block-aligned: the region starts at the block holding the range's first byte. */
  layout(t: TensorInfo, byteStart: number, length: number): ReadLayout | undefined {
    if (!this.options.direct) return undefined;
    const head = (t.offset + byteStart) % DIRECT_ALIGNMENT;
    return { head, bytes: Math.max(DIRECT_ALIGNMENT, alignUp(head + length)), alignment: DIRECT_ALIGNMENT };
  }

  async readRegions(reads: readonly RegionRead[]): Promise<void> {
    const ranges: NativeRangeRead[] = [];
    for (const r of reads) {
      let file: NativeInputFile;
      try {
        file = await this.file(r.tensor);
      } catch (e) {
        throw ioError(e, r.tensor);
      }
      ranges.push({
        file,
        position: r.tensor.offset + r.byteStart,
        length: r.length,
        target: r.region,
        head: r.head,
      });
    }
    try {
      await this.addon.readRanges(ranges, {
        queueDepth: this.queueDepth,
        chunkBytes: CHUNK_BYTES,
        abort: this.abort.flag,
      });
    } catch (e) {
      if (e instanceof ModelStockError && e.code === 'CANCELLED') throw e;
      // The addon names the file; say which tensor too (a batch reads one range per input).
      const failed = reads.find((r) => (e as Error).message.startsWith(r.tensor.file)) ?? reads[0]!;
      throw ioError(e, failed.tensor);
    }
  }

  /** Any buffer: an unaligned one is read through the addon's bounce blocks (a copy). */
  readInto(t: TensorInfo, byteStart: number, into: Uint8Array): Promise<void> {
    return this.readRegions([{ tensor: t, byteStart, length: into.byteLength, region: into, head: 0 }]);
  }

  /** Buffered reads only: the kernel may read ahead what is needed next. Direct reads bypass the cache. */
  willNeed(t: TensorInfo, byteStart: number, length: number): Promise<void> {
    if (this.options.direct) return Promise.resolve();
    return this.hints.add(() =>
      this.file(t).then((f) => this.addon.fileWillNeed(f.fd, t.offset + byteStart, length)),
    );
  }

  /** How `file` is read: direct, or pread and why (O_DIRECT refused). Undefined before its first read. */
  ioOf(file: string): Promise<{ io: 'direct' | 'pread'; fallback?: string } | undefined> {
    const f = this.files.get(file);
    if (f === undefined) return Promise.resolve(undefined);
    return f.then(
      (h) => {
        const info = this.addon.inputFileInfo(h);
        if (info.direct || !this.options.direct) return { io: this.kind };
        return info.fallback === undefined ? { io: 'pread' } : { io: 'pread', fallback: info.fallback };
      },
      () => undefined,
    );
  }

  /** Every read has settled before the engine closes its source; hints are waited for here. */
  async close(): Promise<void> {
    await this.hints.close();
    this.closed = true;
    this.abort.dispose();
    const all = [...this.files.values()];
    this.files.clear();
    await Promise.all(all.map((p) => p.then((f) => this.addon.closeInputFile(f)).catch(() => undefined)));
  }
}

/** The addon's message names the file first; the error names it in its own field. */
function ioError(e: unknown, t: TensorInfo): ModelStockError {
  const message = (e as Error).message;
  const own = message.startsWith(`${t.file}: `) ? message.slice(t.file.length + 2) : message;
  return new ModelStockError('IO_ERROR', own, { file: t.file, tensor: t.name, cause: e });
}
