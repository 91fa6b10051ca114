/** Merge reports built in memory, for the aggregation, drawing and plot tests. */
import { ratioFromCosine } from '../../lib/math/ratio';
import type { MergeReport, RatioStats, TensorReport } from '../../lib/types';

export function reportOf(tensors: TensorReport[], over: Partial<MergeReport> = {}): MergeReport {
  return {
    method: 'model_stock',
    base: 'base-model',
    models: ['ft-a', 'ft-b'],
    out: 'merged',
    filterWise: false,
    theta: 'mean-cos',
    backend: { name: 'js', isa: 'scalar', threads: 1, device: { kind: 'cpu', name: 'test' } },
    tensors,
    warnings: [],
    bytesRead: 0,
    bytesWritten: 0,
    seconds: 0,
    ...over,
  } as MergeReport;
}

/** A layer-wise merged tensor with the given pairwise cosines (t as the merge computes it, mean-cos). */
export function merged(name: string, cosines: number[], models?: number[]): TensorReport {
  const n = models?.length ?? (1 + Math.sqrt(1 + 8 * cosines.length)) / 2;
  const c = cosines.reduce((a, b) => a + b, 0) / cosines.length;
  const { t, pole } = ratioFromCosine(c, n);
  const used = models ?? Array.from({ length: n }, (_, i) => i);
  return {
    name,
    action: 'merge',
    n,
    models: used,
    dtype: 'BF16',
    outDtype: 'BF16',
    shape: [4, 4],
    cosines,
    c,
    t,
    pole,
  };
}

/** A filter-wise merged tensor: per pair, cosine stats over rows; t stats over rows. */
export function mergedRows(name: string, cosines: RatioStats[], tStats: RatioStats): TensorReport {
  return {
    name,
    action: 'merge',
    n: 2,
    models: [0, 1],
    dtype: 'BF16',
    outDtype: 'BF16',
    shape: [4, 4],
    cosines,
    cStats: tStats,
    tStats,
    pole: false,
  };
}

export function copied(name: string): TensorReport {
  return { name, action: 'copy', reason: 'only in one fine-tune', dtype: 'BF16', shape: [4] };
}

/** LLaMA-shaped: `layers` × (4 projections + 2 norms), embeddings, final norm, head; cosine by layer. */
export function llamaReport(layers: number, over: Partial<MergeReport> = {}): MergeReport {
  const kinds = [
    'self_attn.q_proj',
    'self_attn.k_proj',
    'mlp.up_proj',
    'mlp.down_proj',
    'input_layernorm',
    'post_attention_layernorm',
  ];
  const tensors: TensorReport[] = [merged('model.embed_tokens.weight', [0.9])];
  for (let l = 0; l < layers; l++) {
    kinds.forEach((k, i) =>
      tensors.push(merged(`model.layers.${l}.${k}.weight`, [0.1 + (0.8 * ((l + i) % layers)) / layers])),
    );
  }
  tensors.push(merged('model.norm.weight', [0.5]), merged('lm_head.weight', [0.6]));
  return reportOf(tensors, over);
}

/**
 * 250 layers × (6 projections and norms + 3 expert projections × 1,329 experts + 4 one-off kinds)
 * + 750 tensors outside the layers = 1,000,000 tensors.
 */
export function millionTensors(): MergeReport {
  const tensors: TensorReport[] = [];
  const models = [0, 1];
  const shape = [64, 64];
  const add = (name: string, cos: number): void => {
    tensors.push({
      name,
      action: 'merge',
      n: 2,
      models,
      dtype: 'BF16',
      shape,
      cosines: [cos],
      c: cos,
      t: (2 * cos) / (1 + cos),
    });
  };
  const kinds = [
    'self_attn.q_proj',
    'self_attn.k_proj',
    'self_attn.v_proj',
    'self_attn.o_proj',
    'input_layernorm',
    'post_attention_layernorm',
  ];
  for (let l = 0; l < 250; l++) {
    for (const k of kinds) add(`model.layers.${l}.${k}.weight`, 0.3 + l / 1000);
    for (let e = 0; e < 1329; e++) {
      for (const w of ['w1', 'w2', 'w3'])
        add(`model.layers.${l}.block_sparse_moe.experts.${e}.${w}.weight`, 0.5);
    }
    for (let k = 0; k < 4; k++) add(`model.layers.${l}.odd_${l}_${k}.weight`, 0.5);
  }
  for (let i = 0; i < 750; i++) add(`extra.buffer_${i}`, 0.1);
  if (tensors.length !== 1_000_000) throw new Error(`${tensors.length} tensors`);
  return reportOf(tensors);
}
