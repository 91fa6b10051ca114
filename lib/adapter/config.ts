/**
 * A PEFT LoRA adapter's `adapter_config.json`: the fields that decide its task vectors, read as PEFT
 * reads them, and every field that makes the saved factors something other than a low-rank delta of the
 * untouched base refused, named. References are to PEFT's source at v0.20.0
 * (huggingface/peft@a5526d2, written P:) unless another commit is named; /work/notes/peft-format.md §1
 * collects them.
 *
 * - PEFT requires only `peft_type` (MIN_EXPECTED_CONFIG_KEYS, P:src/peft/config.py#L34); every other
 *   field takes LoraConfig's default (P:src/peft/tuners/lora/config.py: r 8 #L546, lora_alpha 8 #L566).
 * - Unknown keys are dropped with a warning since v0.14.0 (P:src/peft/config.py#L201-L227): so here.
 */
import { ModelStockError } from '../errors';
import { PyFloat } from '../util/pythonJson';

/** A key of rank_pattern / alpha_pattern and its value, in the file's order. */
export interface PatternEntry {
  readonly key: string;
  readonly value: number;
  /** `(.*\.)?(key)$` (PEFT ≥ 0.15, P:src/peft/utils/other.py#L1512-L1520 get_pattern_key). */
  readonly regex: RegExp;
}

export interface AdapterConfig {
  /** `r`: rank of every module no rank_pattern key matches. */
  readonly r: number;
  /** `lora_alpha` (a number: floats occur, e.g. PEFT's own `lora_alpha *= 2**0.5`, P:src/peft/peft_model.py#L425). */
  readonly alpha: number;
  /** s = α/√r instead of α/r (P:src/peft/tuners/lora/layer.py#L275-L277). */
  readonly useRslora: boolean;
  readonly rankPattern: readonly PatternEntry[];
  readonly alphaPattern: readonly PatternEntry[];
  /** Conv1D layers (GPT-2) stored [in, out]: the task vector is (B·A)ᵀ. PEFT rewrites it per layer type. */
  readonly fanInFanOut: boolean;
  /** `target_modules` as written (a list, a regex string, or null): a cross-check only. */
  readonly targetModules: readonly string[] | string | undefined;
  /** `modules_to_save` (with ["classifier", "score"] added for task_type SEQ_CLS, P:src/peft/peft_model.py#L1815-L1821). */
  readonly modulesToSave: readonly string[];
  readonly bias: 'none' | 'all' | 'lora_only';
  readonly baseModel: string | undefined;
  readonly taskType: string | undefined;
  /** What was noticed: fields ignored, a lora_ga init, a megatron_config. */
  readonly warnings: readonly string[];
}

/**
 * The adapter_config.json PEFT 0.13.0 writes for `LoraConfig()` saved by PeftModel.save_pretrained: its
 * 24 keys with the dataclass defaults, base_model_name_or_path and inference_mode: true filled in on
 * save (peft-format.md §1.6, §7.2). What our adapter output writes (PEFT 0.13 refuses keys it does not
 * know), and the test fixtures' PEFT 0.13 adapters. A fresh object each call.
 */
export function peft013Config(): Record<string, unknown> {
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: null,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: 8,
    lora_dropout: new PyFloat(0),
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    peft_type: 'LORA',
    r: 8,
    rank_pattern: {},
    revision: null,
    target_modules: null,
    task_type: null,
    use_dora: false,
    use_rslora: false,
  };
}

/**
 * Every key PEFT's LoraConfig (and PeftConfig) writes, v0.6.0 to v0.20.1.dev0 (peft-format.md §1.6);
 * anything else is said once, and ignored as PEFT ≥ 0.14 does.
 */
const KNOWN_KEYS = new Set([
  'alpha_pattern',
  'auto_mapping',
  'base_model_name_or_path',
  'bias',
  'fan_in_fan_out',
  'inference_mode',
  'init_lora_weights',
  'layers_pattern',
  'layers_to_transform',
  'lora_alpha',
  'lora_dropout',
  'modules_to_save',
  'peft_type',
  'r',
  'rank_pattern',
  'revision',
  'target_modules',
  'task_type',
  'loftq_config',
  'megatron_config',
  'megatron_core',
  'use_rslora',
  'use_dora',
  'layer_replication',
  'eva_config',
  'exclude_modules',
  'lora_bias',
  'corda_config',
  'trainable_token_indices',
  'qalora_group_size',
  'use_qalora',
  'target_parameters',
  'alora_invocation_tokens',
  'arrow_config',
  'ensure_weight_tying',
  'peft_version',
  'lora_ga_config',
  'use_bdlora',
  'monteclora_config',
  'velora_config',
  'kasa_config',
]);

/**
 * Fields whose set value makes the saved factors something else than W0 + s·B·A of the base given:
 * refused, each with why (P:src/peft/tuners/lora/config.py and layer.py; peft-format.md §1.2).
 */
const REFUSED: readonly { key: string; why: string }[] = [
  { key: 'use_dora', why: 'DoRA rescales each column by a learned magnitude: not a low-rank delta' },
  {
    key: 'layer_replication',
    why: 'layers are duplicated, so a module path no longer names one base tensor',
  },
  {
    key: 'target_parameters',
    why: 'LoRA on raw parameters (MoE experts, ParamWrapper) is not supported',
  },
  {
    key: 'trainable_token_indices',
    why: 'trainable token rows (sparse embedding deltas) are not supported',
  },
  {
    key: 'alora_invocation_tokens',
    why: 'activated LoRA applies only after its invocation tokens: it cannot be merged',
  },
  { key: 'use_bdlora', why: 'block-diagonal LoRA is not supported' },
  { key: 'use_qalora', why: 'QA-LoRA pools its input groups: not a plain low-rank delta' },
  { key: 'arrow_config', why: 'Arrow routes between adapters at run time: it cannot be merged' },
  { key: 'velora_config', why: 'VeLoRA changes the forward pass: not supported' },
  { key: 'monteclora_config', why: 'MonteCLoRA samples its factors: not supported' },
  { key: 'kasa_config', why: 'KaSA changes the delta (singular values): not supported' },
];

/** `init_lora_weights` values that rewrite the base on load (P:src/peft/tuners/lora/layer.py#L380-L458, #L574-L596). */
const MUTATING_INIT = /^(pissa(_niter_\d+)?|olora|corda|loftq)$/;

/** A set value: not absent, null, false, or an empty list/object. */
function isSet(v: unknown): boolean {
  if (v === undefined || v === null || v === false) return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v).length > 0;
  return true;
}

function unsupported(file: string, field: string, message: string): ModelStockError {
  return new ModelStockError('UNSUPPORTED_ADAPTER', `${field}: ${message}`, { file });
}

function patternOf(v: unknown, field: string, file: string, integer: boolean): PatternEntry[] {
  if (v === undefined || v === null) return [];
  if (typeof v !== 'object' || Array.isArray(v))
    throw unsupported(file, field, 'must be an object of module pattern → number');
  const out: PatternEntry[] = [];
  for (const [key, value] of Object.entries(v as Record<string, unknown>)) {
    const ok =
      typeof value === 'number' &&
      Number.isFinite(value) &&
      (!integer || (Number.isInteger(value) && value >= 1));
    if (!ok)
      throw unsupported(
        file,
        `${field}["${key}"]`,
        `must be ${integer ? 'a positive integer' : 'a number'}, got ${JSON.stringify(value)}`,
      );
    let regex: RegExp;
    try {
      // Python's re.match(rf"(.*\.)?({key})$", name): anchored at the start; `$` at the end.
      regex = new RegExp(`^(?:.*\\.)?(?:${key})$`);
    } catch (e) {
      throw unsupported(
        file,
        `${field}["${key}"]`,
        `is not a regular expression model-stock can read (${(e as Error).message})`,
      );
    }
    out.push({ key, value: value as number, regex });
  }
  return out;
}

function bool(v: unknown, field: string, file: string, fallback: boolean): boolean {
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean')
    throw unsupported(file, field, `must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function stringList(v: unknown, field: string, file: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string'))
    throw unsupported(file, field, 'must be a list of module names');
  return v as string[];
}

/** Parses and checks `adapter_config.json` (`text`, read from `file`). */
export function parseAdapterConfig(text: string, file: string): AdapterConfig {
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (e) {
    throw new ModelStockError('UNSUPPORTED_ADAPTER', `not valid JSON (${(e as Error).message})`, { file });
  }
  if (root === null || typeof root !== 'object' || Array.isArray(root)) {
    throw new ModelStockError('UNSUPPORTED_ADAPTER', 'not a JSON object', { file });
  }
  const c = root as Record<string, unknown>;
  const warnings: string[] = [];

  // Other PEFT methods use other keys and formulas (AdaLoRA's lora_E, IA3's ia3_l, LoHa/LoKr, …).
  if (c.peft_type === undefined)
    throw unsupported(file, 'peft_type', 'missing (PEFT requires it): is this a PEFT adapter?');
  if (c.peft_type !== 'LORA') {
    throw unsupported(
      file,
      'peft_type',
      `is ${JSON.stringify(c.peft_type)}: only LoRA adapters ("LORA") can be merged`,
    );
  }
  for (const { key, why } of REFUSED)
    if (isSet(c[key])) throw unsupported(file, key, `${JSON.stringify(c[key])}: ${why}`);

  const init = c.init_lora_weights;
  if (typeof init === 'string' && MUTATING_INIT.test(init)) {
    throw unsupported(
      file,
      'init_lora_weights',
      `"${init}" rewrites the base weights when the adapter is loaded, so its factors are not a delta of the original base; ` +
        "convert it to a plain LoRA first (PEFT's save_pretrained(path_initial_model_for_weight_conversion=…))",
    );
  }
  if (init === 'lora_ga') {
    warnings.push(
      `${file}: init_lora_weights "lora_ga": training subtracted the initial factors from the base, which loading does not; ` +
        'merged here as PEFT loads it (W0 + s·B·A), which differs from the trained model unless it was converted',
    );
  }
  if (isSet(c.megatron_config))
    warnings.push(`${file}: megatron_config ignored (it only changes layer classes, not the saved keys)`);

  const r = c.r ?? 8;
  if (typeof r !== 'number' || !Number.isInteger(r) || r < 1)
    throw unsupported(file, 'r', `must be a positive integer, got ${JSON.stringify(r)}`);
  const alpha = c.lora_alpha ?? 8;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha))
    throw unsupported(file, 'lora_alpha', `must be a number, got ${JSON.stringify(alpha)}`);

  const bias = c.bias ?? 'none';
  if (bias !== 'none' && bias !== 'all' && bias !== 'lora_only') {
    throw unsupported(file, 'bias', `must be "none", "all" or "lora_only", got ${JSON.stringify(bias)}`);
  }
  const target = c.target_modules;
  let targetModules: readonly string[] | string | undefined;
  if (typeof target === 'string') targetModules = target;
  else if (target !== undefined && target !== null)
    targetModules = stringList(target, 'target_modules', file);

  const taskType = typeof c.task_type === 'string' ? c.task_type : undefined;
  const modulesToSave = stringList(c.modules_to_save, 'modules_to_save', file);
  if (taskType === 'SEQ_CLS')
    for (const m of ['classifier', 'score']) if (!modulesToSave.includes(m)) modulesToSave.push(m);

  const unknown = Object.keys(c).filter((k) => !KNOWN_KEYS.has(k));
  if (unknown.length > 0) {
    warnings.push(
      `${file}: field(s) ${unknown.join(', ')} unknown to model-stock, ignored (as PEFT ≥ 0.14 ignores unknown fields)`,
    );
  }
  const baseModel = c.base_model_name_or_path;
  return {
    r,
    alpha,
    useRslora: bool(c.use_rslora, 'use_rslora', file, false),
    rankPattern: patternOf(c.rank_pattern, 'rank_pattern', file, true),
    alphaPattern: patternOf(c.alpha_pattern, 'alpha_pattern', file, false),
    fanInFanOut: bool(c.fan_in_fan_out, 'fan_in_fan_out', file, false),
    targetModules,
    modulesToSave,
    bias,
    baseModel: typeof baseModel === 'string' && baseModel !== '' ? baseModel : undefined,
    taskType,
    warnings,
  };
}

/**
 * PEFT ≥ 0.15's get_pattern_key: the first key, in the file's order, whose `(.*\.)?(key)$` matches the
 * module name (the name inside the transformers model, without `base_model.model.`), else none.
 */
function patternValue(entries: readonly PatternEntry[], module: string): number | undefined {
  for (const e of entries) if (e.regex.test(module)) return e.value;
  return undefined;
}

/** r, α and s of one module: rank_pattern and alpha_pattern looked up separately (P:src/peft/tuners/lora/model.py#L216-L220). */
export function moduleScaling(
  config: AdapterConfig,
  module: string,
): { rank: number; alpha: number; scale: number } {
  const rank = patternValue(config.rankPattern, module) ?? config.r;
  const alpha = patternValue(config.alphaPattern, module) ?? config.alpha;
  return { rank, alpha, scale: config.useRslora ? alpha / Math.sqrt(rank) : alpha / rank };
}

/**
 * Whether `target_modules` names `module` (P:src/peft/tuners/tuners_utils.py#L1894-L1965
 * check_target_module_exists): a list entry equal to the name or a `.`-suffix of it, a string by full
 * regex match; "all-linear" and unreadable regexes answer undefined (cannot tell).
 */
export function targetsModule(config: AdapterConfig, module: string): boolean | undefined {
  const t = config.targetModules;
  if (t === undefined) return undefined;
  if (typeof t === 'string') {
    if (t === 'all-linear') return undefined;
    try {
      return new RegExp(`^(?:${t})$`).test(module);
    } catch {
      return undefined;
    }
  }
  return t.some((entry) => module === entry || module.endsWith(`.${entry}`));
}
