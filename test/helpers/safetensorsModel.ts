/** Writes small models with our own writer, for round-trip and checkpoint tests. */
import { mkdir } from 'node:fs/promises';
import type { DType } from '../../lib/dtype';
import { planShards } from '../../lib/safetensors/layout';
import { SafetensorsWriter } from '../../lib/safetensors/writer';
import type { ShardLayout } from '../../lib/safetensors/types';

export interface TestTensor {
  name: string;
  dtype: DType;
  shape: number[];
  data: Uint8Array;
}

/** Deterministic bytes that differ from tensor to tensor. */
export function pattern(byteLength: number, seed: number): Uint8Array {
  const out = new Uint8Array(byteLength);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < byteLength; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

export function tensor(
  name: string,
  dtype: DType,
  shape: number[],
  bytesPerElement: number,
  seed = 1,
): TestTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return { name, dtype, shape, data: pattern(n * bytesPerElement, seed) };
}

export async function writeModel(
  dir: string,
  tensors: readonly TestTensor[],
  shardSize = 1 << 30,
  metadata?: Record<string, string>,
): Promise<ShardLayout> {
  await mkdir(dir, { recursive: true });
  const entries = tensors.map((t) => ({
    name: t.name,
    dtype: t.dtype,
    shape: t.shape,
    byteLength: t.data.byteLength,
  }));
  const layout = planShards(entries, metadata === undefined ? { shardSize } : { shardSize, metadata });
  const writer = await SafetensorsWriter.create(dir, layout);
  // Reverse order and concurrently: positional writes must not care.
  await Promise.all([...tensors].reverse().map((t) => writer.write(t.name, 0, t.data)));
  await writer.finish({ fsync: false });
  return layout;
}
