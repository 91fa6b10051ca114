import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { FloatDType } from '../dtype';
import { ModelStockError } from '../errors';

/** torch / mergekit dtype names → safetensors dtypes. */
const DTYPE_NAMES: Record<string, FloatDType> = {
  float64: 'F64',
  float32: 'F32',
  float16: 'F16',
  bfloat16: 'BF16',
  fp32: 'F32',
  fp16: 'F16',
  bf16: 'BF16',
  F64: 'F64',
  F32: 'F32',
  F16: 'F16',
  BF16: 'BF16',
};

export function parseDtypeName(s: string, what: string): FloatDType {
  const d = DTYPE_NAMES[s] ?? DTYPE_NAMES[s.toLowerCase()];
  if (d === undefined) {
    throw new ModelStockError(
      'BAD_CONFIG',
      `${what} "${s}" is not one of float32, float16, bfloat16, float64 (or F32, F16, BF16, F64)`,
    );
  }
  return d;
}

/** What a mergekit `merge_method: model_stock` config resolves to. */
export interface MergekitConfig {
  readonly base: string;
  readonly models: string[];
  readonly filterWise: boolean;
  /** mergekit's `out_dtype`, else its `dtype` (which mergekit also uses for the output). */
  readonly outDtype: FloatDType | undefined;
}

const TOP_KEYS = new Set([
  'merge_method',
  'base_model',
  'models',
  'parameters',
  'dtype',
  'out_dtype',
  'tokenizer_source',
  'name',
]);

/**
 * Reads mergekit's YAML for `merge_method: model_stock`. Everything it cannot honour is an error, not
 * ignored: other methods, slices, per-model parameters, LoRA suffixes, tokenizer sources other than base.
 * Model paths are local folders, resolved against the current directory as mergekit does.
 */
export function parseMergekitYaml(text: string, file: string): MergekitConfig {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new ModelStockError('BAD_CONFIG', `not valid YAML: ${(e as Error).message.split('\n')[0]}`, {
      file,
    });
  }
  const bad = (msg: string): ModelStockError => new ModelStockError('BAD_CONFIG', msg, { file });
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw bad('expected a YAML mapping');
  const c = doc as Record<string, unknown>;
  for (const k of Object.keys(c)) {
    if (!TOP_KEYS.has(k)) {
      throw bad(
        k === 'slices'
          ? '"slices" is not supported: model_stock merges whole models (use base_model and models)'
          : `unsupported key "${k}" (supported: ${[...TOP_KEYS].join(', ')})`,
      );
    }
  }
  if (c.merge_method !== 'model_stock') {
    throw bad(`merge_method must be model_stock, got ${JSON.stringify(c.merge_method)}`);
  }
  const modelPath = (v: unknown, where: string): string => {
    if (typeof v !== 'string' || v.length === 0) throw bad(`${where} must be a model path`);
    if (v.includes('+')) throw bad(`${where} "${v}": LoRA adapters (model+lora) are not supported`);
    return v;
  };
  const base = modelPath(c.base_model, 'base_model');
  if (!Array.isArray(c.models)) throw bad('models must be a list of { model: PATH }');
  const models = c.models.map((m: unknown, i: number) => {
    if (typeof m === 'string') return modelPath(m, `models[${i}]`);
    if (m === null || typeof m !== 'object') throw bad(`models[${i}] must be { model: PATH }`);
    const entry = m as Record<string, unknown>;
    for (const k of Object.keys(entry)) {
      if (k === 'model') continue;
      if (k === 'parameters') {
        throw bad(
          `models[${i}].parameters: model_stock takes no per-model parameters (weights are derived from angles)`,
        );
      }
      throw bad(`models[${i}]: unsupported key "${k}"`);
    }
    return modelPath(entry.model, `models[${i}].model`);
  });
  // mergekit lets the base appear in models too; it is not a fine-tune.
  const fineTuned = models.filter((m) => path.resolve(m) !== path.resolve(base));
  let filterWise = false;
  if (c.parameters !== undefined && c.parameters !== null) {
    if (typeof c.parameters !== 'object' || Array.isArray(c.parameters))
      throw bad('parameters must be a mapping');
    for (const [k, v] of Object.entries(c.parameters as Record<string, unknown>)) {
      if (k !== 'filter_wise')
        throw bad(`parameters.${k} is not a model_stock parameter (only filter_wise is)`);
      if (typeof v !== 'boolean') throw bad('parameters.filter_wise must be true or false');
      filterWise = v;
    }
  }
  if (c.tokenizer_source !== undefined && c.tokenizer_source !== 'base') {
    throw bad(`tokenizer_source ${JSON.stringify(c.tokenizer_source)} is not supported (only "base")`);
  }
  const dtypeOf = (k: 'dtype' | 'out_dtype'): FloatDType | undefined => {
    const v = c[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') throw bad(`${k} must be a dtype name`);
    try {
      return parseDtypeName(v, k);
    } catch (e) {
      throw bad((e as Error).message);
    }
  };
  // mergekit computes in `dtype` and writes `out_dtype ?? dtype`; we always compute in float64/float32, so
  // `dtype` only decides the output dtype when out_dtype is absent.
  const outDtype = dtypeOf('out_dtype') ?? dtypeOf('dtype');
  return { base, models: fineTuned, filterWise, outDtype };
}

export function readMergekitYaml(file: string): MergekitConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ModelStockError('BAD_CONFIG', `cannot read config: ${(e as Error).message}`, { file });
  }
  return parseMergekitYaml(text, file);
}

const TORCH_NAME: Record<FloatDType, string> = {
  F64: 'float64',
  F32: 'float32',
  F16: 'float16',
  BF16: 'bfloat16',
};

/** The resolved merge as mergekit YAML (written beside the weights). mergekit has no theta rule, so a non-default one is a comment.. */
export function resolvedConfigYaml(o: {
  base: string;
  models: readonly string[];
  filterWise: boolean;
  theta: string;
  outDtype: FloatDType | undefined;
}): string {
  const doc: Record<string, unknown> = {
    merge_method: 'model_stock',
    base_model: o.base,
    models: o.models.map((model) => ({ model })),
    parameters: { filter_wise: o.filterWise },
    ...(o.outDtype !== undefined ? { out_dtype: TORCH_NAME[o.outDtype] } : {}),
    tokenizer_source: 'base',
  };
  const comment = o.theta !== 'mean-cos' ? `# model-stock: --theta ${o.theta}\n` : '';
  return comment + toYaml(doc);
}
