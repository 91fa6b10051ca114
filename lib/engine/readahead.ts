import type { PlanStep } from '../plan/plan';
import { inputsOf, mergedBytes, type TensorSource } from './context';
import { lowRankRanges } from './lowRankStep';

/**
 * Read-ahead for cold inputs. The steps after the current one are advised will-need, in every file they
 * read (base and fine-tunes), until AHEAD_BYTES of input lie hinted beyond the step now computing: the
 * kernel then reads the N+1 streams with deep queues while the kernels compute, instead of a compute
 * thread faulting (mmap) or waiting on (pread) each page as it is reached. Measured before: a cold
 * TinyLlama merge spent 57% of its samples faulting inside the Gram kernel, 1.7× the time to `cat` its
 * inputs cold.
 *
 * Hints are given one at a time, in step order (each is a worker thread submitting reads, and may block
 * while the device queue is full: more at once would only take libuv threads from the merge's own reads
 * and writes). Pages are never dropped: a second merge of the same inputs finds them cached.
 */

/** Input bytes hinted beyond the step computing now. */
export const AHEAD_BYTES = 256 << 20;

/** The byte ranges of its inputs step `s` reads: [tensor, start, length]. */
function rangesOf(s: PlanStep, gramOnly: boolean): [PlanStep['base'], number, number][] {
  if (s.action === 'copy') return gramOnly ? [] : [[s.base, 0, s.base.byteLength]];
  if (s.action === 'low-rank') return lowRankRanges(s, gramOnly);
  const ranges = inputsOf(s).map((t): [PlanStep['base'], number, number] => [t, 0, mergedBytes(s, t)]);
  const tail = s.base.byteLength - mergedBytes(s, s.base);
  if (!gramOnly && tail > 0) ranges.push([s.base, mergedBytes(s, s.base), tail]);
  return ranges;
}

export class ReadAhead {
  /** The first step not hinted yet. */
  private next = 0;
  /** prefix[i]: input bytes of steps 0 … i − 1 (hints are capped per range, so this bounds them). */
  private readonly prefix: number[];
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly steps: readonly PlanStep[],
    private readonly source: TensorSource,
    private readonly gramOnly: boolean,
    private readonly aheadBytes = AHEAD_BYTES,
  ) {
    this.prefix = [0];
    for (const s of steps) {
      const bytes = rangesOf(s, gramOnly).reduce((a, [, , n]) => a + Math.min(n, aheadBytes), 0);
      this.prefix.push(this.prefix[this.prefix.length - 1]! + bytes);
    }
  }

  /** Step `k` starts computing: hint it (when not yet) and the steps after it, up to the budget. */
  at(k: number): void {
    const willNeed = this.source.willNeed?.bind(this.source);
    if (willNeed === undefined) return;
    this.next = Math.max(this.next, k);
    while (
      this.next < this.steps.length &&
      (this.next <= k || this.prefix[this.next]! - this.prefix[k + 1]! < this.aheadBytes)
    ) {
      // A range larger than the budget (a windowed tensor) is hinted up to the budget; the kernel's own
      // sequential read-ahead follows the windows from there.
      for (const [tensor, start, length] of rangesOf(this.steps[this.next]!, this.gramOnly)) {
        const n = Math.min(length, this.aheadBytes);
        if (n > 0) this.chain = this.chain.then(() => willNeed(tensor, start, n));
      }
      this.next++;
    }
  }

  /** Settles once every hint given has settled (they never reject). */
  settled(): Promise<void> {
    return this.chain;
  }
}
