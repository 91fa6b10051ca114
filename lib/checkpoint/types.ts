import type { DType } from '../dtype';
import type { FileIdentity } from './identity';
import type { InputFormat } from '../types';

/** One tensor as a safetensors header describes it, located in its file. */
export interface TensorInfo {
  readonly name: string;
  readonly dtype: DType;
  /** `[]` is a scalar (one element). */
  readonly shape: readonly number[];
  /** Absolute byte offset of the tensor's first byte in `file` (8 + header length + data_offsets[0]). */
  readonly offset: number;
  /** data_offsets[1] − data_offsets[0]. */
  readonly byteLength: number;
  /** Absolute path of the file (shard) holding the bytes. */
  readonly file: string;
}

/** A model: one file, or shards named by model.safetensors.index.json. */
export interface Checkpoint {
  /** How the weights are stored (the tensor table below is the same for every format). */
  readonly format: InputFormat;
  /** The folder (or file) the user named, resolved to an absolute path. */
  readonly path: string;
  /** Absolute folder holding the weights (and config.json etc. for a folder). */
  readonly dir: string;
  /** Absolute paths of the weight files, in shard order. */
  readonly files: readonly string[];
  /** Each weight file's version when its header was read: a merge checks they are unchanged at the end. */
  readonly identities: ReadonlyMap<string, FileIdentity>;
  /** Absolute path of model.safetensors.index.json when sharded. */
  readonly indexFile: string | undefined;
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** Tensor names in storage order: shard order, then by data offset. The output keeps the base's order. */
  readonly order: readonly string[];
  readonly metadata: Readonly<Record<string, string>> | undefined;
}
