/**
 * Event-loop liveness: the largest gap between ticks of a 5 ms timer while some work runs. A library
 * inside a service must give the loop back often; a bound of 250 ms catches the multi-second stalls
 * of synchronous work on big inputs without turning tests into timing tests on a contended machine.
 */
import { strict as assert } from 'node:assert';

export const TICK_MS = 5;
/** What tests assert; the target (bench/) is 50 ms. */
export const MAX_GAP_MS = 250;

export interface Liveness<T> {
  readonly value: T;
  /** Largest time between consecutive ticks, counting the start and the end of the work as ticks. */
  readonly maxGapMs: number;
  readonly ticks: number;
  readonly elapsedMs: number;
}

/** Runs `work` with a 5 ms timer beside it. A rejection of `work` is passed on after the timer stops. */
export async function measureLiveness<T>(work: () => Promise<T>, tickMs = TICK_MS): Promise<Liveness<T>> {
  const start = performance.now();
  let last = start;
  let maxGapMs = 0;
  let ticks = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    maxGapMs = Math.max(maxGapMs, now - last);
    last = now;
    ticks++;
  }, tickMs);
  try {
    const value = await work();
    const end = performance.now();
    maxGapMs = Math.max(maxGapMs, end - last);
    return { value, maxGapMs, ticks, elapsedMs: end - start };
  } finally {
    clearInterval(timer);
  }
}

/** `work`'s value, after asserting that the loop never stalled for MAX_GAP_MS or more. */
export async function assertLive<T>(what: string, work: () => Promise<T>, maxGapMs = MAX_GAP_MS): Promise<T> {
  const r = await measureLiveness(work);
  assert.ok(
    r.maxGapMs < maxGapMs,
    `${what}: the event loop stalled for ${r.maxGapMs.toFixed(0)} ms (${r.ticks} ticks in ${r.elapsedMs.toFixed(0)} ms)`,
  );
  return r.value;
}
