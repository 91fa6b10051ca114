/**
 * A merge of LoRA adapters written as a LoRA adapter (`--out-format peft`): Model Stock's merged weight
 *
 *   W = W0 + t·(1/N)·Σ_i s_i·B_i·A_i
 *
 * is W0 plus a product of rank Σ r_i, so it is exactly a LoRA with
 *
 *   A′ = [A_1; A_2; …]  (rows stacked)      B′ = [(t/N)·s_1·B_1 | (t/N)·s_2·B_2 | …]  (columns stacked)
 *
 * and scale 1. N counts every fine-tune of the merge, also the adapters that leave a module as it is
 * (their task vector is zero there: docs/merge-contract.md's adapter rules), so a module only some
 * adapters target is concatenated over those that do, still divided by N. Filter-wise, the ratio t_k of
 * stored row k scales row k of every B block (a Linear's stored row is an output row), or column k of
 * every A block for a Conv1D layer, whose stored weight is [in, out] and whose task vector is
 * s·(B·A)ᵀ. This is PEFT's own `add_weighted_adapter(combination_type="cat")`
 * (P:src/peft/tuners/lora/model.py#L727-L774) with Model Stock's t, per-module ranks instead of one
 * zero-padded global rank, and float32 factors (bf16 factors scaled by t/N would lose ~2⁻⁹).
 *
 * The config follows /work/notes/peft-format.md §6.4 and §10 (references P: are to PEFT's source at
 * v0.20.0, huggingface/peft@a5526d2):
 * - `r = lora_alpha =` the largest module rank and `use_rslora: false`, so every module's scale
 *   lora_alpha/r is 1 — also for consumers that ignore the patterns (vLLM, TGI: one global scale);
 *   PEFT's own `cat` inherits use_rslora from its first adapter and over-scales by √r (§5.2).
 * - each module whose rank differs gets `rank_pattern[name] = alpha_pattern[name] = its rank`, the key
 *   the bare full module name, as PEFT's convert_to_lora writes it (P:src/peft/tuners/lora/conversion.py
 *   #L260, #L321-L327): every PEFT version reads it (≤ 0.14 by the exact-name fallback, ≥ 0.15 by
 *   `(.*\.)?(key)$`, P:src/peft/utils/other.py#L1512-L1520), as long as it matches no other module.
 * - only the 24 keys PEFT 0.13 knows: an unknown key is a TypeError up to 0.13 (§1.6, §9.3).
 * - `target_modules`: the sorted full names of the modules with factors; `init_lora_weights: true`, so
 *   a module PEFT targets but the file lacks stays at B = 0.
 * - `modules_to_save`: modules merged densely (an adapter saved them whole, or trained their bias):
 *   their weights under PEFT's plain names (P:src/peft/utils/other.py#L782-L791), and no LoRA keys for
 *   them (PEFT does not target a module it saves whole).
 * - keys `base_model.model.<module>.lora_A.weight` / `.lora_B.weight` (P:src/peft/utils/save_and_load.py
 *   #L470-L504): PeftModel.from_pretrained silently ignores keys without the prefix (§3.4).
 * - `adapter_model.safetensors` in the layout of safetensors' prepare(): `{"format":"pt"}` metadata,
 *   tensors by dtype (largest first), then by name bytewise (safetensors@24b0b28 tensor.rs#L218-L265).
 */
import { dtypeBits, type DType } from '../dtype';
import { peft013Config } from '../adapter/config';
import { ModelStockError } from '../errors';
import { planShards } from '../safetensors/layout';
import type { ShardLayout, TensorLayoutEntry } from '../safetensors/types';
import { pythonJson } from '../util/pythonJson';

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
/** Every key PEFT writes (P:src/peft/peft_model.py#L393-L433) is prefixed with the PeftModel's path to the model. */
export const PEFT_KEY_PREFIX = 'base_model.model.';

/** One adapter's factors of one module, decoded: its task vector is scale·B·A (or its transpose). */
export interface FactorValues {
  /** lora_A as stored: [rank, C] (plain) or [rank, R] (transposed). */
  readonly a: ArrayLike<number>;
  /** lora_B as stored: [R, rank] (plain) or [C, rank] (transposed). */
  readonly b: ArrayLike<number>;
  readonly rank: number;
  /** s = lora_alpha/r, or lora_alpha/√r with rsLoRA. */
  readonly scale: number;
}

/** One module of the merge whose every fine-tune is an adapter with factors there, or leaves it as it is. */
export interface LowRankMerge {
  /** The module's path in the model PEFT wraps, e.g. `model.layers.0.self_attn.q_proj`. */
  readonly module: string;
  /** The stored weight seen as [R, C] = [shape[0], rest]. */
  readonly rows: number;
  readonly cols: number;
  /** A Conv1D layer (fan_in_fan_out): stored [in, out], task vector s·(B·A)ᵀ. */
  readonly transposed: boolean;
  /**
   * An embedding (stored [vocab, dim], always transposed): PEFT keeps its factors under
   * `lora_embedding_A` / `lora_embedding_B`, without `.weight` (P:src/peft/tuners/lora/layer.py#L1181-L1184).
   */
  readonly embedding?: boolean;
  /** N: every fine-tune of the merge, those leaving the module as it is included. */
  readonly n: number;
  /** One ratio (layer-wise) or one per stored row (filter-wise). */
  readonly t: ArrayLike<number>;
  /** Per fine-tune: its factors, or undefined where it leaves the module as it is. */
  readonly factors: readonly (FactorValues | undefined)[];
}

/** A module's merged factors, PEFT's shapes: lora_A [rank, in], lora_B [out, rank]. */
export interface MergedFactors {
  readonly module: string;
  readonly embedding?: boolean;
  readonly rank: number;
  readonly a: Float32Array;
  readonly aShape: readonly [number, number];
  readonly b: Float32Array;
  readonly bShape: readonly [number, number];
}

/**
 * A′ and B′ of one module (see the top of this file): every entry computed in float64 and rounded once
 * to float32. Throws if no fine-tune has factors there (nothing to write: the caller leaves the module out).
 */
export function mergeFactors(m: LowRankMerge): MergedFactors {
  const { rows: R, cols: C, transposed, n } = m;
  const filterWise = m.t.length !== 1;
  if (filterWise && m.t.length !== R) {
    throw new ModelStockError(
      'INVALID_ARGUMENT',
      `${m.module}: ${m.t.length} ratios for ${R} stored rows (one, or one per row)`,
    );
  }
  const present = m.factors.filter((f): f is FactorValues => f !== undefined);
  const S = present.reduce((a, f) => a + f.rank, 0);
  if (S === 0) throw new ModelStockError('INVALID_ARGUMENT', `${m.module}: no fine-tune has factors here`);
  // PEFT's in/out: a Linear's in is C and out R; a Conv1D's stored [in, out] has in R and out C.
  const inDim = transposed ? R : C;
  const outDim = transposed ? C : R;
  const a = new Float32Array(S * inDim);
  const b = new Float32Array(outDim * S);
  const t0 = m.t[0]!;
  let o = 0;
  for (const f of present) {
    const r = f.rank;
    if (f.a.length !== r * inDim || f.b.length !== outDim * r) {
      throw new ModelStockError(
        'INVALID_ARGUMENT',
        `${m.module}: factors of rank ${r} have ${f.a.length} and ${f.b.length} elements, expected ${r * inDim} and ${outDim * r}`,
      );
    }
    const coef = f.scale / n;
    for (let q = 0; q < r; q++) {
      const row = (o + q) * inDim;
      for (let k = 0; k < inDim; k++) {
        // Conv1D, filter-wise: stored row k is input feature k, column k of A.
        const tk = transposed && filterWise ? m.t[k]! : 1;
        a[row + k] = tk * f.a[q * inDim + k]!;
      }
    }
    for (let x = 0; x < outDim; x++) {
      // Linear: output row x is stored row x; layer-wise t rides on B in both layouts.
      const tx = filterWise ? (transposed ? 1 : m.t[x]!) : t0;
      const c = tx * coef;
      for (let q = 0; q < r; q++) b[x * S + o + q] = c * f.b[x * r + q]!;
    }
    o += r;
  }
  return {
    module: m.module,
    ...(m.embedding === true ? { embedding: true } : {}),
    rank: S,
    a,
    aShape: [S, inDim],
    b,
    bShape: [outDim, S],
  };
}

/** `base_model.model.<module>.lora_A.weight` / `.lora_B.weight`; an embedding's `.lora_embedding_A` / `_B`. */
export function loraKeyOf(module: string, part: 'A' | 'B', embedding = false): string {
  return embedding
    ? `${PEFT_KEY_PREFIX}${module}.lora_embedding_${part}`
    : `${PEFT_KEY_PREFIX}${module}.lora_${part}.weight`;
}

/** The module path of a parameter name (`model.layers.0.mlp.up_proj.weight` → `…up_proj`). */
export function moduleOfParameter(name: string): string {
  const dot = name.lastIndexOf('.');
  return dot < 0 ? '' : name.slice(0, dot);
}

/** Module names PEFT's pattern keys and modules_to_save entries may be written for: a regex's `.` is its only metacharacter. */
const PLAIN_NAME = /^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$/;

/** PEFT ≥ 0.15's pattern rule and the 0.6–0.14 one (peft-format.md §6.2). */
function patternMatches(key: string, name: string): boolean {
  return new RegExp(`^(?:.*\\.)?(?:${key})$`).test(name) || new RegExp(`^.*\\.${key}$`).test(name);
}

export interface AdapterConfigInput {
  /** Modules with merged factors and their ranks. */
  readonly modules: readonly { readonly module: string; readonly rank: number }[];
  /** Modules saved whole (merged densely). */
  readonly modulesToSave: readonly string[];
  /** Every module name of the model as far as known (the base's, the adapters'): what keys must not also match. */
  readonly knownModules: Iterable<string>;
  /** Every targeted module is a Conv1D layer (PEFT saves the flag it last set, P:src/peft/tuners/lora/layer.py#L2627-L2634). */
  readonly fanInFanOut: boolean;
  readonly baseModel: string | undefined;
  readonly taskType: string | undefined;
}

/**
 * adapter_config.json's fields (PEFT 0.13's 24 keys, peft-format.md §7.2), or BAD_CONFIG naming why the
 * merge cannot be written as an adapter PEFT reads exactly.
 */
export function mergedAdapterConfig(x: AdapterConfigInput): Record<string, unknown> {
  const refuse = (m: string): ModelStockError =>
    new ModelStockError(
      'UNSUPPORTED_ADAPTER',
      `--out-format peft: ${m}; write a full model instead (--out-format model)`,
    );
  if (x.modules.length === 0) {
    throw refuse(
      'no module keeps LoRA factors (every change is a whole saved tensor), and PEFT needs at least one target module',
    );
  }
  const targeted = new Set(x.modules.map((m) => m.module));
  const known = new Set([...x.knownModules, ...targeted, ...x.modulesToSave]);
  for (const name of [...targeted, ...x.modulesToSave]) {
    if (!PLAIN_NAME.test(name)) {
      throw refuse(`module name "${name}" has characters PEFT would read as a regular expression`);
    }
  }
  const r = Math.max(...x.modules.map((m) => m.rank));
  const rankPattern: Record<string, number> = {};
  for (const { module, rank } of [...x.modules].sort((p, q) => (p.module < q.module ? -1 : 1))) {
    if (rank === r) continue;
    for (const other of known) {
      if (other !== module && patternMatches(module, other)) {
        throw refuse(
          `the rank_pattern key "${module}" (rank ${rank}) would also match module "${other}" in some PEFT version, giving it the wrong rank and scale`,
        );
      }
    }
    rankPattern[module] = rank;
  }
  // PEFT wraps every module whose name ends with an entry (a plain endswith, P:src/peft/utils/other.py#L1076)
  // and then gives it no LoRA layer: factors of such a module would be ignored without a word.
  for (const saved of x.modulesToSave) {
    for (const t of targeted) {
      if (t.endsWith(saved)) {
        throw refuse(
          `modules_to_save entry "${saved}" would also catch the LoRA-targeted module "${t}", whose factors PEFT would then ignore`,
        );
      }
    }
  }
  return {
    ...peft013Config(),
    alpha_pattern: { ...rankPattern },
    base_model_name_or_path: x.baseModel ?? null,
    fan_in_fan_out: x.fanInFanOut,
    lora_alpha: r,
    modules_to_save: x.modulesToSave.length === 0 ? null : [...x.modulesToSave].sort(),
    r,
    rank_pattern: rankPattern,
    target_modules: [...targeted].sort(),
    task_type: x.taskType ?? null,
  };
}

/** adapter_config.json's text as PEFT writes it: `json.dumps(indent=2, sort_keys=True)`, no trailing newline (P:src/peft/config.py#L163). */
export function adapterConfigText(config: Record<string, unknown>): string {
  return pythonJson(config);
}

/** safetensors' Dtype enum order (safetensors/src/tensor.rs): a larger one is written first. */
function dtypeRank(d: DType): number {
  const order: readonly string[] = [
    'BOOL',
    'F4',
    'F6_E2M3',
    'F6_E3M2',
    'U8',
    'I8',
    'F8_E5M2',
    'F8_E4M3',
    'F8_E8M0',
    'I16',
    'U16',
    'F16',
    'BF16',
    'I32',
    'U32',
    'F32',
    'F64',
    'I64',
    'U64',
  ];
  const i = order.indexOf(d);
  return i < 0 ? dtypeBits(d) : i;
}

/**
 * The one-file layout of adapter_model.safetensors: tensors in the order safetensors' prepare() writes
 * them (dtype, largest first; then name, bytewise), `{"format":"pt"}` metadata.
 */
export function adapterLayout(entries: readonly TensorLayoutEntry[]): ShardLayout {
  const sorted = [...entries].sort((x, y) => {
    const d = dtypeRank(y.dtype) - dtypeRank(x.dtype);
    return d !== 0 ? d : Buffer.compare(Buffer.from(x.name), Buffer.from(y.name));
  });
  const layout = planShards(sorted, { shardSize: Number.MAX_SAFE_INTEGER });
  return { ...layout, shards: layout.shards.map((s) => ({ ...s, fileName: ADAPTER_WEIGHTS_FILE })) };
}

/** The two layout entries of a module's merged factors (float32). */
export function factorEntries(f: MergedFactors): TensorLayoutEntry[] {
  return [
    {
      name: loraKeyOf(f.module, 'A', f.embedding),
      dtype: 'F32',
      shape: f.aShape,
      byteLength: f.a.byteLength,
    },
    {
      name: loraKeyOf(f.module, 'B', f.embedding),
      dtype: 'F32',
      shape: f.bShape,
      byteLength: f.b.byteLength,
    },
  ];
}

const bytesOf = (x: Float32Array): Uint8Array => new Uint8Array(x.buffer, x.byteOffset, x.byteLength);

/** Hands a module's merged factors to the writer of adapter_model.safetensors (little-endian hosts: float32 bytes as they are). */
export async function writeFactors(
  writer: { write(name: string, offset: number, data: Uint8Array): Promise<void> },
  f: MergedFactors,
): Promise<void> {
  await writer.write(loraKeyOf(f.module, 'A', f.embedding), 0, bytesOf(f.a));
  await writer.write(loraKeyOf(f.module, 'B', f.embedding), 0, bytesOf(f.b));
}
