/** Small checkpoints written with our own writer, for merge and CLI tests. */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DType, FloatDType, isMergeableDType } from '../../lib/dtype';
import { decodeFloats, encodeFloats } from '../../lib/math/codec';
import { openCheckpoint } from '../../lib/checkpoint/open';
import { planShards } from '../../lib/safetensors/layout';
import { TensorReader } from '../../lib/safetensors/window';
import { SafetensorsWriter } from '../../lib/safetensors/writer';

export interface TensorSpec {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** Float values (encoded to dtype) or raw bytes. */
  readonly values: ArrayLike<number> | Uint8Array;
}

export async function writeModel(
  dir: string,
  tensors: readonly TensorSpec[],
  opts: { shardSize?: number; files?: Record<string, string> } = {},
): Promise<string> {
  await fs.promises.mkdir(dir, { recursive: true });
  const data = tensors.map((t) =>
    t.values instanceof Uint8Array ? t.values : encodeFloats(t.values, t.dtype as FloatDType),
  );
  const layout = planShards(
    tensors.map((t, i) => ({
      name: t.name,
      dtype: t.dtype,
      shape: t.shape,
      byteLength: (data[i] as Uint8Array).byteLength,
    })),
    { shardSize: opts.shardSize ?? 5e9 },
  );
  const w = await SafetensorsWriter.create(dir, layout);
  for (let i = 0; i < tensors.length; i++)
    await w.write((tensors[i] as TensorSpec).name, 0, data[i] as Uint8Array);
  await w.finish({ fsync: false });
  for (const [name, text] of Object.entries(opts.files ?? {})) fs.writeFileSync(path.join(dir, name), text);
  return dir;
}

/** Every tensor of a checkpoint, float ones decoded to float64, others as raw bytes. */
export async function readModel(
  dir: string,
): Promise<
  Map<string, { dtype: DType; shape: readonly number[]; values: Float64Array | undefined; bytes: Uint8Array }>
> {
  const cp = await openCheckpoint(dir);
  const reader = new TensorReader();
  const out = new Map<
    string,
    { dtype: DType; shape: readonly number[]; values: Float64Array | undefined; bytes: Uint8Array }
  >();
  try {
    for (const name of cp.order) {
      const t = cp.tensors.get(name)!;
      const bytes = new Uint8Array(t.byteLength);
      await reader.readInto(t, 0, bytes);
      const values = isMergeableDType(t.dtype) ? Float64Array.from(decodeFloats(bytes, t.dtype)) : undefined;
      out.set(name, { dtype: t.dtype, shape: t.shape, values, bytes });
    }
  } finally {
    await reader.close();
  }
  return out;
}

/** sha256 of every file under `dir`, to prove inputs were not modified. */
export function hashTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(dir, p)] = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    }
  };
  walk(dir);
  return out;
}
