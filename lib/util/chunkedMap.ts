/**
 * Maps and sets keyed by tensor name that may reach millions of entries. A single Map rehashes in one
 * piece when it doubles: 50 ms for a Set and 75 ms for a Map at 2^20 entries on the development
 * machine, each a stall of the event loop. Spread over PARTS maps chosen by a hash of the key, each
 * rehash is PARTS times smaller. Iteration is in insertion order, as for a Map.
 */
const PARTS = 64;

/** A hash of at most 32 characters, spread over the whole name: names share long prefixes and suffixes. */
function part(key: string): number {
  const n = key.length;
  const step = n <= 32 ? 1 : Math.floor(n / 32);
  let h = n;
  for (let i = 0; i < n; i += step) h = (Math.imul(h, 31) + key.charCodeAt(i)) | 0;
  return (h ^ (h >>> 7)) & (PARTS - 1);
}

export class ChunkedMap<V> implements ReadonlyMap<string, V> {
  private readonly parts: Map<string, V>[] = Array.from({ length: PARTS }, () => new Map<string, V>());
  private readonly order: string[] = [];

  get size(): number {
    return this.order.length;
  }

  get(key: string): V | undefined {
    return (this.parts[part(key)] as Map<string, V>).get(key);
  }

  has(key: string): boolean {
    return (this.parts[part(key)] as Map<string, V>).has(key);
  }

  set(key: string, value: V): this {
    const p = this.parts[part(key)] as Map<string, V>;
    if (!p.has(key)) this.order.push(key);
    p.set(key, value);
    return this;
  }

  *keys(): MapIterator<string> {
    yield* this.order;
  }

  *values(): MapIterator<V> {
    for (const k of this.order) yield this.get(k) as V;
  }

  *entries(): MapIterator<[string, V]> {
    for (const k of this.order) yield [k, this.get(k) as V];
  }

  [Symbol.iterator](): MapIterator<[string, V]> {
    return this.entries();
  }

  forEach(fn: (value: V, key: string, map: ReadonlyMap<string, V>) => void): void {
    for (const k of this.order) fn(this.get(k) as V, k, this);
  }
}

export class ChunkedSet {
  private readonly parts: Set<string>[] = Array.from({ length: PARTS }, () => new Set<string>());
  private count = 0;

  get size(): number {
    return this.count;
  }

  has(key: string): boolean {
    return (this.parts[part(key)] as Set<string>).has(key);
  }

  /** Adds `key`; false when it was already there. */
  add(key: string): boolean {
    const p = this.parts[part(key)] as Set<string>;
    if (p.has(key)) return false;
    p.add(key);
    this.count++;
    return true;
  }
}

const LIST_CHUNK = 1 << 16;

/**
 * An append-only list for millions of items: growing one array copies it whole each time it fills
 * (up to 70 ms at a million items here), growing chunks of 64Ki items never does.
 */
export class ChunkedList<T> {
  private readonly chunks: T[][] = [[]];
  private count = 0;

  get length(): number {
    return this.count;
  }

  push(item: T): void {
    let last = this.chunks[this.chunks.length - 1] as T[];
    if (last.length === LIST_CHUNK) {
      last = [];
      this.chunks.push(last);
    }
    last.push(item);
    this.count++;
  }

  get(i: number): T {
    return (this.chunks[Math.floor(i / LIST_CHUNK)] as T[])[i % LIST_CHUNK] as T;
  }

  /** One array of every item, filled with checkpoints. */
  *toArray(): Generator<void, T[], void> {
    const out = new Array<T>(this.count);
    let i = 0;
    for (const chunk of this.chunks) {
      for (const item of chunk) out[i++] = item;
      yield;
    }
    return out;
  }
}
