/**
 * Read-ahead hints given and not yet settled: close() waits for them, so no hint outlives its file
 * descriptor or mapping, and a hint asked for after close() is not given (it would reopen a file nobody
 * closes). Hints are advice: they settle once given and never reject.
 */
export class Hints {
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
