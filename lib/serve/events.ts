/**
 * A job's event stream while it is not finished: ids from 1 per job, each event sent to the clients
 * listening as it happens. Progress and warnings wait in `pending` until the next flush (at most once a
 * second; a flush keeps every warning and only the last progress); a state change is committed with
 * whatever is pending before any client hears of it.
 */
import type { EventType, JobEvent, Progress } from './store';

export type Listener = (e: JobEvent) => void;

export class JobFeed {
  private lastId: number;
  private pending: JobEvent[] = [];
  private readonly listeners = new Set<Listener>();

  constructor(
    readonly seq: number,
    /** The id of the job's last persisted event. */
    lastId: number,
  ) {
    this.lastId = lastId;
  }

  /** A progress or warning event: heard now, persisted at the next flush. */
  emit(type: EventType, data: unknown): void {
    const e: JobEvent = { id: ++this.lastId, type, data };
    this.pending.push(e);
    this.publish(e);
  }

  /**
   * A state change: `persist` commits it with the pending events (thinned), then the listeners hear
   * it. If `persist` throws, nothing was sent and the id is not used.
   */
  commit(type: EventType, data: unknown, persist: (events: JobEvent[]) => void): void {
    const e: JobEvent = { id: this.lastId + 1, type, data };
    persist([...this.takePendingPreview(), e]);
    this.lastId = e.id;
    this.pending = [];
    this.publish(e);
  }

  /** What a flush persists: every pending event but the progress ones before the last progress. */
  takePending(): JobEvent[] {
    const events = this.takePendingPreview();
    this.pending = [];
    return events;
  }

  /** The last pending progress, if any (a flush also writes it into the job's row). */
  lastPendingProgress(): Progress | undefined {
    for (let i = this.pending.length - 1; i >= 0; i--) {
      const e = this.pending[i]!;
      if (e.type === 'progress') return e.data as Progress;
    }
    return undefined;
  }

  /** Events not yet persisted with ids above `after` (a resuming client gets them after the stored ones). */
  pendingAfter(after: number): JobEvent[] {
    return this.pending.filter((e) => e.id > after);
  }

  listen(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private takePendingPreview(): JobEvent[] {
    let lastProgress = -1;
    for (const [i, e] of this.pending.entries()) if (e.type === 'progress') lastProgress = i;
    return this.pending.filter((e, i) => e.type !== 'progress' || i === lastProgress);
  }

  private publish(e: JobEvent): void {
    for (const l of [...this.listeners]) l(e);
  }
}

/**
 * At most one progress event per `intervalMs`: the latest value is sent when the interval allows,
 * so the last one before a job ends is never lost (`drain`).
 */
export class ProgressThrottle {
  private latest: Progress | undefined;
  private lastSent = -Infinity;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly intervalMs: number,
    private readonly send: (p: Progress) => void,
    private readonly now: () => number = () => performance.now(),
  ) {}

  update(p: Progress): void {
    this.latest = p;
    if (this.timer !== undefined) return;
    const wait = this.lastSent + this.intervalMs - this.now();
    if (wait <= 0) this.sendLatest();
    else this.timer = setTimeout(() => this.sendLatest(), wait);
  }

  /** Sends the unsent latest value once the interval allows; no further sends after it. */
  async drain(): Promise<void> {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
      const wait = this.lastSent + this.intervalMs - this.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      this.sendLatest();
    }
    this.latest = undefined;
  }

  /** Drops any unsent value (a job that failed or was cancelled). */
  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.latest = undefined;
  }

  private sendLatest(): void {
    this.timer = undefined;
    const p = this.latest;
    if (p === undefined) return;
    this.latest = undefined;
    this.lastSent = this.now();
    this.send(p);
  }
}
