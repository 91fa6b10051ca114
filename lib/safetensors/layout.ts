/**
 * Plans the output files before any tensor is computed: which shard holds each tensor, every
 * shard's complete header, and each tensor's absolute offset, so tensors can be written in any order
 * and concurrently.
 */
import { ModelStockError } from '../errors';
import { dtypeBits } from '../dtype';
import type { ShardLayout, TensorLayoutEntry } from './types';

export const DEFAULT_FORMAT_METADATA: Readonly<Record<string, string>> = { format: 'pt' };

export interface PlanOptions {
  /** Most tensor-data bytes per shard (headers not counted, as in HF/mergekit). */
  shardSize: number;
  /** Merged over `{"format":"pt"}` (transformers refuses to load files whose format is not "pt"). */
  metadata?: Record<string, string>;
}

export function planShards(entries: readonly TensorLayoutEntry[], opts: PlanOptions): ShardLayout {
  if (!(opts.shardSize > 0)) throw new RangeError(`shardSize must be positive, got ${opts.shardSize}`);
  const names = new Set<string>();
  for (const e of entries) {
    if (names.has(e.name))
      throw new ModelStockError('DUPLICATE_KEY', 'output has this tensor twice', { tensor: e.name });
    names.add(e.name);
    checkEntry(e);
  }

  // Greedy, in the given order: a tensor that would push the shard past shardSize opens a new one;
  // a tensor bigger than shardSize on its own gets a shard to itself.
  const groups: TensorLayoutEntry[][] = [];
  let current: TensorLayoutEntry[] = [];
  let currentBytes = 0;
  for (const e of entries) {
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
  const placement = new Map<string, { shard: number; offset: number }>();
  let totalSize = 0;
  const shards = groups.map((group, shard) => {
    const fileName = groups.length === 1 ? 'model.safetensors' : shardFileName(shard + 1, groups.length);
    const header = encodeHeader(group, metadata);
    let begin = 0;
    for (const e of group) {
      placement.set(e.name, { shard, offset: header.byteLength + begin });
      begin += e.byteLength;
    }
    totalSize += begin;
    return { fileName, header, tensors: group.map((e) => e.name), size: header.byteLength + begin };
  });
  return { shards, placement, totalSize };
}

/** HF's shard naming: model-00001-of-00003.safetensors. */
export function shardFileName(index: number, count: number): string {
  const pad = (n: number) => String(n).padStart(5, '0');
  return `model-${pad(index)}-of-${pad(count)}.safetensors`;
}

/** `model.safetensors.index.json` as transformers writes it: indent 2, weight_map keys sorted. */
export function indexJson(layout: ShardLayout): string {
  const names = [...layout.placement.keys()].sort();
  const lines = names.map((name) => {
    const place = layout.placement.get(name);
    const shard = place === undefined ? undefined : layout.shards[place.shard];
    if (shard === undefined) throw new Error(`layout has no shard for tensor "${name}"`);
    return `    ${JSON.stringify(name)}: ${JSON.stringify(shard.fileName)}`;
  });
  // Written by hand: a JS object would move integer-like names ("10") ahead of the sorted order.
  const weightMap = lines.length === 0 ? '{}' : `{\n${lines.join(',\n')}\n  }`;
  return `{\n  "metadata": {\n    "total_size": ${layout.totalSize}\n  },\n  "weight_map": ${weightMap}\n}\n`;
}

/**
 * Length prefix + JSON (`__metadata__` first, then tensors with contiguous data_offsets), padded with
 * spaces so that the data starts at a multiple of 8, as the reference crate does: that keeps every
 * tensor aligned for zero-copy readers that cast the mapped bytes.
 */
function encodeHeader(group: readonly TensorLayoutEntry[], metadata: Record<string, string>): Uint8Array {
  // Built by hand rather than from one object so that the key order is exactly the tensor order
  // (objects enumerate integer-like keys first) and a tensor named "__proto__" stays a plain key.
  const parts = [`"__metadata__":${JSON.stringify(metadata)}`];
  let begin = 0;
  for (const e of group) {
    const info = { dtype: e.dtype, shape: e.shape, data_offsets: [begin, begin + e.byteLength] };
    parts.push(`${JSON.stringify(e.name)}:${JSON.stringify(info)}`);
    begin += e.byteLength;
  }
  const text = new TextEncoder().encode(`{${parts.join(',')}}`);
  const padded = Math.ceil(text.byteLength / 8) * 8;
  const header = new Uint8Array(8 + padded);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(text, 8);
  header.fill(0x20, 8 + text.byteLength);
  return header;
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
