/**
 * Tensor buffers are carved from one preallocated arena per pipeline slot, so a merge's memory is
 * fixed up front (the `memory` budget) instead of growing with the largest tensor, and nothing is
 * handed to the garbage collector per tensor. The memory comes from the backend (aligned host memory
 * from the addon; pinned memory for a device) and goes back to it when the merge is done.
 */
const ALIGN = 64;

export const alignUp = (n: number, a = ALIGN): number => Math.ceil(n / a) * a;

export interface HostAllocator {
  allocHost(bytes: number): Uint8Array;
  freeHost(buffer: Uint8Array): void;
}

export class Arena {
  private buffer: Uint8Array | undefined;
  private used = 0;

  constructor(
    readonly capacity: number,
    private readonly allocator: HostAllocator,
  ) {}

  /** Forget every view handed out; the next take() starts at the arena's beginning. */
  reset(): void {
    this.used = 0;
  }

  /** A view of `size` bytes, 64-byte aligned within the arena. */
  take(size: number): Uint8Array {
    const start = alignUp(this.used);
    if (start + size > this.capacity) {
      throw new Error(`internal: arena of ${this.capacity} bytes cannot hold ${size} more after ${start}`);
    }
    this.buffer ??= this.allocator.allocHost(this.capacity);
    this.used = start + size;
    return this.buffer.subarray(start, start + size);
  }

  /** Returns the memory to its allocator; views handed out become empty. */
  dispose(): void {
    if (this.buffer !== undefined) this.allocator.freeHost(this.buffer);
    this.buffer = undefined;
    this.used = 0;
  }

  /** Bytes needed to take() all of `sizes` from an empty arena. */
  static footprint(sizes: readonly number[]): number {
    let used = 0;
    for (const s of sizes) used = alignUp(used) + s;
    return used;
  }
}
