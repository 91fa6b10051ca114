/**
 * Small bases and LoRA adapters for the adapter merge tests, and the float64 reference they are checked
 * against: every fine-tune's dense weights w_i = w0 + s·B·A (transposed for Conv1D, s·b for a
 * lora_B.bias), formed from the factors as stored (decoded exactly) with the scale the test itself
 * computes from the config — never with model-stock's own reading of it.
 */
import * as path from 'node:path';
import type { FloatDType } from '../../lib/dtype';
import { decodeFloats, encodeFloats } from '../../lib/math/codec';
import { loraKey, peftConfig, writePeftAdapter, type AdapterTensor } from '../../lib/fixtures/lora';
import { denseTaskVector } from './lowRank';
import { writeModel, type TensorSpec } from './models';
import { mulberry32, randomTensor, type Rng } from './random';

export interface BaseTensor {
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: FloatDType;
}

/** A small LLaMA-like layer (plus embeddings and norms) and a GPT-2-like Conv1D block. */
export function llamaLike(dtype: FloatDType = 'BF16'): BaseTensor[] {
  const t = (name: string, shape: number[]): BaseTensor => ({ name, shape, dtype });
  return [
    t('model.embed_tokens.weight', [24, 16]),
    t('model.layers.0.self_attn.q_proj.weight', [16, 16]),
    t('model.layers.0.self_attn.k_proj.weight', [8, 16]),
    t('model.layers.0.self_attn.k_proj.bias', [8]),
    t('model.layers.0.self_attn.v_proj.weight', [8, 16]),
    t('model.layers.0.self_attn.o_proj.weight', [16, 16]),
    t('model.layers.0.mlp.gate_proj.weight', [40, 16]),
    t('model.layers.0.mlp.up_proj.weight', [40, 16]),
    t('model.layers.0.mlp.down_proj.weight', [16, 40]),
    t('model.layers.0.input_layernorm.weight', [16]),
    t('model.norm.weight', [16]),
    t('lm_head.weight', [24, 16]),
  ];
}

/** GPT-2's checkpoint names (no `transformer.` prefix): Conv1D weights stored [in, out]. */
export function gpt2Like(dtype: FloatDType = 'F16'): BaseTensor[] {
  const t = (name: string, shape: number[]): BaseTensor => ({ name, shape, dtype });
  return [
    t('wte.weight', [20, 12]),
    t('h.0.attn.c_attn.weight', [12, 36]),
    t('h.0.attn.c_attn.bias', [36]),
    t('h.0.attn.c_proj.weight', [12, 12]),
    t('h.0.mlp.c_fc.weight', [12, 48]),
    t('h.0.mlp.c_proj.weight', [48, 12]),
    t('ln_f.weight', [12]),
  ];
}

/** Writes a base (values ~ N(0, 0.5²), encoded to each dtype); returns its decoded values. */
export async function writeBase(
  dir: string,
  tensors: readonly BaseTensor[],
  rng: Rng,
  files: Record<string, string> = {},
): Promise<Map<string, Float64Array>> {
  const values = new Map<string, Float64Array>();
  const specs: TensorSpec[] = tensors.map((t) => {
    const raw = randomTensor(
      t.shape.reduce((a, b) => a * b, 1),
      rng,
      0.5,
    );
    const v = decodeFloats(encodeFloats(raw, t.dtype), t.dtype) as Float64Array;
    values.set(t.name, v);
    return { name: t.name, dtype: t.dtype, shape: t.shape, values: v };
  });
  await writeModel(dir, specs, { files });
  return values;
}

export interface ModuleSpec {
  /** The module's path in the trained model (e.g. `transformer.h.0.attn.c_attn`). */
  readonly module: string;
  /** The base tensor it changes (default `${module}.weight`). */
  readonly tensor?: string;
  readonly rank: number;
  /** s, as the test computes it from the config. */
  readonly scale: number;
  readonly dtype?: FloatDType;
  /** Stored [in, out] (GPT-2's Conv1D): Δ = s·(B·A)ᵀ. */
  readonly conv1d?: boolean;
  /** Also a lora_B.bias (for the base tensor `bias`). */
  readonly bias?: string;
}

export interface AdapterSpec {
  /** adapter_config.json fields beyond PEFT 0.13's defaults. */
  readonly config: Record<string, unknown>;
  readonly modules: readonly ModuleSpec[];
  /** modules_to_save tensors: full replacements of base tensors (key without the prefix). */
  readonly saved?: readonly { readonly name: string; readonly dtype: FloatDType }[];
  readonly prefixed?: boolean;
  readonly weights?: 'safetensors' | 'bin';
}

/**
 * Shared directions per module, so that adapters' task vectors are correlated (cosines well away from 0,
 * t away from 0) rather than random, nearly orthogonal ones.
 */
export class FactorPool {
  private readonly shared = new Map<string, { a: Float64Array; b: Float64Array }>();
  constructor(
    private readonly rng: Rng,
    private readonly share = 0.8,
  ) {}

  /** A and B as stored ([r, in] and [out, r]) for `key`, the first rows/columns shared across adapters. */
  factors(key: string, rank: number, inDim: number, outDim: number): { a: Float64Array; b: Float64Array } {
    let s = this.shared.get(key);
    if (s === undefined) {
      s = { a: randomTensor(64 * inDim, this.rng, 0.3), b: randomTensor(outDim * 64, this.rng, 0.05) };
      this.shared.set(key, s);
    }
    const own = 1 - this.share;
    const a = randomTensor(rank * inDim, this.rng, 0.3 * own);
    const b = randomTensor(outDim * rank, this.rng, 0.05 * own);
    for (let q = 0; q < rank; q++) {
      for (let c = 0; c < inDim; c++) a[q * inDim + c] = a[q * inDim + c]! + this.share * s.a[q * inDim + c]!;
      for (let k = 0; k < outDim; k++) b[k * rank + q] = b[k * rank + q]! + this.share * s.b[k * 64 + q]!;
    }
    return { a, b };
  }
}

/**
 * Writes adapter `spec` over a base whose decoded values are `base` (shapes from `shapes`); returns the
 * fine-tune's dense weights of every tensor it changes, in float64.
 */
export async function writeAdapter(
  dir: string,
  spec: AdapterSpec,
  base: ReadonlyMap<string, Float64Array>,
  shapes: readonly BaseTensor[],
  pool: FactorPool,
  rng: Rng,
): Promise<Map<string, Float64Array>> {
  const shapeOf = (name: string): readonly number[] => shapes.find((t) => t.name === name)!.shape;
  const tensors: AdapterTensor[] = [];
  const dense = new Map<string, Float64Array>();
  const prefixed = spec.prefixed ?? true;
  for (const m of spec.modules) {
    const name = m.tensor ?? `${m.module}.weight`;
    const [d0, d1] = shapeOf(name) as [number, number];
    const [outDim, inDim] = m.conv1d === true ? [d1, d0] : [d0, d1];
    const dtype = m.dtype ?? 'F32';
    const raw = pool.factors(m.module, m.rank, inDim, outDim);
    const a = encodeFloats(raw.a, dtype);
    const b = encodeFloats(raw.b, dtype);
    tensors.push({ name: loraKey(m.module, 'A', prefixed), dtype, shape: [m.rank, inDim], values: a });
    tensors.push({ name: loraKey(m.module, 'B', prefixed), dtype, shape: [outDim, m.rank], values: b });
    const da = decodeFloats(a, dtype) as Float64Array;
    const db = decodeFloats(b, dtype) as Float64Array;
    // Stored [R, C]: Linear [out, in] plain; Conv1D [in, out] transposed.
    const d = denseTaskVector(da, db, m.rank, m.scale, d0, d1, m.conv1d === true);
    const w0 = base.get(name)!;
    dense.set(
      name,
      w0.map((x, k) => x + d[k]!),
    );
    if (m.bias !== undefined) {
      const bias = encodeFloats(randomTensor(outDim, rng, 0.05), dtype);
      tensors.push({ name: loraKey(m.module, 'B.bias', prefixed), dtype, shape: [outDim], values: bias });
      const db0 = decodeFloats(bias, dtype);
      const b0 = base.get(m.bias)!;
      dense.set(
        m.bias,
        b0.map((x, k) => x + m.scale * db0[k]!),
      );
    }
  }
  for (const s of spec.saved ?? []) {
    const w0 = base.get(s.name)!;
    const values = decodeFloats(
      encodeFloats(
        w0.map((x) => x + 0.05 * (rng() - 0.5)),
        s.dtype,
      ),
      s.dtype,
    ) as Float64Array;
    tensors.push({
      name: `${prefixed ? 'base_model.model.' : ''}${s.name}`,
      dtype: s.dtype,
      shape: shapeOf(s.name),
      values,
    });
    dense.set(s.name, values);
  }
  await writePeftAdapter(dir, { config: peftConfig(spec.config), tensors, weights: spec.weights });
  return dense;
}

/** A full fine-tune of `base`: every tensor moved (correlated with the adapters' directions only by chance). */
export async function writeFullFineTune(
  dir: string,
  base: ReadonlyMap<string, Float64Array>,
  shapes: readonly BaseTensor[],
  rng: Rng,
  skip: readonly string[] = [],
): Promise<Map<string, Float64Array>> {
  const dense = new Map<string, Float64Array>();
  const specs: TensorSpec[] = [];
  for (const t of shapes) {
    if (skip.includes(t.name)) continue;
    const raw = base.get(t.name)!.map((x) => x + 0.05 * (rng() - 0.5));
    const v = decodeFloats(encodeFloats(raw, t.dtype), t.dtype) as Float64Array;
    dense.set(t.name, v);
    specs.push({ name: t.name, dtype: t.dtype, shape: t.shape, values: v });
  }
  await writeModel(dir, specs);
  return dense;
}

/** A fine-tune of a test case: an adapter (dense weights where it changes something) or a full checkpoint. */
export type FineTune =
  | { readonly kind: 'adapter'; readonly spec: AdapterSpec }
  | { readonly kind: 'full'; readonly skip?: readonly string[] };

export interface BuiltInputs {
  readonly base: string;
  readonly models: string[];
  readonly baseValues: Map<string, Float64Array>;
  /** Per fine-tune: its dense weights (adapters: only where they change something). */
  readonly dense: Map<string, Float64Array>[];
  readonly kinds: ('adapter' | 'full')[];
}

/**
 * Writes a base of `tensors` (its config.json naming `architecture`) and the fine-tunes beside it under
 * `root` (base, ft1, ft2, …), all drawn from one generator seeded with `seed`.
 */
export async function buildInputs(
  root: string,
  tensors: readonly BaseTensor[],
  fineTunes: readonly FineTune[],
  seed: number,
  architecture = 'LlamaForCausalLM',
): Promise<BuiltInputs> {
  const rng = mulberry32(seed);
  const base = path.join(root, 'base');
  const baseValues = await writeBase(base, tensors, rng, {
    'config.json': `{"architectures": ["${architecture}"]}`,
  });
  const pool = new FactorPool(rng);
  const models: string[] = [];
  const dense: Map<string, Float64Array>[] = [];
  for (const [i, ft] of fineTunes.entries()) {
    const dir = path.join(root, `ft${i + 1}`);
    models.push(dir);
    dense.push(
      ft.kind === 'adapter'
        ? await writeAdapter(dir, ft.spec, baseValues, tensors, pool, rng)
        : await writeFullFineTune(dir, baseValues, tensors, rng, ft.skip),
    );
  }
  return { base, models, baseValues, dense, kinds: fineTunes.map((f) => f.kind) };
}

/** The module paths of llamaLike's layer. */
export const llamaModules = {
  q: 'model.layers.0.self_attn.q_proj',
  k: 'model.layers.0.self_attn.k_proj',
  v: 'model.layers.0.self_attn.v_proj',
  gate: 'model.layers.0.mlp.gate_proj',
  down: 'model.layers.0.mlp.down_proj',
} as const;
const { q, k, v, gate, down } = llamaModules;

/** Two adapters of llamaLike, partly overlapping targets (f32 factors, s = 2 and 4). */
export const TWO_ADAPTERS: readonly AdapterSpec[] = [
  {
    config: { r: 4, lora_alpha: 8, target_modules: ['q_proj', 'v_proj', 'gate_proj'] },
    modules: [q, v, gate].map((module) => ({ module, rank: 4, scale: 2 })),
  },
  {
    config: { r: 4, lora_alpha: 16, target_modules: ['q_proj', 'k_proj', 'v_proj', 'down_proj'] },
    modules: [q, k, v, down].map((module) => ({ module, rank: 4, scale: 4 })),
  },
];

/**
 * Three adapters of llamaLike reading the config three ways: rsLoRA (s = α/√r), rank_pattern +
 * alpha_pattern, and bf16 factors without the base_model.model. prefix in adapter_model.bin.
 */
export const THREE_ADAPTERS: readonly AdapterSpec[] = [
  {
    config: { r: 4, lora_alpha: 8, use_rslora: true },
    modules: [q, v].map((module) => ({ module, rank: 4, scale: 8 / 2 })),
  },
  {
    // q_proj: r 8 from rank_pattern, α 4 from alpha_pattern's full name: s = 0.5; v_proj: r = α = 4.
    config: { r: 4, lora_alpha: 4, rank_pattern: { q_proj: 8 }, alpha_pattern: { [q]: 4 } },
    modules: [
      { module: q, rank: 8, scale: 0.5 },
      { module: v, rank: 4, scale: 1 },
    ],
  },
  {
    config: { r: 2, lora_alpha: 2 },
    modules: [q, v, down].map((module) => ({ module, rank: 2, scale: 1, dtype: 'BF16' as const })),
    prefixed: false,
    weights: 'bin',
  },
];

/**
 * Two adapters of llamaLike with whole tensors: a lora_B.bias on k_proj and bf16 factors on lm_head
 * in the first, lm_head in modules_to_save in the second (beside LoRA on the same head).
 */
export const SAVED_AND_BIAS_ADAPTERS: readonly AdapterSpec[] = [
  {
    config: { r: 2, lora_alpha: 4, lora_bias: true },
    modules: [
      { module: q, rank: 2, scale: 2 },
      { module: k, rank: 2, scale: 2, bias: `${k}.bias` },
      { module: 'lm_head', rank: 2, scale: 2, dtype: 'BF16' },
    ],
  },
  {
    config: { r: 2, lora_alpha: 2, modules_to_save: ['lm_head'] },
    modules: [{ module: q, rank: 2, scale: 1 }],
    saved: [{ name: 'lm_head.weight', dtype: 'F32' }],
  },
];

/** Two adapters of gpt2Like in GPT-2's Conv1D layout (fan_in_fan_out, modules under `transformer.`). */
export const GPT2_ADAPTERS: readonly AdapterSpec[] = [0, 1].map((i) => ({
  config: { r: 2 + i, lora_alpha: 4, fan_in_fan_out: true },
  modules: ['attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'].map((m) => ({
    module: `transformer.h.0.${m}`,
    tensor: `h.0.${m}.weight`,
    rank: 2 + i,
    scale: 4 / (2 + i),
    conv1d: true,
  })),
}));

/** `specs` as fine-tunes. */
export const asFineTunes = (specs: readonly AdapterSpec[]): FineTune[] =>
  specs.map((spec) => ({ kind: 'adapter', spec }));

export const join = path.join;
