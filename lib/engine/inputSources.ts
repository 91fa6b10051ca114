/**
 * A merge's inputs, each read its own way. `--io auto` measures, per input (a model: all its weight
 * files), how much of it the page cache holds (mincore over a read-only mapping, off the event loop):
 *
 *   at least AUTO_CACHED_FRACTION cached → mmap: zero-copy views of pages already in memory; reading
 *       them again from the disk would cost a full disk read for bytes the machine already has;
 *   less → direct: O_DIRECT into the pipeline's buffers. A cold mapped input is faulted in page by
 *       page inside the kernels, through a page cache that must then be reclaimed: measured here
 *       (TinyLlama, 6.6 GB in, inside a 2 GiB memory limit) 0.85 s of CPU per GB with mmap and 1.0 with
 *       pread, against ~0.3 with direct reads, at disk speed (README, Performance).
 *
 * Where the kernel will not say (a file the user neither owns nor may write: mincore then reports
 * every page cached), the input is mapped, as before this measurement existed. Without the addon every
 * input is read with Node's own reads (`fs`).
 */
import { ModelStockError } from '../errors';
import type { TensorInfo } from '../checkpoint/types';
import { FileSource } from './fileSource';
import { openTensorSource, type IoMode, type ReadLayout, type RegionRead, type TensorSource } from './io';
import type { NativeAddon } from './native/addon-types';
import { loadNativeAddon } from './native/loader';

/** `auto` maps an input when at least this fraction of its bytes is in the page cache. */
export const AUTO_CACHED_FRACTION = 0.5;

export type InputMode = Exclude<IoMode, 'auto'>;

/** How one input's bytes were read, as the report says it. */
export interface InputIo {
  readonly io: InputMode;
  /** Why `io` is not the mode asked for (a file system that refused O_DIRECT). */
  readonly fallback?: string;
}

/** An input's weight files. */
export interface InputFiles {
  readonly files: readonly string[];
}

/** What `auto` measured of one input. */
export interface Residency {
  readonly bytes: number;
  readonly cached: number;
  /** False when the kernel would not say (see above). */
  readonly exact: boolean;
}

/** The page-cache residency of each input's files, summed per input. */
export async function measureResidency(
  addon: NativeAddon,
  inputs: readonly InputFiles[],
): Promise<Residency[]> {
  const all = await addon.inputResidency(inputs.flatMap((i) => i.files));
  let k = 0;
  return inputs.map((i) => {
    const mine = all.slice(k, (k += i.files.length));
    return {
      bytes: mine.reduce((a, r) => a + r.size, 0),
      cached: mine.reduce((a, r) => a + r.resident, 0),
      exact: mine.every((r) => r.exact && r.error === undefined),
    };
  });
}

/** The `auto` rule (see above): mmap for a cached input (or one the kernel will not measure), else direct. */
export function autoMode(r: Residency): 'mmap' | 'direct' {
  if (!r.exact || r.bytes === 0) return 'mmap';
  return r.cached >= AUTO_CACHED_FRACTION * r.bytes ? 'mmap' : 'direct';
}

export interface InputSourceOptions {
  readonly signal?: AbortSignal;
  /** Direct and pread reads in flight per input (fileSource.ts's DEFAULT_QUEUE_DEPTH). */
  readonly queueDepth?: number;
}

/**
 * Opens the inputs (the base first, then the fine-tunes) for reading in `mode`; `auto` chooses per
 * input (see above).
 */
export async function openInputSources(
  mode: IoMode,
  inputs: readonly InputFiles[],
  opts: InputSourceOptions = {},
): Promise<InputSources> {
  const addon = loadNativeAddon().addon;
  let modes: InputMode[];
  if (mode !== 'auto') modes = inputs.map(() => mode);
  else if (addon === undefined) modes = inputs.map(() => 'fs');
  else modes = (await measureResidency(addon, inputs)).map(autoMode);
  const sources = new Map<InputMode, TensorSource>();
  const byFile = new Map<string, TensorSource>();
  inputs.forEach((input, i) => {
    const m = modes[i]!;
    let s = sources.get(m);
    if (s === undefined) {
      s = openTensorSource(m, opts);
      sources.set(m, s);
    }
    for (const f of input.files) if (!byFile.has(f)) byFile.set(f, s);
  });
  return new InputSources(inputs, modes, [...sources.values()], byFile);
}

/** The inputs of one merge as one TensorSource, each tensor read by its input's source. */
export class InputSources implements Omit<TensorSource, 'kind'> {
  readonly view?: (tensor: TensorInfo, byteStart: number, length: number) => Uint8Array;

  constructor(
    private readonly inputs: readonly InputFiles[],
    /** Each input's mode, as chosen. */
    readonly modes: readonly InputMode[],
    private readonly sources: readonly TensorSource[],
    private readonly byFile: ReadonlyMap<string, TensorSource>,
  ) {
    if (sources.some((s) => s.view !== undefined)) {
      this.view = (t, byteStart, length) => {
        const s = this.of(t);
        if (s.view === undefined) throw new Error(`internal: ${t.file} is not mapped`);
        return s.view(t, byteStart, length);
      };
    }
  }

  private of(t: TensorInfo): TensorSource {
    const s = this.byFile.get(t.file);
    if (s === undefined)
      throw new ModelStockError('IO_ERROR', 'internal: not an input of this merge', { file: t.file });
    return s;
  }

  maps(t: TensorInfo): boolean {
    const s = this.of(t);
    return s.view !== undefined && (s.maps?.(t) ?? true);
  }

  readInto(t: TensorInfo, byteStart: number, into: Uint8Array): Promise<void> {
    return this.of(t).readInto(t, byteStart, into);
  }

  release(t: TensorInfo, byteStart: number, length: number): void {
    this.of(t).release?.(t, byteStart, length);
  }

  layout(t: TensorInfo, byteStart: number, length: number): ReadLayout | undefined {
    return this.of(t).layout?.(t, byteStart, length);
  }

  /** One batch per source: the direct inputs of a step are read by one native call. */
  async readRegions(reads: readonly RegionRead[]): Promise<void> {
    const groups = new Map<TensorSource, RegionRead[]>();
    for (const r of reads) {
      const s = this.of(r.tensor);
      groups.set(s, [...(groups.get(s) ?? []), r]);
    }
    const results = await Promise.allSettled(
      [...groups].map(([s, group]) =>
        s.readRegions !== undefined
          ? s.readRegions(group)
          : Promise.all(
              group.map((r) =>
                s.readInto(r.tensor, r.byteStart, r.region.subarray(r.head, r.head + r.length)),
              ),
            ),
      ),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
  }

  willNeed(t: TensorInfo, byteStart: number, length: number): Promise<void> {
    return this.of(t).willNeed?.(t, byteStart, length) ?? Promise.resolve();
  }

  check(): void {
    for (const s of this.sources) s.check?.();
  }

  /** How each input was read (after the merge): its mode, or pread and why when O_DIRECT was refused. */
  async inputIo(): Promise<InputIo[]> {
    return Promise.all(
      this.inputs.map(async (input, i): Promise<InputIo> => {
        const mode = this.modes[i]!;
        const s = this.byFile.get(input.files[0] ?? '');
        if (mode !== 'direct' || !(s instanceof FileSource)) return { io: mode };
        for (const f of input.files) {
          const io = await s.ioOf(f);
          if (io !== undefined && io.io !== 'direct') return io;
        }
        return { io: 'direct' };
      }),
    );
  }

  async close(): Promise<void> {
    await Promise.all(this.sources.map((s) => s.close()));
  }
}
