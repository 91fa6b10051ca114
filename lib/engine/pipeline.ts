/**
 * The merge as a pipeline of tasks (a whole tensor, one window of a large one, a chunk of a copy), with
 * reading, computing and writing overlapped: while task k computes, the reader is already reading
 * tasks k+1, k+2, … (as far as the input ring holds, across tensor boundaries) and the outputs of k−1,
 * k−2, … are being written (as far as the output ring holds). Wall time then approaches the slowest of
 * the three instead of their sum; profile() says where the time went.
 *
 * Three loops share the work: the reader walks the tasks in order, sets aside ring space for each and
 * starts its reads (one batch per task: a direct source reads all its inputs at once on the addon's I/O
 * threads); the compute loop takes tasks in the same order, waits for their reads, takes output space,
 * runs them and hands what they produced to the write chain; writes run one after another, each
 * giving its buffers back when done. Ring space is the only back-pressure: a reader that gets ahead
 * waits for computed tasks to give their inputs back, a compute loop that gets ahead waits for writes.
 *
 * On any failure (a read, a kernel, a write, cancellation) the rings are closed, so nothing waits for
 * space any more, and everything started — reads into buffers, writes from them — settles before the
 * failure is rethrown: the caller may free the buffers and remove the output then.
 */
import { ModelStockError } from '../errors';
import type { TensorInfo } from '../checkpoint/types';
import type { TensorSink, TensorSource } from './context';
import { mappedWriteError, type RegionRead } from './io';
import { alignUp, type Ring, type RingSlice } from './ring';

/** A range of an input a task reads: tensor bytes [start, start + length). */
export interface TaskRead {
  readonly tensor: TensorInfo;
  readonly start: number;
  readonly length: number;
}

/** What a task writes: `data` at byte `offset` of output tensor `name`. */
export interface TaskWrite {
  readonly name: string;
  readonly offset: number;
  readonly data: Uint8Array;
  /** The input `data` is a view of (a copy written as read): a failure reading it is that input's. */
  readonly from?: TensorInfo;
}

export interface Task {
  /** Index of the plan step the task belongs to. */
  readonly step: number;
  /** The tensor, for progress. */
  readonly name: string;
  /** The reader starts this task's reads only once this settled (interpolation waits for its Gram pass). */
  readonly after?: Promise<unknown>;
  /** The ranges the task reads, asked for when the reader reaches it (after `after`). */
  readonly reads: () => readonly TaskRead[];
  /** Bytes of output run() fills (0: none). */
  readonly outBytes: number;
  /** Where that output goes (laid out like the file, it is written without a copy). */
  readonly outAt?: { readonly name: string; readonly offset: number };
  /** Computes; `inputs` in the order of reads(). Returns what to write, if anything. */
  readonly run: (
    inputs: readonly Uint8Array[],
    out: Uint8Array | undefined,
  ) => Promise<TaskWrite | undefined>;
  /** The last task of its step: the tensor is done once it ran. */
  readonly last: boolean;
}

/** Where a merge's time went, in seconds; the phases overlap, so they may add up to more than `seconds`. */
export interface PipelineProfile {
  /** Wall time of the pipeline: every tensor read, computed and written. */
  readonly seconds: number;
  /** Time at least one read was in flight. */
  readonly read: number;
  /** Time tasks computed (Gram pass, ratios, interpolation, conversions). */
  readonly compute: number;
  /** Time at least one write was in flight. */
  readonly write: number;
  /** Time the compute loop waited for reads. */
  readonly readWait: number;
  /** Time the compute loop waited for writes: for output space, and for the last writes at the end. */
  readonly writeWait: number;
}

export interface PipelineOptions {
  readonly source: TensorSource;
  readonly sink: TensorSink | undefined;
  /** Where reads land (undefined when every input is mapped: nothing is read into buffers). */
  readonly inRing: Ring | undefined;
  /** Where outputs are computed into (undefined when nothing is written). */
  readonly outRing: Ring | undefined;
  /** Throws CANCELLED once the merge's signal fired: checked before every task and write piece. */
  readonly checkCancelled: () => void;
  /** The merge's signal: a wait for reads, ring space or writes ends as soon as it fires. */
  readonly signal?: AbortSignal;
  /** A task starts computing. */
  readonly onTask: (task: Task, bytesRead: number) => void;
  /** A task computed (its write may still be in flight). */
  readonly onTaskDone: (task: Task) => void;
}

/** Tasks read ahead of the one computing, at most (ring space bounds the bytes). */
const MAX_AHEAD = 64;
/**
 * Writes are given in pieces of at most this size, WRITES_IN_FLIGHT at once, the next one only if the
 * pipeline has not failed meanwhile: the device has several requests of the output at once, and a
 * cancelled merge waits for those pieces, not for a whole tensor's output.
 */
const WRITE_PIECE = 8 << 20;
const WRITES_IN_FLIGHT = 4;
/** O_DIRECT's block: outputs are laid out at their file offset within one. */
const BLOCK = 4096;

/** A FIFO semaphore: at most `free` holders at once, served in the order they asked. */
class Slots {
  private readonly waiting: (() => void)[] = [];
  constructor(private free: number) {}

  acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  release(): void {
    const next = this.waiting.shift();
    if (next !== undefined) next();
    else this.free++;
  }
}
/** The event loop gets a turn at least this often (ms) between tasks, even when every task is quick. */
const YIELD_EVERY_MS = 10;

const now = (): number => performance.now() / 1000;
const noop = (): void => undefined;
const macrotask = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Seconds during which at least one tracked promise was pending. */
class Busy {
  private pending = 0;
  private since = 0;
  seconds = 0;

  track<T>(p: Promise<T>): Promise<T> {
    if (this.pending++ === 0) this.since = now();
    const done = (): void => {
      if (--this.pending === 0) this.seconds += now() - this.since;
    };
    p.then(done, done);
    return p;
  }
}

/** A task between the reader and the compute loop. */
interface Entry {
  readonly task: Task;
  readonly reads: readonly TaskRead[];
  readonly views: Uint8Array[];
  readonly slice: RingSlice | undefined;
  readonly read: Promise<void>;
}

/** The reader was told to stop (the pipeline failed): not an error of its own. */
const STOPPED = Symbol('stopped');

export function isMapped(source: TensorSource, t: TensorInfo): boolean {
  return source.view !== undefined && (source.maps?.(t) ?? true);
}

/**
 * Waits an event may interrupt. `Promise.race([p, late])` leaves a reaction on `late` per call until
 * `late` settles — one per wait of a pipeline of hundreds of thousands of tasks; this keeps only the
 * waits still pending.
 */
class Interrupt {
  private readonly pending = new Set<(reason: unknown) => void>();
  private fired: { readonly reason: unknown } | undefined;

  /** Rejects every pending and later wait with `reason`. */
  fire(reason: unknown): void {
    if (this.fired !== undefined) return;
    this.fired = { reason };
    for (const reject of this.pending) reject(reason);
    this.pending.clear();
  }

  /** Settles as `p` does, or rejects with the reason once fire() is called. */
  wait<T>(p: Promise<T>): Promise<T> {
    if (this.fired !== undefined) return Promise.reject(this.fired.reason);
    return new Promise<T>((resolve, reject) => {
      this.pending.add(reject);
      p.then(
        (v) => {
          this.pending.delete(reject);
          resolve(v);
        },
        (e: unknown) => {
          this.pending.delete(reject);
          reject(e);
        },
      );
    });
  }
}

/** Reads a batch: natively in one call where the source can, else range by range. */
function readBatch(source: TensorSource, batch: readonly RegionRead[]): Promise<void> {
  if (source.readRegions !== undefined) return source.readRegions(batch);
  return Promise.all(
    batch.map((r) => source.readInto(r.tensor, r.byteStart, r.region.subarray(r.head, r.head + r.length))),
  ).then(noop);
}

/** Runs `tasks` in order through the pipeline; resolves once every write is done. */
export async function runPipeline(tasks: Iterator<Task>, o: PipelineOptions): Promise<PipelineProfile> {
  const started = now();
  const reading = new Busy();
  const writing = new Busy();
  let compute = 0;
  let readWait = 0;
  let writeWait = 0;

  const queue: Entry[] = [];
  let readerDone = false;
  let failed = false;
  let wakeCompute: (() => void) | undefined;
  let wakeReader: (() => void) | undefined;
  /** The reader's waits: interrupted (with STOPPED) once the pipeline fails. */
  const stop = new Interrupt();
  const until = <T>(p: Promise<T>): Promise<T> => stop.wait(p);

  /** The compute loop's waits: interrupted once the signal fires. */
  const cancel = new Interrupt();
  const onAbort = (): void => cancel.fire(new Error('aborted'));
  if (o.signal?.aborted === true) onAbort();
  else o.signal?.addEventListener('abort', onAbort, { once: true });
  /** Waits for `p`, or throws CANCELLED as soon as the signal fires. */
  const orCancel = async <T>(p: Promise<T>): Promise<T> => {
    try {
      return await cancel.wait(p);
    } catch (e) {
      o.checkCancelled();
      throw e;
    }
  };

  const { source } = o;
  const read = async (): Promise<void> => {
    for (;;) {
      if (failed) return;
      const next = tasks.next();
      if (next.done === true) break;
      const task = next.value;
      if (task.after !== undefined) await until(task.after);
      while (queue.length >= MAX_AHEAD) await until(new Promise<void>((r) => (wakeReader = r)));
      const reads = task.reads();
      // One ring slice per task, each read's region at its alignment within it.
      const placed: { at: number; head: number; bytes: number }[] = [];
      let size = 0;
      let align = 64;
      for (const r of reads) {
        if (isMapped(source, r.tensor)) continue;
        const l = source.layout?.(r.tensor, r.start, r.length) ?? { head: 0, bytes: r.length, alignment: 64 };
        const at = alignUp(size, l.alignment);
        placed.push({ at, head: l.head, bytes: l.bytes });
        size = at + l.bytes;
        align = Math.max(align, l.alignment);
      }
      let slice: RingSlice | undefined;
      if (size > 0) {
        if (o.inRing === undefined) throw new Error('internal: a read into buffers without an input ring');
        slice = await until(o.inRing.take(size, align));
        if (failed) {
          slice.release();
          return;
        }
      }
      const views: Uint8Array[] = [];
      const batch: RegionRead[] = [];
      let k = 0;
      for (const r of reads) {
        if (isMapped(source, r.tensor)) {
          views.push(source.view!(r.tensor, r.start, r.length));
          continue;
        }
        const p = placed[k++]!;
        const region = slice!.bytes.subarray(p.at, p.at + p.bytes);
        views.push(region.subarray(p.head, p.head + r.length));
        batch.push({ tensor: r.tensor, byteStart: r.start, length: r.length, region, head: p.head });
      }
      const done = batch.length > 0 ? reading.track(readBatch(source, batch)) : Promise.resolve();
      done.catch(noop); // awaited by the compute loop, or settled on failure
      queue.push({ task, reads, views, slice, read: done });
      wakeCompute?.();
    }
    readerDone = true;
    wakeCompute?.();
  };
  /** The reader's own failure (not STOPPED), thrown by the compute loop once it has run what was read. */
  let readerFailed: { readonly error: unknown } | undefined;
  const reader = read().catch((e: unknown) => {
    if (e !== STOPPED) readerFailed = { error: e };
    wakeCompute?.();
  });

  /** Gives a task's inputs back: ring space, and mapped pages (which checks the mapping did not fault). */
  const releaseInputs = (e: Entry): void => {
    e.slice?.release();
    e.reads.forEach((r) => {
      if (isMapped(source, r.tensor)) source.release?.(r.tensor, r.start, r.length);
    });
  };

  /** Writes not yet settled (a failed one stays, to be thrown at the end). */
  const writes = new Set<Promise<void>>();
  const slots = new Slots(WRITES_IN_FLIGHT);
  let writeFailure: { error: unknown } | undefined;
  let current: Entry | undefined;
  let lastYield = now();
  try {
    for (;;) {
      if (writeFailure !== undefined) throw writeFailure.error;
      const entry = queue.shift();
      if (entry === undefined) {
        if (readerFailed !== undefined) throw readerFailed.error;
        if (readerDone) break;
        const t = now();
        await orCancel(new Promise<void>((r) => (wakeCompute = r)));
        readWait += now() - t;
        wakeCompute = undefined;
        continue;
      }
      current = entry;
      wakeReader?.();
      o.checkCancelled();
      let t = now();
      await orCancel(entry.read);
      readWait += now() - t;
      o.onTask(
        entry.task,
        entry.reads.reduce((a, r) => a + r.length, 0),
      );
      let out: RingSlice | undefined;
      let outBytes: Uint8Array | undefined;
      if (entry.task.outBytes > 0) {
        if (o.outRing === undefined) throw new Error('internal: an output without an output ring');
        // Laid out like the file, so a direct writer writes it without a copy.
        const at = entry.task.outAt;
        const head = at === undefined ? undefined : o.sink?.blockOffset?.(at.name, at.offset);
        t = now();
        out = await orCancel(
          head === undefined
            ? o.outRing.take(entry.task.outBytes)
            : o.outRing.take(head + entry.task.outBytes, BLOCK),
        );
        writeWait += now() - t;
        outBytes = out.bytes.subarray(head ?? 0, (head ?? 0) + entry.task.outBytes);
      }
      t = now();
      let w: TaskWrite | undefined;
      try {
        w = await entry.task.run(entry.views, outBytes);
      } catch (e) {
        out?.release();
        throw e;
      }
      compute += now() - t;
      current = undefined;
      // A copy written as read keeps its input until written.
      const keepsInputs = w !== undefined && entry.views.includes(w.data);
      if (!keepsInputs) releaseInputs(entry);
      if (w === undefined || o.sink === undefined) {
        out?.release();
      } else {
        const sink = o.sink;
        const write = w;
        const slice = out;
        const pieces: Promise<void>[] = [];
        for (let at = 0; at < Math.max(1, write.data.byteLength); at += WRITE_PIECE) {
          const piece = write.data.subarray(at, at + WRITE_PIECE);
          pieces.push(
            slots.acquire().then(async () => {
              try {
                if (failed) return;
                await writing.track(sink.write(write.name, write.offset + at, piece));
              } catch (e) {
                throw write.from === undefined ? e : mappedWriteError(e, write.from);
              } finally {
                slots.release();
              }
            }),
          );
        }
        const done = Promise.allSettled(pieces).then((results) => {
          slice?.release();
          if (keepsInputs) releaseInputs(entry);
          const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
          if (failure !== undefined) throw failure.reason;
        });
        done.catch((e: unknown) => (writeFailure ??= { error: e }));
        writes.add(done);
        void done.then(
          () => writes.delete(done),
          () => undefined,
        );
      }
      o.onTaskDone(entry.task);
      // Awaiting settled promises only runs microtasks: give timers and I/O callbacks a turn too.
      if (now() - lastYield >= YIELD_EVERY_MS / 1000) {
        await macrotask();
        lastYield = now();
      }
    }
    const t = now();
    await orCancel(Promise.all([...writes]));
    writeWait += now() - t;
    await reader;
  } catch (e) {
    failed = true;
    stop.fire(STOPPED);
    const reason = e instanceof ModelStockError ? e : new Error('the pipeline failed', { cause: e });
    o.inRing?.close(reason);
    o.outRing?.close(reason);
    // Let every read and write into the rings settle before the caller frees them.
    await reader.catch(noop);
    await Promise.allSettled([current?.read, ...queue.map((q) => q.read), ...writes]);
    throw e;
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
  }
  return {
    seconds: now() - started,
    read: reading.seconds,
    compute,
    write: writing.seconds,
    readWait,
    writeWait,
  };
}
