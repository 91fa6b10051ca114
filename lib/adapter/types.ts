import type { Checkpoint, TensorInfo } from '../checkpoint/types';
import type { AdapterConfig } from './config';

/**
 * A LoRA adapter as read from its folder: the modules it adapts with factors, and the whole tensors it
 * saves. Names are the module paths inside the model PEFT wrapped (on-disk keys without
 * `base_model.model.`); matching them to the base's tensors is the plan's (lib/plan/adapters.ts).
 */

/** One module adapted with LoRA factors: its task vector is s·B·A (transposed for Conv1D and embeddings). */
export interface AdapterModule {
  /** e.g. `model.layers.0.self_attn.q_proj`. */
  readonly module: string;
  /** lora_A: [r, in] (Linear, Conv1D), [r, in, k…] (convolutions), [r, vocab] (embeddings). */
  readonly a: TensorInfo;
  /** lora_B: [out, r], [out, r, 1…], [dim, r]. */
  readonly b: TensorInfo;
  /** `lora_embedding_A/B` (P:src/peft/tuners/lora/layer.py#L1181-L1184): always stored transposed. */
  readonly embedding: boolean;
  readonly rank: number;
  readonly alpha: number;
  /** s = α/r, or α/√r with use_rslora. */
  readonly scale: number;
  /** `lora_B.bias` (lora_bias): the module's bias gets the task vector s·b. */
  readonly biasB: TensorInfo | undefined;
}

/** A whole tensor the adapter saves, which replaces the base's (its task vector is the difference). */
export interface AdapterWeight {
  /** The model's parameter name: `lm_head.weight`, `model.layers.0.mlp.up_proj.bias`. */
  readonly name: string;
  readonly tensor: TensorInfo;
  /**
   * modules_to_save: a module trained whole; bias: a bias trained by `bias: all | lora_only`;
   * base_layer: the wrapped layer's own weight, saved beside factors (targeted embeddings and heads).
   */
  readonly kind: 'modules_to_save' | 'bias' | 'base_layer';
}

export interface Adapter {
  readonly configFile: string;
  readonly config: AdapterConfig;
  readonly modules: readonly AdapterModule[];
  readonly weights: readonly AdapterWeight[];
  /**
   * The model the adapter is applied to when it is not the merge's base (mergekit's `model+lora`);
   * its tensors are the fine-tune's weights, the adapter's factors are added to them.
   */
  readonly over?: Checkpoint;
}
