/**
 * Writes the shards a ShardLayout planned. Headers go first, then tensor bytes by positional writes,
 * so tensors (and windows of one tensor) may be written in any order and concurrently while the next
 * ones are computed. How bytes reach the disk (bounded dirty data, O_DIRECT) is shardFile.ts's.
 * Atomicity (temp folder + rename) is the caller's: this writes into `dir` as is.
 */
import { open, unlink, type FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import { isModelStockError, ModelStockError } from '../errors';
import { indexJsonPieces } from './layout';
import { ChunkedMap } from '../util/chunkedMap';
import { CHECK_EVERY, runSliced, type Sliced } from '../util/sliced';
import { INDEX_FILE } from './format';
import { createShardFile, weakerMode, type ShardFile, type WriteMode, type WriteReport } from './shardFile';
import type { ShardLayout } from './types';

/** fs writes are capped at 2 GiB − 1 bytes per call (libuv); stay well below. */
const MAX_WRITE_CALL = 1 << 30;

interface Target {
  readonly shard: number;
  /** Absolute offset of the tensor's first byte in its shard. */
  readonly offset: number;
  readonly byteLength: number;
  /** Byte ranges [start, end) handed to write(), sorted and merged: a later write may not overlap them. */
  readonly claimed: [number, number][];
  /** Byte ranges [start, end) written, sorted and merged. */
  readonly written: [number, number][];
}

export class SafetensorsWriter {
  private readonly pending = new Set<Promise<void>>();
  private state: 'open' | 'finishing' | 'done' = 'open';
  /** Each shard's header write, started with the shard's first tensor bytes (or at finish()). */
  private readonly headers: (Promise<void> | undefined)[] = [];

  private constructor(
    private readonly dir: string,
    private readonly layout: ShardLayout,
    private readonly files: ShardFile[],
    private readonly paths: string[],
    private readonly requested: WriteMode,
    private readonly targets: ReadonlyMap<string, Target>,
  ) {}

  /**
   * Creates every shard file in `dir` (which must exist; files must not). `mode` (default auto) says how
   * bytes reach the disk, `blockBytes` the size of direct writes' staging blocks (shardFile.ts). Each
   * header is written when its shard's first tensor bytes are: a direct writer stages the block a
   * header starts until the tensors after it fill it, and shards are filled one after another, so
   * only one or two such blocks are held at a time, not one per shard.
   */
  static async create(
    dir: string,
    layout: ShardLayout,
    opts: { mode?: WriteMode; blockBytes?: number } = {},
  ): Promise<SafetensorsWriter> {
    const requested = opts.mode ?? 'auto';
    const targets = await runSliced(targetsOf(layout));
    const files: ShardFile[] = [];
    const paths: string[] = [];
    try {
      for (const shard of layout.shards) {
        const file = path.join(dir, shard.fileName);
        const shardFile = await createShardFile(file, shard.size, requested, opts.blockBytes).catch(
          (cause: unknown) => {
            throw ioFailure(file, undefined, 'cannot create', cause);
          },
        );
        files.push(shardFile);
        paths.push(file);
      }
    } catch (e) {
      // No writer exists yet for the caller to abort: undo what was created here (our new files only:
      // creation refuses a path that exists).
      await Promise.all(files.map((f) => f.abort()));
      await Promise.all(paths.map((p) => unlink(p).catch(() => undefined)));
      throw e;
    }
    return new SafetensorsWriter(dir, layout, files, paths, requested, targets);
  }

  /** Writes `data` at `byteOffsetInTensor` within tensor `name`. Calls may overlap in time. */
  write(name: string, byteOffsetInTensor: number, data: Uint8Array): Promise<void> {
    if (this.state !== 'open')
      return Promise.reject(new Error(`write of "${name}" after finish() or abort()`));
    const target = this.targets.get(name);
    if (target === undefined)
      return Promise.reject(new Error(`write of "${name}", which is not in the layout`));
    if (
      !Number.isSafeInteger(byteOffsetInTensor) ||
      byteOffsetInTensor < 0 ||
      byteOffsetInTensor + data.byteLength > target.byteLength
    ) {
      return Promise.reject(
        new RangeError(
          `tensor "${name}": write of ${data.byteLength} bytes at ${byteOffsetInTensor} is outside its ${target.byteLength} bytes`,
        ),
      );
    }
    const start = byteOffsetInTensor;
    const end = start + data.byteLength;
    if (target.claimed.some(([a, b]) => a < end && start < b)) {
      // Bytes are written once: staged O_DIRECT blocks count them, and a rewrite would race the first.
      return Promise.reject(
        new RangeError(`tensor "${name}": write of bytes [${start}, ${end}) overlaps bytes already written`),
      );
    }
    markWritten(target.claimed, start, end);
    const shardFile = this.files[target.shard] as ShardFile;
    const file = this.paths[target.shard] as string;
    const p = this.header(target.shard).then(() =>
      shardFile.write(target.offset + start, data).then(
        () => markWritten(target.written, start, end),
        (cause: unknown) => {
          throw ioFailure(file, name, undefined, cause);
        },
      ),
    );
    return this.track(p);
  }

  /** Where byte `byteOffsetInTensor` of `name` lies within a 4 KiB block of its shard. */
  blockOffset(name: string, byteOffsetInTensor: number): number {
    const target = this.targets.get(name);
    return target === undefined ? 0 : (target.offset + byteOffsetInTensor) % 4096;
  }

  private track(p: Promise<void>): Promise<void> {
    this.pending.add(p);
    const forget = () => this.pending.delete(p);
    p.then(forget, forget);
    return p;
  }

  /** Shard `shard`'s header, written once. */
  private header(shard: number): Promise<void> {
    let p = this.headers[shard];
    if (p === undefined) {
      const file = this.paths[shard] as string;
      p = this.track(
        (this.files[shard] as ShardFile)
          .write(0, this.layout.shards[shard]!.header)
          .catch((cause: unknown) => {
            throw ioFailure(file, undefined, 'cannot write the header', cause);
          }),
      );
      this.headers[shard] = p;
    }
    return p;
  }

  /** How the shards are being written: the weakest mode any shard has now. */
  writeReport(fsyncSeconds = 0): WriteReport {
    const infos = this.files.map((f) => f.info());
    const mode = infos.map((i) => i.mode).reduce(weakerMode, infos[0]?.mode ?? 'node');
    const fallback = infos.find((i) => i.fallback !== undefined)?.fallback;
    return {
      mode,
      requested: this.requested,
      ...(fallback === undefined ? {} : { fallback }),
      fsyncSeconds,
    };
  }

  /**
   * Checks that every byte of every tensor was written, syncs (unless `fsync: false`) and closes the
   * shards, then writes the index when there are several shards. Returns how the shards were written.
   */
  async finish(opts: { fsync?: boolean } = {}): Promise<WriteReport> {
    if (this.state !== 'open') throw new Error('finish() called twice or after abort()');
    this.state = 'finishing';
    const fsync = opts.fsync ?? true;
    try {
      await Promise.allSettled([...this.pending]);
      // Headers of shards no tensor byte was written to (every tensor empty) are written now.
      for (let shard = 0; shard < this.files.length; shard++) await this.header(shard);
      const incomplete = await runSliced(unwritten(this.targets));
      if (incomplete.length > 0) {
        // The engine skipped a window: writing a file with holes of zeros would be silent corruption.
        const shown = incomplete
          .slice(0, 5)
          .map((n) => `"${n}"`)
          .join(', ');
        const more = incomplete.length > 5 ? ` and ${incomplete.length - 5} more` : '';
        throw new Error(`bug: tensor bytes never written for ${shown}${more}`);
      }
      const report = this.writeReport();
      let fsyncSeconds = 0;
      // One at a time: each close waits for its file's last flush and fsync.
      while (this.files.length > 0) {
        const shardFile = this.files[0] as ShardFile;
        fsyncSeconds += await shardFile.close(fsync).catch((cause: unknown) => {
          throw ioFailure(shardFile.path, undefined, fsync ? 'fsync or close failed' : 'close failed', cause);
        });
        this.files.shift();
      }
      if (this.layout.shards.length > 1) await this.writeIndex(fsync);
      if (fsync) await syncDir(this.dir);
      this.state = 'done';
      return { ...report, fsyncSeconds };
    } catch (e) {
      await this.abort();
      throw e;
    }
  }

  /** Closes every file without throwing; the partial files are left for the caller to remove. */
  async abort(): Promise<void> {
    this.state = 'done';
    await Promise.allSettled([...this.pending]);
    const files = this.files.splice(0);
    await Promise.all(files.map((f) => f.abort()));
  }

  private async writeIndex(fsync: boolean): Promise<void> {
    const file = path.join(this.dir, INDEX_FILE);
    const pieces = await indexJsonPieces(this.layout);
    const handle = await open(file, 'wx').catch((cause: unknown) => rethrowIo(file, 'cannot create', cause));
    try {
      // Written piece by piece: a million-tensor index is ~60 MB, too much to encode in one go.
      let position = 0;
      for (const piece of pieces) {
        const bytes = Buffer.from(piece);
        await writeFully(handle, bytes, position, file);
        position += bytes.byteLength;
      }
      if (fsync) await handle.sync().catch((cause: unknown) => rethrowIo(file, 'fsync failed', cause));
    } finally {
      await handle.close().catch(() => undefined);
    }
  }
}

/** Where each tensor goes. Tensors are contiguous in plan order, so each byteLength is the gap to the next offset. */
function* targetsOf(layout: ShardLayout): Sliced<ReadonlyMap<string, Target>> {
  const targets = new ChunkedMap<Target>();
  for (let shard = 0; shard < layout.shards.length; shard++) {
    const s = layout.shards[shard] as ShardLayout['shards'][number];
    let end = s.header.byteLength;
    for (let i = 0; i < s.tensors.length; i++) {
      if (i % CHECK_EVERY === CHECK_EVERY - 1) yield;
      const name = s.tensors[i] as string;
      const next = s.tensors[i + 1];
      const nextOffset = next === undefined ? s.size : layout.placement.get(next)?.offset;
      const here = layout.placement.get(name)?.offset;
      if (here === undefined || nextOffset === undefined)
        throw new Error(`layout has no placement for "${name}"`);
      end = nextOffset;
      targets.set(name, { shard, offset: here, byteLength: nextOffset - here, claimed: [], written: [] });
    }
    if (end !== s.size) throw new Error(`layout of ${s.fileName} is inconsistent`);
  }
  return targets;
}

/** Tensors with bytes never written. */
function* unwritten(targets: ReadonlyMap<string, Target>): Sliced<string[]> {
  const incomplete: string[] = [];
  let i = 0;
  for (const [name, t] of targets) {
    if (++i % CHECK_EVERY === 0) yield;
    const [first] = t.written;
    const complete =
      t.byteLength === 0 || (t.written.length === 1 && first?.[0] === 0 && first[1] === t.byteLength);
    if (!complete) incomplete.push(name);
  }
  return incomplete;
}

async function writeFully(
  handle: FileHandle,
  data: Uint8Array,
  position: number,
  file: string,
): Promise<void> {
  let done = 0;
  while (done < data.byteLength) {
    const length = Math.min(data.byteLength - done, MAX_WRITE_CALL);
    let bytesWritten: number;
    try {
      ({ bytesWritten } = await handle.write(data, done, length, position + done));
    } catch (cause) {
      throw ioFailure(file, undefined, `write failed at byte ${position + done}`, cause);
    }
    done += bytesWritten;
  }
}

/** Inserts [start, end) into sorted, merged ranges. */
function markWritten(ranges: [number, number][], start: number, end: number): void {
  if (start === end) return;
  let lo = start;
  let hi = end;
  const kept: [number, number][] = [];
  for (const r of ranges) {
    if (r[1] < lo || r[0] > hi) kept.push(r);
    else {
      lo = Math.min(lo, r[0]);
      hi = Math.max(hi, r[1]);
    }
  }
  kept.push([lo, hi]);
  kept.sort((a, b) => a[0] - b[0]);
  ranges.splice(0, ranges.length, ...kept);
}

/** Makes the new directory entries durable; not every platform can open a directory, so best effort. */
async function syncDir(dir: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch {
    // Windows cannot fsync a directory; the files themselves are synced.
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

function rethrowIo(file: string, what: string, cause: unknown): never {
  throw ioFailure(file, undefined, what, cause);
}

/**
 * A failure of `file` (and `tensor`) as a ModelStockError naming them. The native writer's own codes are
 * kept (INVALID_ARGUMENT: a broken call order; NATIVE_ERROR: out of memory); everything else is IO_ERROR.
 */
function ioFailure(
  file: string,
  tensor: string | undefined,
  what: string | undefined,
  cause: unknown,
): ModelStockError {
  const message = cause instanceof Error ? cause.message : String(cause);
  const code = isModelStockError(cause) && cause.code !== 'IO_ERROR' ? cause.code : 'IO_ERROR';
  return new ModelStockError(code, what === undefined ? message : `${what}: ${message}`, {
    file,
    ...(tensor === undefined ? {} : { tensor }),
    cause,
  });
}
