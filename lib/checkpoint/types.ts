import type { DType } from '../dtype';
import type { FileIdentity } from './identity';
import type { InputFormat } from '../types';
import type { Adapter } from '../adapter/types';

/**
 * One tensor of a checkpoint, located in its file: whatever the format, a run of `byteLength` bytes at
 * `offset` holding the tensor's elements in row-major order (the engine reads it in place).
 */
export interface TensorInfo {
  readonly name: string;
  readonly dtype: DType;
  /** `[]` is a scalar (one element). */
  readonly shape: readonly number[];
  /**
   * Absolute byte offset of the tensor's first byte in `file` (safetensors: 8 + header length +
   * data_offsets[0]; PyTorch: its storage entry's data + storage_offset · itemsize).
   */
  readonly offset: number;
  /** Elements × dtype size. */
  readonly byteLength: number;
  /** Absolute path of the file (shard) holding the bytes. */
  readonly file: string;
}

/** A model: one file, or shards named by an index (model.safetensors.index.json, pytorch_model.bin.index.json). */
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
  /** Absolute path of the shard index when sharded. */
  readonly indexFile: string | undefined;
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /**
   * Tensor names in storage order: shard order, then (safetensors) by data offset or (PyTorch) the state
   * dict's insertion order. The output keeps the base's order.
   */
  readonly order: readonly string[];
  readonly metadata: Readonly<Record<string, string>> | undefined;
  /**
   * What was noticed opening it, each starting with the path it concerns: weights of another format
   * left aside, a PyTorch file's entries beside the state dict, the objects its pickle references.
   */
  readonly warnings: readonly string[];
  /**
   * A LoRA adapter (format 'lora'): its factors and whole tensors; `tensors` above are then the adapter
   * file's own (lora_A, lora_B, …), never a base tensor's name.
   */
  readonly adapter?: Adapter;
}

/** How a checkpoint is opened. */
export interface OpenOptions {
  /**
   * PyTorch files: the top-level entry holding the state dict (e.g. `state_dict_ema`), for every
   * PyTorch file opened; a file without it is BAD_CONFIG. Default: found by the rule in lib/pytorch/stateDict.ts.
   */
  readonly stateDictKey?: string;
}

/** One weight file as its format reads it. */
export interface WeightFile {
  readonly file: string;
  readonly identity: FileIdentity;
  /** In the checkpoint's order (see Checkpoint.order). */
  readonly tensors: readonly TensorInfo[];
  readonly metadata: Readonly<Record<string, string>> | undefined;
}

/**
 * A way weights are stored, behind the one tensor table the plan and the engine read. A format says
 * which files of a model folder are its weights and reads them; openCheckpoint does the rest (shard
 * index, duplicates, order) the same way for all.
 */
export interface CheckpointFormat {
  readonly name: InputFormat;
  /** The shard index in a model folder (`model.safetensors.index.json`), for a format that shards. */
  readonly indexFile?: string;
  /** The file holding a whole model in a folder (`model.safetensors`). */
  readonly singleFile: string;
  /** A lone file of a folder taken as its model when the folder has neither of the above. */
  isLoneFile?(name: string): boolean;
  /**
   * The other files of a folder this format reads beside `singleFile` (an adapter's weights beside its
   * adapter_config.json), chosen from the folder's `names`; a string is why the folder cannot be read.
   */
  companions?(names: ReadonlySet<string>): readonly string[] | string;
  /** Whether a file named directly is of this format, by its name. */
  claims(file: string): boolean;
  /** Whether a file named directly is of this format, by its first bytes (for names no format claims). */
  sniff(head: Uint8Array): boolean;
  /** Reads `files` (the shards, in order); `target` is the checkpoint's path, which warnings start with. */
  read(target: string, files: readonly string[], options: OpenOptions): Promise<FormatRead>;
}

/** What a format read: its weight files, what it noticed, and (LoRA) the adapter. */
export interface FormatRead {
  readonly files: readonly WeightFile[];
  readonly warnings: readonly string[];
  readonly adapter?: Adapter;
}
