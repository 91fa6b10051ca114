/**
 * Plans the output files before any tensor is computed: which shard holds each tensor, every
 * shard's complete header, and each tensor's absolute offset, so tensors can be written in any order
 * and concurrently.
 */
import { ModelStockError } from '../errors';
import { dtypeBits } from '../dtype';
import type { ShardLayout, TensorLayoutEntry } from './types';
import { ChunkedMap, ChunkedSet } from '../util/chunkedMap';
import { CHECK_EVERY, runSliced, runSync, sortIndices, type Sliced } from '../util/sliced';

export const DEFAULT_FORMAT_METADATA: Readonly<Record<string, string>> = { format: 'pt' };

export interface PlanOptions {
  /** Most tensor-data bytes per shard (headers not counted, as in HF/mergekit). */
  shardSize: number;
  /** Merged over `{"format":"pt"}` (transformers refuses to load files whose format is not "pt"). */
  metadata?: Record<string, string>;
}

export function planShards(entries: readonly TensorLayoutEntry[], opts: PlanOptions): ShardLayout {
  return runSync(layoutSteps(entries, opts));
}

/** `planShards` in slices of a few ms, for millions of tensors. */
export function planShardsSliced(
  entries: readonly TensorLayoutEntry[],
  opts: PlanOptions,
): Promise<ShardLayout> {
  return runSliced(layoutSteps(entries, opts));
}

function* layoutSteps(entries: readonly TensorLayoutEntry[], opts: PlanOptions): Sliced<ShardLayout> {
  if (!(opts.shardSize > 0)) throw new RangeError(`shardSize must be positive, got ${opts.shardSize}`);
  const names = new ChunkedSet();
  for (let i = 0; i < entries.length; i++) {
    if (i % CHECK_EVERY === CHECK_EVERY - 1) yield;
    const e = entries[i] as TensorLayoutEntry;
    if (!names.add(e.name))
      throw new ModelStockError('DUPLICATE_KEY', 'output has this tensor twice', { tensor: e.name });
    checkEntry(e);
  }

  // Greedy, in the given order: a tensor that would push the shard past shardSize opens a new one;
  // a tensor bigger than shardSize on its own gets a shard to itself.
  const groups: TensorLayoutEntry[][] = [];
  let current: TensorLayoutEntry[] = [];
  let currentBytes = 0;
  for (let i = 0; i < entries.length; i++) {
    if (i % CHECK_EVERY === CHECK_EVERY - 1) yield;
    const e = entries[i] as TensorLayoutEntry;
    if (current.length > 0 && currentBytes + e.byteLength > opts.shardSize) {
      groups.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(e);
    currentBytes += e.byteLength;
  }
  groups.push(current);

  const metadata = { ...DEFAULT_FORMAT_METADATA, ...opts.metadata };
  const placement = new ChunkedMap<{ shard: number; offset: number }>();
  let totalSize = 0;
  const shards: ShardLayout['shards'][number][] = [];
  for (let shard = 0; shard < groups.length; shard++) {
    const group = groups[shard] as TensorLayoutEntry[];
    const fileName = groups.length === 1 ? 'model.safetensors' : shardFileName(shard + 1, groups.length);
    const header = yield* encodeHeader(group, metadata);
    const tensors = new Array<string>(group.length);
    let begin = 0;
    for (let i = 0; i < group.length; i++) {
      if (i % CHECK_EVERY === CHECK_EVERY - 1) yield;
      const e = group[i] as TensorLayoutEntry;
      placement.set(e.name, { shard, offset: header.byteLength + begin });
      tensors[i] = e.name;
      begin += e.byteLength;
    }
    totalSize += begin;
    shards.push({ fileName, header, tensors, size: header.byteLength + begin });
  }
  return { shards, placement, totalSize };
}

/** HF's shard naming: model-00001-of-00003.safetensors. */
export function shardFileName(index: number, count: number): string {
  const pad = (n: number) => String(n).padStart(5, '0');
  return `model-${pad(index)}-of-${pad(count)}.safetensors`;
}

/** `model.safetensors.index.json` as transformers writes it: indent 2, weight_map keys sorted. */
export function indexJson(layout: ShardLayout): string {
  return runSync(indexJsonSteps(layout)).join('');
}

/** `indexJson` in pieces of a few thousand lines, made in slices of a few ms. */
export function indexJsonPieces(layout: ShardLayout): Promise<string[]> {
  return runSliced(indexJsonSteps(layout));
}

function* indexJsonSteps(layout: ShardLayout): Sliced<string[]> {
  const names: string[] = [];
  for (const shard of layout.shards) {
    for (let i = 0; i < shard.tensors.length; i++) {
      if (i % CHECK_EVERY === CHECK_EVERY - 1) yield;
      names.push(shard.tensors[i] as string);
    }
  }
  // Code-unit order, as Array.prototype.sort() without a comparator sorts strings.
  const sorted = yield* sortIndices(names.length, (a, b) => {
    const x = names[a] as string;
    const y = names[b] as string;
    return x < y ? -1 : x > y ? 1 : 0;
  });
  // Written by hand: a JS object would move integer-like names ("10") ahead of the sorted order.
  const pieces = [`{\n  "metadata": {\n    "total_size": ${layout.totalSize}\n  },\n  "weight_map": {`];
  if (names.length === 0) pieces[0] += '}';
  let lines: string[] = [];
  for (let k = 0; k < sorted.length; k++) {
    const name = names[sorted[k] as number] as string;
    const place = layout.placement.get(name);
    const shard = place === undefined ? undefined : layout.shards[place.shard];
    if (shard === undefined) throw new Error(`layout has no shard for tensor "${name}"`);
    lines.push(`\n    ${JSON.stringify(name)}: ${JSON.stringify(shard.fileName)}`);
    if (lines.length === CHECK_EVERY || k === sorted.length - 1) {
      pieces.push(lines.join(',') + (k === sorted.length - 1 ? '\n  }' : ','));
      lines = [];
      yield;
    }
  }
  pieces.push('\n}\n');
  return pieces;
}

/**
 * Length prefix + JSON (`__metadata__` first, then tensors with contiguous data_offsets), padded with
 * spaces so that the data starts at a multiple of 8, as the reference crate does: that keeps every
 * tensor aligned for zero-copy readers that cast the mapped bytes.
 */
function* encodeHeader(
  group: readonly TensorLayoutEntry[],
  metadata: Record<string, string>,
): Sliced<Uint8Array> {
  // Built by hand rather than from one object so that the key order is exactly the tensor order
  // (objects enumerate integer-like keys first) and a tensor named "__proto__" stays a plain key.
  // Encoded in pieces of a few thousand entries: one 90 MB string would be built and encoded in one go.
  const pieces: Buffer[] = [];
  let parts = [`{"__metadata__":${JSON.stringify(metadata)}`];
  let begin = 0;
  for (let i = 0; i < group.length; i++) {
    const e = group[i] as TensorLayoutEntry;
    // What JSON.stringify({ dtype, shape, data_offsets }) writes, without an object per tensor.
    const end = begin + e.byteLength;
    parts.push(
      `${JSON.stringify(e.name)}:{"dtype":"${e.dtype}","shape":[${e.shape.join(',')}],"data_offsets":[${begin},${end}]}`,
    );
    begin = end;
    if (parts.length === CHECK_EVERY) {
      pieces.push(Buffer.from(parts.join(',') + ','));
      parts = [];
      yield;
    }
  }
  pieces.push(Buffer.from(`${parts.join(',')}}`));
  const length = pieces.reduce((n, p) => n + p.byteLength, 0);
  const padded = Math.ceil(length / 8) * 8;
  // Not zeroed: every byte is written below (a 60 MB header is zeroed, then copied, in one go otherwise).
  const header = Buffer.allocUnsafeSlow(8 + padded);
  header.writeBigUInt64LE(BigInt(padded), 0);
  let at = 8;
  for (let k = 0; k < pieces.length; k++) {
    header.set(pieces[k] as Buffer, at);
    at += (pieces[k] as Buffer).byteLength;
    if (k % 16 === 15) yield;
  }
  header.fill(0x20, 8 + length);
  return new Uint8Array(header.buffer, header.byteOffset, header.byteLength);
}

/** The writer's inputs are ours; a size that disagrees with shape and dtype is a bug upstream. */
function checkEntry(e: TensorLayoutEntry): void {
  const bits = e.shape.reduce((n, d) => n * BigInt(d), 1n) * BigInt(dtypeBits(e.dtype));
  if (bits % 8n !== 0n || bits / 8n !== BigInt(e.byteLength)) {
    throw new Error(
      `tensor "${e.name}": byteLength ${e.byteLength} does not match ${e.dtype} [${e.shape.join(', ')}]`,
    );
  }
  if (e.name === '__metadata__') {
    throw new ModelStockError('INVALID_HEADER', 'a tensor cannot be named __metadata__', { tensor: e.name });
  }
}
