/**
 * Host memory the pipeline's buffers are cut from, in the order they are needed: a ring. The memory is
 * fixed up front (its share of the `memory` budget) instead of growing with the largest tensor, it
 * comes from the backend (aligned host memory from the addon; pinned memory for a device) and nothing is
 * handed to the garbage collector per tensor.
 *
 * Slices are taken in order and usually given back in order (a step's inputs once it computed, its
 * output once written); one given back early is reused once every slice before it is back too. A take
 * that does not fit waits — behind every earlier waiter, so a large request is never starved by small
 * ones — until enough comes back: that wait is the pipeline's back-pressure.
 */

export interface HostAllocator {
  allocHost(bytes: number): Uint8Array;
  freeHost(buffer: Uint8Array): void;
}

export interface RingSlice {
  readonly bytes: Uint8Array;
  /** Gives the slice back; its bytes may be handed out again. Safe to call twice. */
  release(): void;
}

interface Entry {
  readonly start: number;
  readonly end: number;
  freed: boolean;
}

interface Waiter {
  readonly size: number;
  readonly align: number;
  readonly resolve: (s: RingSlice) => void;
  readonly reject: (e: unknown) => void;
}

export const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

export class Ring {
  private buffer: Uint8Array | undefined;
  /** Live slices in the order taken (ring order). */
  private readonly entries: Entry[] = [];
  private readonly waiters: Waiter[] = [];
  private closedWith: unknown;
  private closed = false;
  /** The most bytes in use at once (tests, the profile). */
  peak = 0;

  constructor(
    readonly capacity: number,
    private readonly allocator: HostAllocator,
  ) {}

  /** `size` bytes whose offset in the ring is a multiple of `align` (the ring itself is host-aligned). */
  take(size: number, align = 64): Promise<RingSlice> {
    if (this.closed) return Promise.reject(this.closedWith);
    if (size > this.capacity) {
      return Promise.reject(
        new Error(`internal: a ring of ${this.capacity} bytes cannot hold a slice of ${size}`),
      );
    }
    if (this.waiters.length === 0) {
      const slice = this.tryTake(size, align);
      if (slice !== undefined) return Promise.resolve(slice);
    }
    return new Promise((resolve, reject) => this.waiters.push({ size, align, resolve, reject }));
  }

  /** Bytes in slices not yet given back (gaps skipped at the end of the ring included). */
  inUse(): number {
    const first = this.entries[0];
    const last = this.entries[this.entries.length - 1];
    if (first === undefined || last === undefined) return 0;
    return last.end > first.start ? last.end - first.start : this.capacity - first.start + last.end;
  }

  /** Rejects every waiter and every later take with `reason` (the pipeline failed). */
  close(reason: unknown): void {
    if (this.closed) return;
    this.closed = true;
    this.closedWith = reason;
    for (const w of this.waiters.splice(0)) w.reject(reason);
  }

  /** Returns the memory to its allocator. Nothing may still use a slice. */
  dispose(): void {
    if (this.buffer !== undefined) this.allocator.freeHost(this.buffer);
    this.buffer = undefined;
    this.entries.length = 0;
  }

  private tryTake(size: number, align: number): RingSlice | undefined {
    const start = this.placement(size, align);
    if (start === undefined) return undefined;
    this.buffer ??= this.allocator.allocHost(this.capacity);
    const entry: Entry = { start, end: start + size, freed: false };
    this.entries.push(entry);
    this.peak = Math.max(this.peak, this.inUse());
    const bytes = this.buffer.subarray(start, start + size);
    return { bytes, release: () => this.give(entry) };
  }

  /** Where a slice fits after the newest one, wrapping to the start; undefined when it does not yet. */
  private placement(size: number, align: number): number | undefined {
    const first = this.entries[0];
    const last = this.entries[this.entries.length - 1];
    if (first === undefined || last === undefined) return size <= this.capacity ? 0 : undefined;
    if (last.start >= first.start) {
      // Not wrapped: free space after the newest slice, then before the oldest.
      const after = alignUp(last.end, align);
      if (after + size <= this.capacity) return after;
      return size <= first.start ? 0 : undefined;
    }
    const after = alignUp(last.end, align);
    return after + size <= first.start ? after : undefined;
  }

  private give(entry: Entry): void {
    if (entry.freed) return;
    entry.freed = true;
    while (this.entries.length > 0 && this.entries[0]!.freed) this.entries.shift();
    while (this.waiters.length > 0) {
      const w = this.waiters[0]!;
      const slice = this.tryTake(w.size, w.align);
      if (slice === undefined) break;
      this.waiters.shift();
      w.resolve(slice);
    }
  }
}
