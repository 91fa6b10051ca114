/**
 * One output shard file and how its bytes reach the disk. Written bytes never pile up dirty in the page
 * cache (they did: a 2.4 GB merge left 2.2 GB dirty, then one fsync waited for all of it with nothing
 * left to overlap, and reclaim made runs swing 3.5×): the native writer flushes as it goes
 * (native/writer.cc: O_DIRECT, or rolling sync_file_range writeback); without the addon, Node's writes
 * with an fdatasync every FLUSH_BYTES bound dirty data the portable way.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { ModelStockError } from '../errors';
import type { NativeAddon, NativeShardWriter, NativeShardWriterOptions } from '../engine/native/addon-types';
import { loadNativeAddon } from '../engine/native/loader';

/**
 * `direct`: O_DIRECT from aligned staging blocks; `rolling`: buffered writes with rolling writeback;
 * `plain`: buffered writes and an fdatasync every FLUSH_BYTES (the native fallback where the kernel or
 * file system refuses the others); `node`: Node's writes and an fdatasync every FLUSH_BYTES (no addon
 * needed). `auto`: DEFAULT_NATIVE_MODE when the addon loads, else `node`.
 */
export type WriteMode = 'auto' | 'direct' | 'rolling' | 'plain' | 'node';
export const WRITE_MODES: readonly WriteMode[] = ['auto', 'direct', 'rolling', 'plain', 'node'];

/** What the report says about how the output was written. */
export interface WriteReport {
  /** The mode that wrote the output; after a refusal, the weakest any shard ended with. */
  readonly mode: Exclude<WriteMode, 'auto'>;
  readonly requested: WriteMode;
  /** Why `mode` is not the one asked for (a call the file system refused, no addon). */
  readonly fallback?: string;
  /** Seconds the final fsync of the shards took (0 without fsync): what the flushing left for it. */
  readonly fsyncSeconds: number;
}

/** Picked by measurement (README, Performance): the least CPU per byte at the same disk speed. */
export const DEFAULT_NATIVE_MODE: Exclude<WriteMode, 'auto' | 'node'> = 'direct';
/** Bytes written between flushes (rolling, plain, node): dirty data stays within about twice this. */
export const FLUSH_BYTES = 32 << 20;
/** direct: staging block size (at most: smaller memory budgets get smaller blocks). */
export const BLOCK_BYTES = 16 << 20;
/**
 * direct: staging blocks a writer holds at most — the block a write ends in, the one the next shard's
 * header starts, the one being filled, and two spares (native/writer.cc's kSpareBlocks) — with writes
 * given one at a time, as the engine gives them.
 */
export const STAGING_BLOCKS = 5;

/** The smallest staging block a small memory budget gets. */
const MIN_BLOCK_BYTES = 64 << 10;

/**
 * What the output's staging takes out of a merge's memory budget, and the block size that keeps it to
 * about 1/13 of it (16 MiB blocks from a 1 GiB budget): direct writes only (the other modes write from
 * the engine's own buffers).
 */
export function writerStaging(memory: number, mode: WriteMode): { blockBytes: number; bytes: number } {
  const resolved = resolveWriteMode(mode).mode;
  let blockBytes = writerTestHooks.blockBytes ?? BLOCK_BYTES;
  if (writerTestHooks.blockBytes === undefined) {
    while (blockBytes > MIN_BLOCK_BYTES && blockBytes * 64 > memory) blockBytes /= 2;
  }
  return { blockBytes, bytes: resolved === 'direct' ? STAGING_BLOCKS * blockBytes : 0 };
}

/**
 * Tests only: smaller blocks and flush intervals make small files cross their boundaries. `refuse`
 * defaults to MODEL_STOCK_TEST_REFUSE_IO=direct,directWrite,syncFileRange (read at each open), which
 * makes those calls answer EINVAL in the native writer as a file system that refuses them would, so
 * the fallbacks run here (tmpfs and ext4 on this kernel accept them all).
 */
export const writerTestHooks: {
  blockBytes?: number;
  flushBytes?: number;
  refuse?: NativeShardWriterOptions['refuse'];
} = {};

/** Modes from strongest to weakest: a refusal only ever moves a file down this list. */
const STRENGTH: readonly Exclude<WriteMode, 'auto'>[] = ['direct', 'rolling', 'plain', 'node'];

export function weakerMode<M extends Exclude<WriteMode, 'auto'>>(a: M, b: M): M {
  return STRENGTH.indexOf(a) >= STRENGTH.indexOf(b) ? a : b;
}

export interface ShardFile {
  readonly path: string;
  /** Writes `data` at byte `position`; concurrent writes never overlap in bytes. Rejects with the raw cause. */
  write(position: number, data: Uint8Array): Promise<void>;
  /** The mode in effect now, and why it differs from the one asked for. */
  info(): { mode: Exclude<WriteMode, 'auto'>; fallback?: string };
  /** Once every write settled: flushes, syncs when `fsync`, closes. Resolves with the sync's seconds. */
  close(fsync: boolean): Promise<number>;
  /** Once every write settled: closes without flushing; never throws. */
  abort(): Promise<void>;
}

/** Node's positional writes are capped at 2 GiB − 1 bytes per call (libuv). */
const MAX_WRITE_CALL = 1 << 30;

class NodeShardFile implements ShardFile {
  private sinceSync = 0;
  private syncing: Promise<void> = Promise.resolve();
  private readonly flushBytes = writerTestHooks.flushBytes ?? FLUSH_BYTES;

  constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    private readonly fallback: string | undefined,
  ) {}

  static async open(path: string, fallback: string | undefined): Promise<NodeShardFile> {
    // 'wx': never truncate a file that exists (someone may have it mapped, or it is an input).
    return new NodeShardFile(path, await open(path, 'wx'), fallback);
  }

  info(): { mode: 'node'; fallback?: string } {
    return this.fallback === undefined ? { mode: 'node' } : { mode: 'node', fallback: this.fallback };
  }

  async write(position: number, data: Uint8Array): Promise<void> {
    for (let done = 0; done < data.byteLength;) {
      const length = Math.min(data.byteLength - done, MAX_WRITE_CALL, this.flushBytes);
      let bytesWritten: number;
      try {
        ({ bytesWritten } = await this.handle.write(data, done, length, position + done));
      } catch (cause) {
        throw new Error(`write failed at byte ${position + done}: ${(cause as Error).message}`, { cause });
      }
      done += bytesWritten;
      this.sinceSync += bytesWritten;
      if (this.sinceSync >= this.flushBytes) {
        this.sinceSync = 0;
        // Wait on the sync before the one started now: writes go on while the disk catches up.
        const previous = this.syncing;
        this.syncing = this.handle.datasync();
        this.syncing.catch(() => undefined); // awaited by the next flush or close
        await previous;
      }
    }
  }

  async close(fsync: boolean): Promise<number> {
    try {
      await this.syncing;
      let seconds = 0;
      if (fsync) {
        const start = process.hrtime.bigint();
        await this.handle.sync();
        seconds = Number(process.hrtime.bigint() - start) / 1e9;
      }
      return seconds;
    } finally {
      await this.handle.close();
    }
  }

  async abort(): Promise<void> {
    await this.syncing.catch(() => undefined);
    await this.handle.close().catch(() => undefined);
  }
}

class NativeShardFile implements ShardFile {
  readonly path: string;

  constructor(
    private readonly addon: NativeAddon,
    private readonly writer: NativeShardWriter,
  ) {
    this.path = writer.path;
  }

  info(): { mode: Exclude<WriteMode, 'auto'>; fallback?: string } {
    return this.addon.shardWriterInfo(this.writer);
  }

  write(position: number, data: Uint8Array): Promise<void> {
    return this.addon.shardWrite(this.writer, position, data);
  }

  close(fsync: boolean): Promise<number> {
    return this.addon.closeShardWriter(this.writer, fsync);
  }

  async abort(): Promise<void> {
    await this.addon.abortShardWriter(this.writer).catch(() => undefined);
  }
}

function injectedRefusals(): NativeShardWriterOptions['refuse'] {
  if (writerTestHooks.refuse !== undefined) return writerTestHooks.refuse;
  const v = process.env.MODEL_STOCK_TEST_REFUSE_IO;
  if (v === undefined || v === '') return undefined;
  const known = ['direct', 'directWrite', 'syncFileRange'] as const;
  return v.split(',').map((s) => {
    const r = known.find((k) => k === s.trim());
    if (r === undefined)
      throw new Error(`MODEL_STOCK_TEST_REFUSE_IO: unknown call "${s}" (${known.join(', ')})`);
    return r;
  });
}

/** The mode `requested` resolves to here, and why it is not the one asked for. */
export function resolveWriteMode(requested: WriteMode): {
  mode: Exclude<WriteMode, 'auto'>;
  addon: NativeAddon | undefined;
  fallback?: string;
} {
  if (!WRITE_MODES.includes(requested)) {
    throw new ModelStockError(
      'BAD_CONFIG',
      `write mode must be one of ${WRITE_MODES.join(', ')}; got ${String(requested)}`,
    );
  }
  if (requested === 'node') return { mode: 'node', addon: undefined };
  const loaded = loadNativeAddon();
  if (loaded.addon === undefined) {
    if (requested !== 'auto') {
      throw new ModelStockError(
        'BACKEND_UNAVAILABLE',
        `write mode ${requested} needs the native addon, which did not load: ${loaded.reasons.join('; ')}`,
      );
    }
    return { mode: 'node', addon: undefined, fallback: 'the native addon did not load' };
  }
  return { mode: requested === 'auto' ? DEFAULT_NATIVE_MODE : requested, addon: loaded.addon };
}

/** Creates `path` (which must not exist) for a shard of `size` bytes, written in `mode`. */
export async function createShardFile(
  path: string,
  size: number,
  mode: WriteMode,
  blockBytes = writerTestHooks.blockBytes ?? BLOCK_BYTES,
): Promise<ShardFile> {
  const resolved = resolveWriteMode(mode);
  if (resolved.addon === undefined || resolved.mode === 'node')
    return NodeShardFile.open(path, resolved.fallback);
  const writer: NativeShardWriter | undefined = await resolved.addon.openShardWriter(path, size, {
    mode: resolved.mode,
    blockBytes,
    flushBytes: writerTestHooks.flushBytes ?? FLUSH_BYTES,
    refuse: injectedRefusals(),
  });
  if (writer === undefined) throw new Error('openShardWriter: the addon returned no handle');
  return new NativeShardFile(resolved.addon, writer);
}
