/**
 * A LoRA adapter matched to the base: which base tensor each of its modules and whole tensors changes,
 * and how (docs/merge-contract.md's adapter rules). A module's path is the one inside the model class
 * PEFT wrapped (e.g. GPT-2's `transformer.h.0.attn.c_attn`), which may differ from the checkpoint's
 * names by the model's prefix (the original gpt2 checkpoint stores `h.0.attn.c_attn.weight`): one
 * renaming — none, the first component dropped, or a prefix of the base's added — is chosen per adapter,
 * the one that finds the most of its modules; what it still does not find is left out, with a warning.
 */
import { ModelStockError } from '../errors';
import type { Adapter, AdapterModule } from '../adapter/types';
import type { Checkpoint, TensorInfo } from '../checkpoint/types';
import type { DType } from '../dtype';

/**
 * A low-rank task vector s·B·A of a stored [R, C] tensor (`[shape[0], rest]`): plain (Linear,
 * convolutions: B [R, r], A [r, C]) or transposed (Conv1D, embeddings: s·(B·A)ᵀ, B [C, r], A [r, R]).
 */
export interface LowRankRef {
  /** lora_A; undefined for a bias's task vector s·b (B = lora_B.bias [R] seen as [R, 1], A = [[1]]). */
  readonly a: TensorInfo | undefined;
  readonly b: TensorInfo;
  readonly rank: number;
  readonly scale: number;
  readonly transposed: boolean;
  /** The adapter's module (its path in the trained model). */
  readonly module: string;
}

/** What one adapter does to one base tensor: a low-rank task vector, a whole tensor, or both. */
export interface AdapterContribution {
  readonly factor?: LowRankRef;
  /**
   * A whole tensor the adapter saves for it: modules_to_save, a trained bias, or a wrapped layer's own
   * weight (a targeted embedding or head), which its factor is then added to.
   */
  readonly tensor?: TensorInfo;
}

export interface AdapterDrop {
  readonly name: string;
  readonly reason: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
}

export interface ResolvedAdapter {
  /** Base tensor name → what the adapter does to it. */
  readonly byTensor: ReadonlyMap<string, AdapterContribution>;
  /** What the adapter changes that the base does not have. */
  readonly dropped: readonly AdapterDrop[];
}

const fmt = (s: readonly number[]): string => `[${s.join(', ')}]`;
const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

/** The candidate renamings of an adapter's names into the base's. */
function renamings(base: Checkpoint): ((name: string) => string | undefined)[] {
  const prefixes = new Set<string>();
  for (const n of base.order) {
    const dot = n.indexOf('.');
    if (dot > 0) prefixes.add(n.slice(0, dot + 1));
  }
  return [
    (n) => n,
    (n) => (n.indexOf('.') > 0 ? n.slice(n.indexOf('.') + 1) : undefined),
    ...[...prefixes].map((p) => (n: string) => p + n),
  ];
}

/** The names an adapter changes, in its own terms: each module's weight (and bias), each saved tensor. */
function adapterNames(adapter: Adapter): string[] {
  return [
    ...adapter.modules.flatMap((m) => [
      `${m.module}.weight`,
      ...(m.biasB !== undefined ? [`${m.module}.bias`] : []),
    ]),
    ...adapter.weights.map((w) => w.name),
  ];
}

/**
 * Orientation of a module's factors on the stored tensor it applies to (`shape`), or why they do not
 * fit. A Linear's are plain and a Conv1D's transposed; PEFT sets fan_in_fan_out per layer type
 * (P:src/peft/tuners/lora/layer.py#L2595-L2636) and saves the value it last set, so the shapes decide
 * and the flag only breaks the tie of a square weight.
 */
function orientation(m: AdapterModule, shape: readonly number[], fanInFanOut: boolean): boolean | string {
  const { a, b } = m;
  const R = shape[0] ?? 1;
  const C = shape.length === 0 ? 1 : numel(shape) / R;
  const aCols = numel(a.shape) / m.rank;
  if (m.embedding) {
    // lora_embedding_A [r, vocab], lora_embedding_B [dim, r]: Δ = (B·A)ᵀ·s (layer.py#L1343).
    return shape.length === 2 && aCols === R && b.shape[0] === C
      ? true
      : 'an embedding [vocab, dim] needs lora_embedding_A [r, vocab] and lora_embedding_B [dim, r]';
  }
  if (a.shape.length > 2) {
    // A convolution, groups = 1: Δ = (B [out, r] · A [r, in·k…]) reshaped (layer.py#L1703-L1714).
    const fits =
      shape.length === a.shape.length &&
      b.shape[0] === R &&
      a.shape.slice(1).every((d, i) => d === shape[i + 1]);
    return fits ? false : 'a convolution [out, in, k…] needs lora_A [r, in, k…] and lora_B [out, r, 1…]';
  }
  if (shape.length !== 2) return 'LoRA factors of a Linear or Conv1D layer need a 2-D weight';
  const plain = b.shape[0] === R && aCols === C;
  const transposed = b.shape[0] === C && aCols === R;
  if (plain && transposed) return fanInFanOut;
  if (plain || transposed) return transposed;
  return 'they fit neither [out, in] (Linear) nor [in, out] (Conv1D, fan_in_fan_out)';
}

/**
 * `adapter` (fine-tune `label`) matched to `base`. `over`: the model the adapter is applied to when it
 * is not the base (its tensors are the weights the factors are added to).
 */
export function resolveAdapter(base: Checkpoint, adapter: Adapter, label: string): ResolvedAdapter {
  const names = adapterNames(adapter);
  let rename = (n: string): string | undefined => n;
  let best = -1;
  for (const r of renamings(base)) {
    const hits = names.filter((n) => {
      const to = r(n);
      return to !== undefined && base.tensors.has(to);
    }).length;
    if (hits > best) [best, rename] = [hits, r];
  }
  const byTensor = new Map<string, AdapterContribution>();
  const dropped: AdapterDrop[] = [];
  const applied = (name: string): TensorInfo | undefined =>
    byTensor.get(name)?.tensor ?? adapter.over?.tensors.get(name) ?? base.tensors.get(name);
  const drop = (name: string, what: string, t: TensorInfo, shape = t.shape): void => {
    dropped.push({
      name,
      reason: `${what} of ${label}, which the base does not have`,
      dtype: t.dtype,
      shape,
    });
  };

  // Whole tensors first: a wrapped layer's own weight is what its factors are added to.
  for (const w of adapter.weights) {
    const name = rename(w.name);
    if (name === undefined || !base.tensors.has(name)) {
      drop(
        w.name,
        w.kind === 'modules_to_save'
          ? 'a modules_to_save tensor'
          : `a saved ${w.kind === 'bias' ? 'bias' : 'weight'}`,
        w.tensor,
      );
      continue;
    }
    if (byTensor.has(name)) {
      throw new ModelStockError('UNSUPPORTED_ADAPTER', `saves ${name} twice`, {
        file: w.tensor.file,
        tensor: w.tensor.name,
      });
    }
    byTensor.set(name, { tensor: w.tensor });
  }
  for (const m of adapter.modules) {
    const name = rename(`${m.module}.weight`);
    const target = name === undefined ? undefined : applied(name);
    if (name === undefined || target === undefined || !base.tensors.has(name)) {
      drop(`${m.module}.weight`, `LoRA module ${m.module}`, m.b, [
        m.b.shape[0] ?? 0,
        numel(m.a.shape) / m.rank,
      ]);
      continue;
    }
    const o = orientation(m, target.shape, adapter.config.fanInFanOut);
    if (typeof o === 'string') {
      throw new ModelStockError(
        'SHAPE_MISMATCH',
        `module ${m.module}: lora_A ${fmt(m.a.shape)} and lora_B ${fmt(m.b.shape)} do not fit ${name} ${fmt(target.shape)}: ${o}`,
        { file: m.a.file, tensor: m.a.name },
      );
    }
    byTensor.set(name, {
      ...byTensor.get(name),
      factor: { a: m.a, b: m.b, rank: m.rank, scale: m.scale, transposed: o, module: m.module },
    });
    if (m.biasB === undefined) continue;
    const biasName = rename(`${m.module}.bias`);
    const bias = biasName === undefined ? undefined : applied(biasName);
    if (biasName === undefined || bias === undefined || !base.tensors.has(biasName)) {
      drop(`${m.module}.bias`, `lora_B.bias of module ${m.module}`, m.biasB);
      continue;
    }
    if (bias.shape.length !== 1 || bias.shape[0] !== m.biasB.shape[0]) {
      throw new ModelStockError(
        'SHAPE_MISMATCH',
        `module ${m.module}: lora_B.bias ${fmt(m.biasB.shape)} does not fit ${biasName} ${fmt(bias.shape)}`,
        { file: m.biasB.file, tensor: m.biasB.name },
      );
    }
    byTensor.set(biasName, {
      ...byTensor.get(biasName),
      factor: { a: undefined, b: m.biasB, rank: 1, scale: m.scale, transposed: false, module: m.module },
    });
  }
  return { byTensor, dropped };
}
