/**
 * Tensor buffers are carved from one preallocated arena per pipeline slot, so a merge's memory is
 * fixed up front (the `memory` budget) instead of growing with the largest tensor, and nothing is
 * handed to the garbage collector per tensor.
 */
const ALIGN = 64;

export const alignUp = (n: number, a = ALIGN): number => Math.ceil(n / a) * a;

export class Arena {
  private buffer: Buffer | undefined;
  private used = 0;

  constructor(readonly capacity: number) {}

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
    this.buffer ??= Buffer.allocUnsafeSlow(this.capacity);
    this.used = start + size;
    return new Uint8Array(this.buffer.buffer, this.buffer.byteOffset + start, size);
  }

  /** Bytes needed to take() all of `sizes` from an empty arena. */
  static footprint(sizes: readonly number[]): number {
    let used = 0;
    for (const s of sizes) used = alignUp(used) + s;
    return used;
  }
}
