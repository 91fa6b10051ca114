import * as fs from 'node:fs';
import { parseAllDocuments, stringify as toYaml } from 'yaml';
import { FloatDType } from '../dtype';
import { ModelStockError } from '../errors';
import { modelRefKey } from '../hub/reference';
import { isTemplateString } from '../output/tokenizer';
import type { LayerRangeCheck } from './layers';
import { OUT_FORMATS, type OutFormat } from '../types';

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
  const d = DTYPE_NAMES[s] ?? DTYPE_NAMES[s.toLowerCase()] ?? DTYPE_NAMES[s.replace(/^torch\./, '')];
  if (d === undefined) {
    throw new ModelStockError(
      'BAD_CONFIG',
      `${what} "${s}" is not one of float32, float16, bfloat16, float64 (or F32, F16, BF16, F64)`,
    );
  }
  return d;
}

/**
 * What happens to each key of a mergekit config here. README.md shows the same table (a test keeps
 * them equal): honoured = it changes the merge as in mergekit; accepted = allowed, no effect in
 * mergekit either; ignored = allowed with a warning because model_stock has no use for it; refused =
 * an error, because honouring it would need something model-stock does not do.
 */
export type KeyFate = 'honoured' | 'accepted' | 'ignored' | 'refused';

export const MERGEKIT_KEYS: readonly {
  readonly key: string;
  readonly fate: KeyFate;
  readonly note: string;
}[] = [
  { key: 'merge_method', fate: 'honoured', note: 'must be `model_stock`' },
  {
    key: 'base_model',
    fate: 'honoured',
    note: 'a path, a Hub ID `org/name[@revision]`, or `{model: {path, revision}}`',
  },
  {
    key: 'models[].model',
    fate: 'honoured',
    note: 'the fine-tunes; the base listed here too, or a model listed twice, is dropped with a warning, as mergekit does',
  },
  {
    key: 'slices',
    fate: 'honoured',
    note: 'one slice whose sources each cover every layer: the same merge as `models`',
  },
  {
    key: 'slices[].sources[].layer_range',
    fate: 'honoured',
    note: "must be `[0, L]` with L the layer count in the model's config.json; partial ranges are refused",
  },
  { key: 'slices[].base_model', fate: 'honoured', note: 'must be the same model as `base_model`' },
  {
    key: 'parameters.filter_wise',
    fate: 'honoured',
    note: "`true`/`false` (also in a slice's `parameters`); per-tensor forms (`[{filter, value}]`, gradients) are refused",
  },
  {
    key: 'dtype',
    fate: 'honoured',
    note: 'the output dtype when `out_dtype` is absent (we always compute in f32/f64)',
  },
  { key: 'out_dtype', fate: 'honoured', note: 'the output dtype' },
  {
    key: 'state_dict_key',
    fate: 'honoured',
    note: "model-stock's own (mergekit has none): the entry of every PyTorch input that holds its weights, as `--state-dict-key`",
  },
  {
    key: 'model+lora',
    fate: 'honoured',
    note: "also `{model: {path}, lora: {path}}`: the model with that PEFT LoRA adapter applied; over the base, the adapter alone (README's LoRA adapters)",
  },
  {
    key: 'out_format',
    fate: 'honoured',
    note: "model-stock's own (mergekit has none): `model` (default) or `peft`, as `--out-format`: a merge of LoRA adapters written as one adapter",
  },
  {
    key: 'tokenizer_source',
    fate: 'honoured',
    note: "`base`, the base's reference, or another listed model whose vocabulary fits the base's embedding rows (its tokenizer files are copied); `union` is refused",
  },
  {
    key: 'tokenizer.source',
    fate: 'honoured',
    note: "as `tokenizer_source` (mergekit's default there, `union`, is refused)",
  },
  {
    key: 'chat_template',
    fate: 'honoured',
    note: "a template string is written into the output's tokenizer config; a template name or `auto` is ignored with a warning",
  },
  { key: 'name', fate: 'accepted', note: 'a label' },
  {
    key: 'models[].parameters',
    fate: 'ignored',
    note: '`weight`, `density`, …: model_stock derives its weights from angles (one warning)',
  },
  { key: 'slices[].sources[].parameters', fate: 'ignored', note: 'as `models[].parameters`' },
  { key: 'parameters.*', fate: 'ignored', note: "other top-level or slice parameters: not model_stock's" },
  { key: 'override_architecture', fate: 'ignored', note: 'layer counts are read from config.json' },
  {
    key: 'tokenizer_source: union',
    fate: 'refused',
    note: 'needs vocabulary merging and embedding resizing',
  },
  { key: 'tokenizer.tokens', fate: 'refused', note: 'embedding surgery' },
  { key: 'tokenizer.pad_to_multiple_of', fate: 'refused', note: 'embedding resizing' },
  { key: 'slices (partial)', fate: 'refused', note: 'several slices, or ranges short of every layer' },
  { key: 'slices[].residual_weight', fate: 'refused', note: 'not a model_stock setting' },
  { key: 'modules', fate: 'refused', note: 'per-module merges' },
  { key: 'several YAML documents', fate: 'refused', note: 'one merge per file' },
  {
    key: 'any other key',
    fate: 'refused',
    note: 'mergekit ignores unknown keys silently; here a typo is an error',
  },
];

/** The table above as Markdown, as README.md shows it. */
export function mergekitKeysMarkdown(): string {
  const rows = MERGEKIT_KEYS.map((k) => `| \`${k.key}\` | ${k.fate} | ${k.note} |`);
  return ['| key | here | notes |', '|---|---|---|', ...rows].join('\n');
}

/** What a mergekit `merge_method: model_stock` config resolves to. References are kept as written. */
export interface MergekitConfig {
  readonly base: string;
  readonly models: string[];
  readonly filterWise: boolean;
  /** mergekit's `out_dtype`, else its `dtype` (which mergekit also uses for the output). */
  readonly outDtype: FloatDType | undefined;
  /** `base`, or the reference of the model whose tokenizer the output gets. */
  readonly tokenizerSource: string;
  /** A template string for the output's tokenizer config. */
  readonly chatTemplate: string | undefined;
  /** From `slices`: ranges to check against each model's layer count once resolved. */
  readonly layerRanges: LayerRangeCheck[];
  /** model-stock's `state_dict_key`: the entry of every PyTorch input that holds its weights. */
  readonly stateDictKey: string | undefined;
  /** model-stock's `out_format`: what the merge writes (absent: the caller's choice, default a model). */
  readonly outFormat: OutFormat | undefined;
  /** Keys accepted but without effect, models dropped. */
  readonly warnings: string[];
}

const TOP_KEYS = new Set([
  'merge_method',
  'base_model',
  'models',
  'slices',
  'parameters',
  'dtype',
  'out_dtype',
  'tokenizer_source',
  'tokenizer',
  'chat_template',
  'name',
  'state_dict_key',
  'out_format',
]);

type Mapping = Record<string, unknown>;
const isMapping = (v: unknown): v is Mapping => v !== null && typeof v === 'object' && !Array.isArray(v);
const given = (v: unknown): boolean => v !== undefined && v !== null;

/**
 * Reads mergekit's YAML for `merge_method: model_stock`, the way model cards publish it, into merge
 * options; MERGEKIT_KEYS says what each key does. Paths are resolved later, against the current folder
 * as mergekit does; Hub IDs through the Hugging Face cache.
 */
export function parseMergekitYaml(text: string, file: string): MergekitConfig {
  const bad = (msg: string): ModelStockError => new ModelStockError('BAD_CONFIG', msg, { file });
  const docs = parseAllDocuments(text);
  if (!Array.isArray(docs)) throw bad('expected a YAML mapping');
  for (const d of docs) {
    const [err] = d.errors;
    if (err !== undefined) throw bad(`not valid YAML: ${err.message.split('\n')[0]}`);
  }
  if (docs.length > 1) {
    throw bad(`holds ${docs.length} YAML documents (separated by ---); mergekit reads one merge per file`);
  }
  const c: unknown = docs[0]?.toJS();
  if (!isMapping(c)) throw bad('expected a YAML mapping');
  const warnings: string[] = [];

  for (const k of Object.keys(c)) {
    if (k === 'modules')
      throw bad('"modules" (per-module merges) is not supported: give base_model and models');
    if (!TOP_KEYS.has(k)) throw bad(`unsupported key "${k}" (supported: ${[...TOP_KEYS].join(', ')})`);
  }
  if (c.merge_method !== 'model_stock') {
    throw bad(`merge_method must be model_stock, got ${JSON.stringify(c.merge_method)}`);
  }

  /** mergekit's ModelPath: "path[@revision]" or {path, revision}. */
  const pathRef = (m: unknown, where: string): string => {
    if (typeof m === 'string' && m.trim() !== '') return m;
    if (isMapping(m) && typeof m.path === 'string' && m.path.trim() !== '') {
      for (const k of Object.keys(m))
        if (k !== 'path' && k !== 'revision') throw bad(`${where}: unsupported key "${k}"`);
      if (!given(m.revision)) return m.path;
      if (typeof m.revision !== 'string' || m.revision === '')
        throw bad(`${where}.revision must be a string`);
      return `${m.path}@${m.revision}`;
    }
    throw bad(`${where} must be a path, a Hub ID org/name[@revision], or {path, revision}`);
  };

  /** mergekit's ModelReference: "path[@revision]" or {model: "…" | {path, revision}, lora, override_architecture}. */
  const modelRef = (v: unknown, where: string): string => {
    if (typeof v === 'string' && v.trim() !== '') return v;
    if (isMapping(v)) {
      for (const k of Object.keys(v)) {
        if (k !== 'model' && k !== 'lora' && k !== 'override_architecture')
          throw bad(`${where}: unsupported key "${k}"`);
      }
      const lora = given(v.lora) ? pathRef(v.lora, `${where}.lora`) : undefined;
      if (given(v.override_architecture)) {
        warnings.push(
          `${where}.override_architecture ignored: model-stock needs no architecture (layer counts come from config.json)`,
        );
      }
      const m = given(v.model) ? pathRef(v.model, `${where}.model`) : undefined;
      // mergekit's ModelReference {model, lora}: the model with the adapter applied, as MODEL+ADAPTER.
      if (m !== undefined) return lora === undefined ? m : `${m}+${lora}`;
    }
    throw bad(`${where} must be a model: a path, a Hub ID org/name[@revision], or {model: {path, revision}}`);
  };

  const ignoredModelParams: string[] = [];
  const otherParams: string[] = [];
  /** A `parameters` mapping: filter_wise read (true/false only), the rest noted as ignored. */
  const readParameters = (p: unknown, where: string): boolean | undefined => {
    if (!given(p)) return undefined;
    if (!isMapping(p)) throw bad(`${where} must be a mapping`);
    let filterWise: boolean | undefined;
    for (const [k, v] of Object.entries(p)) {
      if (k !== 'filter_wise') {
        otherParams.push(`${where}.${k}`);
        continue;
      }
      if (typeof v !== 'boolean') {
        throw bad(
          `${where}.filter_wise: ${JSON.stringify(v)} is not supported: give true or false ` +
            '(per-tensor [{filter, value}] settings and per-layer gradients are not)',
        );
      }
      filterWise = v;
    }
    return filterWise;
  };

  let filterWise = readParameters(c.parameters, 'parameters') ?? false;
  const layerRanges: LayerRangeCheck[] = [];
  let base = given(c.base_model) ? modelRef(c.base_model, 'base_model') : undefined;
  let listed: { ref: string; where: string }[];

  if (given(c.models) && given(c.slices))
    throw bad('give models or slices, not both (mergekit refuses both too)');
  if (given(c.slices)) {
    if (!Array.isArray(c.slices) || c.slices.length === 0) throw bad('slices must be a non-empty list');
    if (c.slices.length > 1) {
      throw bad(
        `slices[1]: ${c.slices.length} slices are not supported: model_stock here merges whole models — give one ` +
          'slice whose sources each cover every layer, or use models:',
      );
    }
    const slice: unknown = c.slices[0];
    if (!isMapping(slice)) throw bad('slices[0] must be a mapping with sources');
    for (const k of Object.keys(slice)) {
      if (k === 'residual_weight') throw bad('slices[0].residual_weight is not supported by model_stock');
      if (k !== 'sources' && k !== 'base_model' && k !== 'parameters')
        throw bad(`slices[0]: unsupported key "${k}"`);
    }
    filterWise = readParameters(slice.parameters, 'slices[0].parameters') ?? filterWise;
    if (given(slice.base_model)) {
      const sliceBase = modelRef(slice.base_model, 'slices[0].base_model');
      if (base !== undefined && modelRefKey(sliceBase) !== modelRefKey(base)) {
        throw bad(
          `slices[0].base_model "${sliceBase}" differs from base_model "${base}": one base per merge`,
        );
      }
      base ??= sliceBase;
    }
    if (!Array.isArray(slice.sources) || slice.sources.length === 0) {
      throw bad('slices[0].sources must be a non-empty list of {model, layer_range}');
    }
    listed = slice.sources.map((s: unknown, j: number) => {
      const where = `slices[0].sources[${j}]`;
      if (!isMapping(s)) throw bad(`${where} must be {model, layer_range}`);
      for (const k of Object.keys(s)) {
        if (k !== 'model' && k !== 'layer_range' && k !== 'parameters')
          throw bad(`${where}: unsupported key "${k}"`);
      }
      const ref = modelRef(s.model, `${where}.model`);
      const r = s.layer_range;
      if (
        !Array.isArray(r) ||
        r.length !== 2 ||
        !r.every((x) => Number.isSafeInteger(x) && (x as number) >= 0) ||
        (r[0] as number) >= (r[1] as number)
      ) {
        throw bad(`${where}.layer_range must be [from, to] with 0 ≤ from < to, got ${JSON.stringify(r)}`);
      }
      if (given(s.parameters)) ignoredModelParams.push(`${where}.parameters`);
      layerRanges.push({ reference: ref, layerRange: [r[0] as number, r[1] as number], where, file });
      return { ref, where };
    });
  } else if (Array.isArray(c.models)) {
    listed = c.models.map((m: unknown, i: number) => {
      const where = `models[${i}]`;
      if (typeof m === 'string') return { ref: modelRef(m, where), where };
      if (!isMapping(m)) throw bad(`${where} must be { model: PATH }`);
      for (const k of Object.keys(m)) {
        if (k !== 'model' && k !== 'parameters') throw bad(`${where}: unsupported key "${k}"`);
      }
      if (given(m.parameters)) ignoredModelParams.push(`${where}.parameters`);
      return { ref: modelRef(m.model, `${where}.model`), where };
    });
  } else {
    throw bad('models must be a list of { model: PATH } (or give slices)');
  }
  if (base === undefined) throw bad('base_model is required: model_stock measures every fine-tune from it');

  if (ignoredModelParams.length > 0) {
    warnings.push(
      `${ignoredModelParams.join(', ')} ignored: model_stock derives each model's weight from the angles between task vectors`,
    );
  }
  if (otherParams.length > 0) {
    warnings.push(`${otherParams.join(', ')} ignored: model_stock's only parameter is filter_wise`);
  }

  // mergekit lets the base appear among the inputs (cards list it, slices need it) and keys inputs by
  // reference, so a repeated model counts once.
  const baseKey = modelRefKey(base);
  const seen = new Map<string, string>();
  const models: string[] = [];
  for (const { ref, where } of listed) {
    const key = modelRefKey(ref);
    if (key === baseKey) {
      warnings.push(
        `${where} "${ref}" is the base_model; it is not a fine-tune and is left out, as mergekit does`,
      );
      continue;
    }
    const first = seen.get(key);
    if (first !== undefined) {
      warnings.push(`${where} "${ref}" repeats ${first}; it is counted once, as mergekit does`);
      continue;
    }
    seen.set(key, where);
    models.push(ref);
  }

  let tokenizerSource = 'base';
  let sourceKey = 'tokenizer_source';
  let source: unknown = c.tokenizer_source;
  if (given(c.tokenizer)) {
    if (given(c.tokenizer_source))
      throw bad('give tokenizer_source or tokenizer, not both (mergekit refuses both too)');
    if (!isMapping(c.tokenizer)) throw bad('tokenizer must be a mapping');
    for (const k of Object.keys(c.tokenizer)) {
      if (k === 'tokens')
        throw bad(
          'tokenizer.tokens is not supported: it needs embedding surgery, which model-stock does not do',
        );
      if (k === 'pad_to_multiple_of') {
        throw bad(
          'tokenizer.pad_to_multiple_of is not supported: it resizes embeddings, which model-stock does not do',
        );
      }
      if (k !== 'source') throw bad(`tokenizer: unsupported key "${k}"`);
    }
    sourceKey = 'tokenizer.source';
    source = c.tokenizer.source ?? 'union'; // mergekit's default for the tokenizer: form
  }
  if (source === 'union') {
    throw bad(
      `${sourceKey}: union is not supported: it needs vocabulary merging and embedding resizing, which ` +
        'model-stock does not do; use base, or one of the models whose tokenizer fits the base',
    );
  }
  if (given(source) && source !== 'base') {
    const ref = modelRef(source, sourceKey);
    const key = modelRefKey(ref);
    if (key !== baseKey && !models.some((m) => modelRefKey(m) === key)) {
      throw bad(`${sourceKey} "${ref}" is neither the base_model nor one of the models of this merge`);
    }
    tokenizerSource = ref; // as written: the merge tells the base from the models by the same key
  }

  let chatTemplate: string | undefined;
  if (given(c.chat_template)) {
    if (typeof c.chat_template !== 'string') throw bad('chat_template must be a string');
    if (isTemplateString(c.chat_template)) chatTemplate = c.chat_template;
    else {
      warnings.push(
        `chat_template "${c.chat_template}" ignored: template names and "auto" refer to mergekit's bundled ` +
          "templates and its vote among the models' tokenizers; give the template text itself",
      );
    }
  }

  const dtypeOf = (k: 'dtype' | 'out_dtype'): FloatDType | undefined => {
    const v = c[k];
    if (!given(v)) return undefined;
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
  if (given(c.state_dict_key) && (typeof c.state_dict_key !== 'string' || c.state_dict_key === '')) {
    throw bad('state_dict_key must be the name of the entry holding the weights, e.g. state_dict_ema');
  }
  const stateDictKey = given(c.state_dict_key) ? (c.state_dict_key as string) : undefined;
  if (given(c.out_format) && !OUT_FORMATS.includes(c.out_format as OutFormat)) {
    throw bad(
      `out_format must be ${OUT_FORMATS.map((f) => `"${f}"`).join(' or ')}, got ${JSON.stringify(c.out_format)}`,
    );
  }
  const outFormat = given(c.out_format) ? (c.out_format as OutFormat) : undefined;
  return {
    base,
    models,
    filterWise,
    outDtype,
    tokenizerSource,
    chatTemplate,
    layerRanges,
    stateDictKey,
    outFormat,
    warnings,
  };
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

/** The resolved merge as mergekit YAML (written beside the weights). mergekit has no theta rule, so a non-default one is a comment. */
export function resolvedConfigYaml(o: {
  base: string;
  models: readonly string[];
  filterWise: boolean;
  theta: string;
  outDtype: FloatDType | undefined;
  tokenizerSource?: string;
  chatTemplate?: string;
  stateDictKey?: string;
  outFormat?: OutFormat;
}): string {
  const doc: Record<string, unknown> = {
    merge_method: 'model_stock',
    base_model: o.base,
    models: o.models.map((model) => ({ model })),
    parameters: { filter_wise: o.filterWise },
    ...(o.outDtype !== undefined ? { out_dtype: TORCH_NAME[o.outDtype] } : {}),
    tokenizer_source: o.tokenizerSource ?? 'base',
    ...(o.chatTemplate !== undefined ? { chat_template: o.chatTemplate } : {}),
    ...(o.stateDictKey !== undefined ? { state_dict_key: o.stateDictKey } : {}),
    ...(o.outFormat === 'peft' ? { out_format: 'peft' } : {}),
  };
  const comment = o.theta !== 'mean-cos' ? `# model-stock: --theta ${o.theta}\n` : '';
  return comment + toYaml(doc);
}
