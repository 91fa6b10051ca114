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
