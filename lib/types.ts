import type { FloatDType, DType } from './dtype';
import type { BackendInfo } from './engine/backend';
import type { ThetaRule } from './math/ratio';
import type { IoMode } from './engine/io';
import type { PipelineProfile } from './engine/pipeline';
import type { WriteMode, WriteReport } from './safetensors/shardFile';
import type { LayerRangeCheck } from './config/layers';
import type { HubOptions } from './hub/settings';

export type BackendChoice = 'auto' | 'js' | 'native' | 'cuda';

/** What a merge writes: a full model (the base's tensors, merged), or a PEFT LoRA adapter of the base. */
export type OutFormat = 'model' | 'peft';
export const OUT_FORMATS: readonly OutFormat[] = ['model', 'peft'];

export interface MergeProgress {
  /** Input bytes processed so far (each input byte counted once per pass that reads it). */
  readonly bytesDone: number;
  readonly bytesTotal: number;
  readonly tensorsDone: number;
  readonly tensorsTotal: number;
  /** The tensor being processed. */
  readonly tensor: string | undefined;
}

/** What `inspectModelStock` takes: the inputs and how to compute — everything but the output. */
export interface InspectOptions {
  /**
   * Base (pre-trained) model: a folder (safetensors or PyTorch weights), one weight file (`.safetensors`,
   * or PyTorch's `.bin`, `.pt`, `.pth`, `.ckpt`), or a Hugging Face Hub ID `org/name[@revision]` (resolved
   * through the Hugging Face cache, downloaded when missing and online; see `hub`).
   */
  readonly base: string;
  /** N ≥ 2 fine-tuned models of the same architecture; references as for `base`. */
  readonly models: readonly string[];
  /** One ratio per output row (`[shape[0], rest]`) instead of per tensor. Default false. */
  readonly filterWise?: boolean;
  /**
   * PyTorch inputs: the top-level entry holding the weights (e.g. `state_dict_ema`), for every PyTorch
   * input (one without it is BAD_CONFIG). Default: the top level if it holds a tensor, else the first of
   * `state_dict`, `model_state_dict`, `model`, `module` that holds tensors.
   */
  readonly stateDictKey?: string;
  /** Default 'mean-cos'. */
  readonly theta?: ThetaRule;
  /** Output dtype for merged tensors; default: each tensor's base dtype. */
  readonly outDtype?: FloatDType;
  /** Default 'auto': native when it loads, else js. */
  readonly backend?: BackendChoice;
  /** Memory budget for tensor buffers in bytes (default 1 GiB). A tensor whose inputs fit is read once. */
  readonly memory?: number;
  /**
   * How inputs are read: mmap (zero-copy views), direct (O_DIRECT into the pipeline's buffers, nothing
   * through the page cache), pread (buffered native reads), fs (Node); default auto: per input, direct
   * when less than half of it is in the page cache, else mmap (README, Performance).
   */
  readonly io?: IoMode;
  /** Direct and pread reads in flight per input, 4 MiB each (default 4). */
  readonly ioQueueDepth?: number;
  /** Largest single read buffer in bytes (default and maximum 1 GiB). */
  readonly window?: number;
  /** Worker threads for the native backend (default: all cores). */
  readonly threads?: number;
  /** mergekit slices: each must be its model's full layer range (checked against config.json). */
  readonly layerRanges?: readonly LayerRangeCheck[];
  /** How Hub IDs are resolved and downloaded (cache folder, endpoint, token, offline, progress, signal). */
  readonly hub?: HubOptions;
  readonly onProgress?: (p: MergeProgress) => void;
  /** Warnings (pole, negative cosine, missing tensors, backend fallback). Default: none printed. */
  readonly onWarning?: (message: string) => void;
  /**
   * Cancels the work: no new read, kernel or write starts (native jobs stop between 64Ki-element blocks),
   * in-flight I/O settles, everything is cleaned up (staging removed, files closed, mappings released),
   * then the promise rejects with ModelStockError code CANCELLED, `cause` = the signal's reason.
   */
  readonly signal?: AbortSignal;
}

export interface MergeOptions extends InspectOptions {
  /** Output folder; must not exist unless `overwrite`. */
  readonly out: string;
  /**
   * 'model' (default): the base's tensors, merged. 'peft': when every fine-tune is a LoRA adapter of the
   * base, the merge as a PEFT LoRA adapter of it (adapter_config.json + adapter_model.safetensors), exact:
   * W0 + B′·A′ is the merged weight (lib/output/peft.ts).
   */
  readonly outFormat?: OutFormat;
  /** Maximum shard size in bytes (default 5e9, mergekit's). */
  readonly shardSize?: number;
  readonly overwrite?: boolean;
  /** fsync the output before the atomic rename (default true). */
  readonly fsync?: boolean;
  /**
   * How output bytes reach the disk, dirty data bounded in every mode: direct (O_DIRECT), rolling
   * (rolling writeback), plain (periodic fdatasync), node (Node's writes, no addon); default auto.
   */
  readonly writeMode?: WriteMode;
  /** Also write the JSON report here. */
  readonly report?: string;
  /**
   * Whose tokenizer files the output gets: 'base' (default) or a reference equal to `base` or one of
   * `models`; another model's tokenizer must fit the base's embedding rows.
   */
  readonly tokenizerSource?: string;
  /** A chat template written into the output's tokenizer_config.json. */
  readonly chatTemplate?: string;
  /** The resolved config written beside the weights (defaults to one built from these options). */
  readonly configYaml?: string;
}

export type TensorAction = 'merge' | 'copy' | 'drop';

/** How an input's weights are stored: a safetensors checkpoint, a PyTorch pickle archive, a PEFT LoRA adapter. */
export type InputFormat = 'safetensors' | 'pytorch' | 'lora';

/** One input of a merge or an inspection (the base first, then the fine-tunes in their order). */
export interface InputReport {
  /** The reference as the user wrote it (a path or a Hub ID). */
  readonly ref: string;
  readonly format: InputFormat;
  /** How its bytes were read. */
  readonly io: Exclude<IoMode, 'auto'>;
  /** Why `io` is not the mode asked for (e.g. a file system that refused O_DIRECT). */
  readonly fallback?: string;
}

export interface RatioStats {
  readonly min: number;
  readonly mean: number;
  readonly max: number;
}

export interface TensorReport {
  readonly name: string;
  readonly action: TensorAction;
  /** Why it was copied or dropped, which fine-tunes lacked it, how vocabularies were reconciled. */
  readonly reason?: string;
  /** Number of fine-tunes merged (N used). */
  readonly n?: number;
  /** Indices (into MergeOptions.models) of the fine-tunes used. */
  readonly models?: readonly number[];
  readonly dtype: DType;
  readonly outDtype?: DType;
  readonly shape: readonly number[];
  /** Layer-wise: the pairwise cosines (pairs i<j). Filter-wise: per pair, stats over rows. */
  readonly cosines?: readonly number[] | readonly RatioStats[];
  /** Layer-wise: c and t. */
  readonly c?: number;
  readonly t?: number;
  /** Filter-wise: stats of c and t over rows. */
  readonly cStats?: RatioStats;
  readonly tStats?: RatioStats;
  readonly pole?: boolean;
  /**
   * Fine-tunes (indices into MergeOptions.models) whose task vector is zero here — LoRA adapters that do
   * not change this tensor while other fine-tunes do; N counts them.
   */
  readonly untouched?: readonly number[];
  /** An embedding whose vocabulary (first dimension) differs between base and fine-tunes. */
  readonly rows?: {
    /** Rows every input has: merged (cosines and t over exactly these rows). */
    readonly merged: number;
    /** The base's rows after them: copied from the base. */
    readonly copied: number;
    /** Rows only fine-tunes have, summed over them: left out. */
    readonly dropped: number;
    /** Rows in the base, then in each merged fine-tune. */
    readonly vocab: readonly number[];
  };
}

/**
 * What `inspectModelStock` returns and `--json` prints: per tensor the cosines, c and t a merge would
 * use (the Gram pass only; nothing is written). A merge's report (MergeReport) is this plus its output.
 */
export interface InspectReport {
  readonly method: 'model_stock';
  readonly base: string;
  readonly models: readonly string[];
  readonly filterWise: boolean;
  readonly theta: ThetaRule;
  readonly backend: BackendInfo;
  /**
   * Each input's format and how it was read: the base, then the models. Every merge and inspection
   * fills it; a report read back from a file written before it existed has none.
   */
  readonly inputs?: readonly InputReport[];
  readonly tensors: readonly TensorReport[];
  readonly warnings: readonly string[];
  readonly bytesRead: number;
  readonly seconds: number;
  /** Where the time went, in seconds (reading, computing, writing overlap); absent in older reports. */
  readonly profile?: PipelineProfile;
}

export interface MergeReport extends InspectReport {
  /** The output folder. */
  readonly out: string;
  /** Set when the output is a PEFT LoRA adapter of the base (outFormat 'peft'); absent: a model. */
  readonly outFormat?: 'peft';
  readonly bytesWritten: number;
  /** How the output was written: the mode, any fallback and why, the final fsync's seconds. */
  readonly write: WriteReport;
}
