/**
 * The tensors of an adapter file sorted into LoRA factors and whole tensors, by PEFT's key names
 * (get_peft_model_state_dict, P:src/peft/utils/save_and_load.py#L94-L505; peft-format.md §3.3):
 *
 *   <module>.lora_A.weight / .lora_B.weight     factors of a Linear, Conv1D or convolution
 *   <module>.lora_B.bias                        lora_bias: the bias's task vector s·b
 *   <module>.lora_embedding_A / _B              factors of an embedding (no `.weight`)
 *   <module>.base_layer.weight / .bias          the wrapped layer's own tensors (targeted embeddings and
 *                                               heads, PEFT ≥ 0.7's biases of targeted modules)
 *   <module>.<param>                            modules_to_save (saved under the plain name,
 *                                               P:src/peft/utils/other.py#L782-L791) and bias: all
 *
 * every key optionally prefixed `base_model.model.` (PEFT writes it; transformers' save_peft_format=False
 * does not). Anything else — DoRA magnitudes, trainable tokens, other PEFT methods' keys, a factor
 * without its partner, a rank the config does not give — is refused, named.
 */
import { isMergeableDType } from '../dtype';
import { ModelStockError } from '../errors';
import type { TensorInfo } from '../checkpoint/types';
import { moduleScaling, targetsModule, type AdapterConfig } from './config';
import type { AdapterModule, AdapterWeight } from './types';

export const PEFT_PREFIX = 'base_model.model.';

interface Factors {
  a?: TensorInfo;
  b?: TensorInfo;
  bias?: TensorInfo;
  embedding?: boolean;
}

const fmt = (s: readonly number[]): string => `[${s.join(', ')}]`;

/** Module names shown in one message. */
const SHOWN = 4;
const some = (names: readonly string[]): string =>
  names.slice(0, SHOWN).join(', ') + (names.length > SHOWN ? `, … (${names.length} in all)` : '');

export function sortAdapterTensors(
  tensors: readonly TensorInfo[],
  config: AdapterConfig,
  configFile: string,
): { modules: AdapterModule[]; weights: AdapterWeight[]; warnings: string[] } {
  const refuse = (t: TensorInfo, message: string): ModelStockError =>
    new ModelStockError('UNSUPPORTED_ADAPTER', message, { file: t.file, tensor: t.name });
  const factors = new Map<string, Factors>();
  const factorsOf = (m: string): Factors => {
    let f = factors.get(m);
    if (f === undefined) factors.set(m, (f = {}));
    return f;
  };
  const weights: AdapterWeight[] = [];
  const savedModules = config.modulesToSave;

  for (const t of tensors) {
    const key = t.name.startsWith(PEFT_PREFIX) ? t.name.slice(PEFT_PREFIX.length) : t.name;
    if (!isMergeableDType(t.dtype)) {
      throw new ModelStockError(
        'UNSUPPORTED_DTYPE',
        `dtype ${t.dtype}: adapter tensors must be F64, F32, F16 or BF16`,
        {
          file: t.file,
          tensor: t.name,
        },
      );
    }
    let m: RegExpMatchArray | null;
    if ((m = /^(.+)\.lora_(A|B)\.weight$/.exec(key)) !== null) {
      factorsOf(m[1]!)[m[2] === 'A' ? 'a' : 'b'] = t;
    } else if ((m = /^(.+)\.lora_embedding_(A|B)$/.exec(key)) !== null) {
      const f = factorsOf(m[1]!);
      f[m[2] === 'A' ? 'a' : 'b'] = t;
      f.embedding = true;
    } else if ((m = /^(.+)\.lora_B\.bias$/.exec(key)) !== null) {
      factorsOf(m[1]!).bias = t;
    } else if (/\.lora_magnitude_vector(\.weight)?$/.test(key)) {
      throw refuse(t, 'a DoRA magnitude vector: DoRA rescales each column, its task vector is not low-rank');
    } else if (/\.token_adapter\./.test(key)) {
      throw refuse(t, 'trainable token rows (trainable_token_indices) are not supported');
    } else if (/(^|\.)(lora_|ia3_|hada_|lokr_|oft_|boft_|vera_)/.test(key)) {
      throw refuse(
        t,
        'not a LoRA factor model-stock knows (lora_A.weight, lora_B.weight, lora_B.bias, lora_embedding_A/B)',
      );
    } else if ((m = /^(.+)\.base_layer\.(weight|bias)$/.exec(key)) !== null) {
      weights.push({ name: `${m[1]}.${m[2]}`, tensor: t, kind: m[2] === 'bias' ? 'bias' : 'base_layer' });
    } else {
      const dot = key.lastIndexOf('.');
      const module = dot < 0 ? '' : key.slice(0, dot);
      // PEFT's _set_trainable matches modules_to_save with a plain endswith, no dot boundary (other.py#L1076).
      if (savedModules.some((s) => module.endsWith(s))) {
        weights.push({ name: key, tensor: t, kind: 'modules_to_save' });
      } else if (key.endsWith('.bias') && config.bias !== 'none') {
        weights.push({ name: key, tensor: t, kind: 'bias' });
      } else {
        throw refuse(
          t,
          `neither a LoRA factor, a modules_to_save tensor (modules_to_save: ${JSON.stringify(savedModules)}) ` +
            `nor a bias (bias: "${config.bias}") of this adapter`,
        );
      }
    }
  }

  const modules: AdapterModule[] = [];
  const untargeted: string[] = [];
  for (const [module, f] of factors) {
    const named = f.a ?? f.b ?? f.bias!;
    const where = { file: named.file, tensor: named.name };
    if (f.a === undefined || f.b === undefined) {
      throw new ModelStockError(
        'UNSUPPORTED_ADAPTER',
        `module ${module} has ${f.a === undefined ? 'no lora_A' : 'no lora_B'} beside its ${f.a === undefined ? 'lora_B' : 'lora_A'}`,
        where,
      );
    }
    if (weights.some((w) => w.kind === 'modules_to_save' && w.name.startsWith(`${module}.`))) {
      throw new ModelStockError(
        'UNSUPPORTED_ADAPTER',
        `module ${module} has both LoRA factors and a whole tensor saved by modules_to_save (PEFT never targets a module it saves whole)`,
        where,
      );
    }
    const { a, b } = f;
    const embedding = f.embedding === true;
    const rank = a.shape[0] ?? 0;
    const misfit = (why: string): ModelStockError =>
      new ModelStockError(
        'SHAPE_MISMATCH',
        `module ${module}: lora_A ${fmt(a.shape)}, lora_B ${fmt(b.shape)}: ${why}`,
        where,
      );
    if (a.shape.length < 2 || b.shape.length !== a.shape.length || (embedding && a.shape.length !== 2)) {
      throw misfit('factors must be matrices (or, for a convolution, kernels of the same rank)');
    }
    if (b.shape[1] !== rank) {
      if (a.shape.length > 2 && rank % (b.shape[1] ?? 1) === 0) {
        throw new ModelStockError(
          'UNSUPPORTED_ADAPTER',
          `module ${module}: a grouped convolution (groups > 1), which PEFT cannot merge either`,
          where,
        );
      }
      throw misfit(`lora_A has ${rank} rows but lora_B ${b.shape[1]} columns`);
    }
    if (b.shape.slice(2).some((d) => d !== 1)) throw misfit('lora_B of a convolution must be a 1×1 kernel');
    const scaling = moduleScaling(config, module);
    if (scaling.rank !== rank) {
      throw misfit(
        `rank ${rank}, but ${configFile} gives this module r = ${scaling.rank} (r or rank_pattern): PEFT would refuse to load it (size mismatch)`,
      );
    }
    if (f.bias !== undefined && (f.bias.shape.length !== 1 || f.bias.shape[0] !== b.shape[0])) {
      throw new ModelStockError(
        'SHAPE_MISMATCH',
        `module ${module}: lora_B.bias ${fmt(f.bias.shape)} does not fit lora_B ${fmt(b.shape)}`,
        {
          file: f.bias.file,
          tensor: f.bias.name,
        },
      );
    }
    if (targetsModule(config, module) === false) untargeted.push(module);
    modules.push({
      module,
      a,
      b,
      embedding,
      rank,
      alpha: scaling.alpha,
      scale: scaling.scale,
      biasB: f.bias,
    });
  }
  const warnings: string[] = [];
  if (untargeted.length > 0) {
    warnings.push(
      `${configFile}: target_modules ${JSON.stringify(config.targetModules)} does not name ${untargeted.length} module(s) ` +
        `the adapter has factors for (${some(untargeted)}): merged as saved (the tensors on disk decide)`,
    );
  }
  return { modules, weights, warnings };
}
