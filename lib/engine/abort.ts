/**
 * An AbortSignal as native code can see it: element 0 of a shared Int32Array becomes 1 when the signal
 * fires. Native jobs check it between blocks (kernels) and chunks (reads), so a cancelled merge stops
 * within one block per thread whatever the tensor size. One flag per merge, never process-wide.
 */
export class AbortFlag {
  readonly flag: Int32Array | undefined;
  private readonly onAbort: (() => void) | undefined;

  constructor(private readonly signal: AbortSignal | undefined) {
    if (signal === undefined) return;
    const flag = new Int32Array(new SharedArrayBuffer(4));
    this.flag = flag;
    this.onAbort = () => Atomics.store(flag, 0, 1);
    if (signal.aborted) this.onAbort();
    else signal.addEventListener('abort', this.onAbort, { once: true });
  }

  /** Stops listening (a long-lived signal must not keep every merge it served). */
  dispose(): void {
    if (this.onAbort !== undefined) this.signal?.removeEventListener('abort', this.onAbort);
  }
}
