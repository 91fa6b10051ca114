import type { DType } from '../dtype';
import type { FileIdentity } from '../checkpoint/identity';
import type { TensorInfo } from '../checkpoint/types';

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
