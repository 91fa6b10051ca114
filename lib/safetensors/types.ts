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

/** A validated safetensors file. */
export interface SafetensorsFile {
  readonly file: string;
  readonly fileSize: number;
  /** The version of the file whose header this is (inode, size, mtime). */
  readonly identity: FileIdentity;
  /** 8 + header length: where data_offsets count from. */
  readonly dataStart: number;
  /** In header (JSON) order. */
  readonly tensors: readonly TensorInfo[];
  readonly metadata: Readonly<Record<string, string>> | undefined;
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

/** What the writer needs to know about each output tensor before any byte is written. */
export interface TensorLayoutEntry {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly byteLength: number;
}

export interface ShardLayout {
  readonly shards: readonly {
    /** File name inside the output folder: model.safetensors or model-0000i-of-0000n.safetensors. */
    readonly fileName: string;
    /** The complete header bytes: 8-byte length + JSON padded with spaces to a multiple of 8. */
    readonly header: Uint8Array;
    readonly tensors: readonly string[];
    /** Total file size (header + data). */
    readonly size: number;
  }[];
  /** name → { shard index, absolute byte offset in that shard file } */
  readonly placement: ReadonlyMap<string, { readonly shard: number; readonly offset: number }>;
  /** Sum of tensor bytes (the index's metadata.total_size). */
  readonly totalSize: number;
}
