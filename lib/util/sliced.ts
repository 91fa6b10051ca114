/**
 * Work proportional to the number of tensors (headers of up to 100 MB, a million-tensor plan or report)
 * must not hold the event loop: a library inside a service shares the loop with everything else.
 *
 * Such work is written once, as a generator that `yield`s at cheap checkpoints (every few thousand
 * items). `runSliced` drives it on the event loop and gives the loop back (setImmediate, so timers and
 * I/O run) whenever a slice has run for SLICE_MS; `runSync` drives the same code straight through, for
 * callers that need a synchronous answer on small inputs. A checkpoint costs a generator resume (tens
 * of ns) and a clock read only in the async driver, so small inputs finish in their first slice at
 * essentially the cost of plain loops.
 */
export type Sliced<T> = Generator<void, T, void>;

/** Longest a slice runs before the loop gets a turn: well under the 50 ms worst-gap target. */
export const SLICE_MS = 8;

/** Items between checkpoints in loops whose items cost well under a microsecond each. */
export const CHECK_EVERY = 1024;

export function runSync<T>(work: Sliced<T>): T {
  for (;;) {
    const r = work.next();
    if (r.done === true) return r.value;
  }
}

export async function runSliced<T>(work: Sliced<T>, sliceMs = SLICE_MS): Promise<T> {
  let sliceStart = performance.now();
  for (;;) {
    const r = work.next();
    if (r.done === true) return r.value;
    if (performance.now() - sliceStart >= sliceMs) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      sliceStart = performance.now();
    }
  }
}

/** `fn` over 0..count−1 with a checkpoint every CHECK_EVERY items. */
export function* forEachSliced(count: number, fn: (i: number) => void): Sliced<void> {
  for (let i = 0; i < count; i++) {
    fn(i);
    if (i % CHECK_EVERY === CHECK_EVERY - 1) yield;
  }
}

/** `items.map(fn)` with a checkpoint every CHECK_EVERY items. */
export function* mapSliced<T, U>(items: readonly T[], fn: (item: T) => U): Sliced<U[]> {
  const out = new Array<U>(items.length);
  for (let i = 0; i < items.length; i++) {
    out[i] = fn(items[i] as T);
    if (i % CHECK_EVERY === CHECK_EVERY - 1) yield;
  }
  return out;
}

/**
 * A stable sort of the indices 0..count−1 by `compare` (a bottom-up merge sort), with checkpoints:
 * Array.prototype.sort on a million items holds the loop for about a second.
 */
export function* sortIndices(count: number, compare: (a: number, b: number) => number): Sliced<Uint32Array> {
  let from = new Uint32Array(count);
  for (let i = 0; i < count; i++) from[i] = i;
  if (count < 2) return from;
  let to = new Uint32Array(count);
  let sinceCheck = 0;
  for (let width = 1; width < count; width *= 2) {
    for (let lo = 0; lo < count; lo += 2 * width) {
      const mid = Math.min(lo + width, count);
      const hi = Math.min(lo + 2 * width, count);
      let i = lo;
      let j = mid;
      for (let k = lo; k < hi; k++) {
        const a = from[i] as number;
        const b = from[j] as number;
        // `<= 0` takes from the left run on ties: that is what keeps the sort stable.
        if (i < mid && (j >= hi || compare(a, b) <= 0)) {
          to[k] = a;
          i++;
        } else {
          to[k] = b;
          j++;
        }
        if (++sinceCheck === 16 * CHECK_EVERY) {
          sinceCheck = 0;
          yield;
        }
      }
    }
    [from, to] = [to, from];
  }
  return from;
}
