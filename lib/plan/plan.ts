import { type DType, type FloatDType, dtypeBits, isCopyDType, isMergeableDType } from '../dtype';
import { ModelStockError } from '../errors';
import type { Checkpoint, TensorInfo } from '../checkpoint/types';
import { embeddingRole, type ModelConfig } from './embeddings';
import { resolveAdapter, type LowRankRef, type ResolvedAdapter } from './adapters';
import { ChunkedList, ChunkedMap } from '../util/chunkedMap';
import { CHECK_EVERY, runSliced, runSync, type Sliced } from '../util/sliced';

/**
 * Layer traversal: one decision per base tensor, made before any byte is written, so a bad input
 * fails before work starts. The rules are docs/merge-contract.md's table.
 */
export interface MergeStep {
  readonly action: 'merge';
  readonly name: string;
  readonly base: TensorInfo;
  /** The fine-tunes that have the tensor (N = inputs.length ≥ 2). */
  readonly inputs: readonly TensorInfo[];
  /** Their indices in the user's model list. */
  readonly modelIndices: readonly number[];
  readonly outDtype: FloatDType;
  readonly shape: readonly number[];
  /** Elements of the output (the base's shape). */
  readonly numel: number;
  /**
   * Elements merged, from element 0: `numel`, or the rows every input has when an embedding's vocabulary
   * differs (`rows`); the base's elements after them are copied.
   */
  readonly mergedNumel: number;
  /** Elements per unit of the merged range: all of it, or one row `[shape[0], rest]` when filter-wise. */
  readonly unitLength: number;
  readonly units: number;
  readonly outByteLength: number;
  /** Set when some fine-tunes lack the tensor, or the vocabulary sizes differ. */
  readonly note: string | undefined;
  /** Set when an embedding's vocabulary (first dimension) differs between base and fine-tunes. */
  readonly rows: RowSplit | undefined;
  /**
   * Fine-tunes (indices into the model list) whose task vector is zero here: adapters that do not
   * change the tensor (their input is the base's own tensor). N counts them.
   */
  readonly untouched: readonly number[];
}

/** What one fine-tune contributes to a tensor some adapter changes with low-rank factors. */
export interface FineTuneInput {
  /** The weights: the fine-tune's own tensor, or the base's (an adapter of the base). */
  readonly tensor: TensorInfo;
  /** Low-rank factors added to them (an adapter's), if any. */
  readonly factor: LowRankRef | undefined;
}

/**
 * A tensor an adapter changes with low-rank factors (docs/merge-contract.md's adapter rules). When every
 * fine-tune's weights are the base's (`factorsOnly`), the Gram matrix comes from the factors alone and the
 * output from one fused pass over the base; otherwise the low-rank task vectors are formed in row
 * windows, in float64, and merged densely.
 */
export interface LowRankStep extends Omit<MergeStep, 'action' | 'inputs'> {
  readonly action: 'low-rank';
  readonly inputs: readonly FineTuneInput[];
  readonly factorsOnly: boolean;
}

/** How an embedding whose vocabulary sizes differ is merged (docs/merge-contract.md's embedding row). */
export interface RowSplit {
  /** Rows 0 … merged − 1, which every input has: merged with Model Stock. */
  readonly merged: number;
  /** The base's rows after those: copied from the base. */
  readonly copied: number;
  /** Rows only fine-tunes have (beyond the base's vocabulary), counted over the fine-tunes: left out. */
  readonly dropped: number;
  /** Rows of the base, then of each merged fine-tune. */
  readonly vocab: readonly number[];
}

export interface CopyStep {
  readonly action: 'copy';
  readonly name: string;
  readonly base: TensorInfo;
  readonly reason: string;
  /** The base's dtype (a byte copy), or --out-dtype for a float tensor copied in another dtype. */
  readonly outDtype: DType;
  readonly outByteLength: number;
}

export type PlanStep = MergeStep | CopyStep | LowRankStep;

export interface Plan {
  /** In the base's order. */
  readonly steps: readonly PlanStep[];
  /** Tensors present in fine-tunes but not in the base: not in the output. */
  readonly dropped: readonly DroppedTensor[];
  readonly warnings: readonly string[];
  /** Bytes of every input the merge reads once (merge inputs + copied base tensors). */
  readonly inputBytes: number;
  readonly outputBytes: number;
}

export interface DroppedTensor {
  readonly name: string;
  /** The fine-tunes that have it. */
  readonly models: readonly number[];
  readonly reason: string;
  /** As stored in the first of them. */
  readonly dtype: DType;
  readonly shape: readonly number[];
}

export interface PlanOptions {
  readonly filterWise: boolean;
  readonly outDtype: FloatDType | undefined;
  /** How to name model i in messages (default: its path). */
  readonly modelLabel?: (i: number) => string;
  /** The base's config.json, as far as embedding roles and tied heads go (absent: the name table alone). */
  readonly config?: ModelConfig;
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Same rank and the same dimensions after the first: only the vocabulary differs. */
function sameButFirst(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.length >= 1 && a.every((d, i) => i === 0 || d === b[i]);
}

const TIED = 'a model that saves no output head ties it to its input embedding (tie_word_embeddings)';

const fmtShape = (s: readonly number[]): string => `[${s.join(', ')}]`;

export function makePlan(base: Checkpoint, models: readonly Checkpoint[], opts: PlanOptions): Plan {
  return runSync(planSteps(base, models, opts));
}

/** `makePlan` in slices of a few ms: a million-tensor plan would otherwise hold the event loop. */
export function makePlanSliced(
  base: Checkpoint,
  models: readonly Checkpoint[],
  opts: PlanOptions,
): Promise<Plan> {
  return runSliced(planSteps(base, models, opts));
}

function* planSteps(base: Checkpoint, models: readonly Checkpoint[], opts: PlanOptions): Sliced<Plan> {
  const label = opts.modelLabel ?? ((i: number) => models[i]?.path ?? `model ${i + 1}`);
  if (models.length < 2) {
    throw new ModelStockError(
      'TOO_FEW_MODELS',
      `Model Stock needs at least 2 fine-tuned models, got ${models.length}`,
    );
  }
  const steps = new ChunkedList<PlanStep>();
  const warnings = new ChunkedList<string>();
  let inputBytes = 0;
  let outputBytes = 0;
  // Elements of the base's mergeable tensors, and how many of them each fine-tune has too.
  let baseFloats = 0;
  const sharedFloats = new Float64Array(models.length);
  // Adapters matched to the base, and per adapter the tensors it leaves as they are while others change them.
  const adapters: (ResolvedAdapter | undefined)[] = models.map((m, i) =>
    m.adapter === undefined ? undefined : resolveAdapter(base, m.adapter, label(i)),
  );
  const untouchedNames: string[][] = [];
  /** Fine-tune i's input for base tensor `b`; undefined when it lacks the tensor (left out of N). */
  const fineTuneInput = (b: TensorInfo, i: number): FineTuneInput | undefined => {
    const model = models[i] as Checkpoint;
    const adapter = adapters[i];
    if (adapter === undefined) {
      const t = model.tensors.get(b.name);
      return t === undefined ? undefined : { tensor: t, factor: undefined };
    }
    const c = adapter.byTensor.get(b.name);
    const over = model.adapter?.over;
    const tensor = c?.tensor ?? (over === undefined ? b : over.tensors.get(b.name));
    return tensor === undefined ? undefined : { tensor, factor: c?.factor };
  };

  for (let k = 0; k < base.order.length; k++) {
    if (k % CHECK_EVERY === CHECK_EVERY - 1) yield;
    const name = base.order[k] as string;
    const b = base.tensors.get(name) as TensorInfo;
    if (isCopyDType(b.dtype)) {
      steps.push({
        action: 'copy',
        name,
        base: b,
        reason: `${b.dtype} is not a float dtype`,
        outDtype: b.dtype,
        outByteLength: b.byteLength,
      });
      inputBytes += b.byteLength;
      outputBytes += b.byteLength;
      continue;
    }
    if (!isMergeableDType(b.dtype)) {
      throw new ModelStockError(
        'UNSUPPORTED_DTYPE',
        `dtype ${b.dtype} cannot be merged (only F64, F32, F16 and BF16 are; integer and BOOL tensors are copied)`,
        { file: b.file, tensor: name },
      );
    }
    const baseNumel = numelOf(b.shape);
    baseFloats += baseNumel;
    const inputs: FineTuneInput[] = [];
    const modelIndices: number[] = [];
    const missing: number[] = [];
    for (let i = 0; i < models.length; i++) {
      const found = fineTuneInput(b, i);
      if (found === undefined) {
        missing.push(i);
        continue;
      }
      const t = found.tensor;
      if (t !== b) {
        const vocabOnly = sameButFirst(t.shape, b.shape) && embeddingRole(name, opts.config) !== undefined;
        if (!sameShape(t.shape, b.shape) && !vocabOnly) {
          throw new ModelStockError(
            'SHAPE_MISMATCH',
            `shape ${fmtShape(t.shape)} in ${label(i)} differs from ${fmtShape(b.shape)} in the base ${base.path}`,
            { file: t.file, tensor: name },
          );
        }
        if (!isMergeableDType(t.dtype)) {
          throw new ModelStockError(
            'UNSUPPORTED_DTYPE',
            `dtype ${t.dtype} in ${label(i)} cannot be merged with the base's ${b.dtype}`,
            { file: t.file, tensor: name },
          );
        }
      }
      inputs.push(found);
      modelIndices.push(i);
      if (t !== b || found.factor !== undefined || adapters[i] === undefined) {
        sharedFloats[i] = (sharedFloats[i] as number) + baseNumel;
      }
    }
    const zero = (x: FineTuneInput): boolean => x.tensor === b && x.factor === undefined;
    const untouched = modelIndices.filter((_, k) => zero(inputs[k]!));
    if (inputs.length >= 2 && untouched.length === inputs.length && numelOf(b.shape) > 0) {
      // Every fine-tune is an adapter that leaves it as it is: t = 0 whatever the rule, the base's tensor.
      const outDtype = opts.outDtype ?? b.dtype;
      const outByteLength = (numelOf(b.shape) * dtypeBits(outDtype)) / 8;
      const reason = 'no fine-tuned model changes it (every adapter leaves it as the base has it)';
      steps.push({ action: 'copy', name, base: b, reason, outDtype, outByteLength });
      inputBytes += b.byteLength;
      outputBytes += outByteLength;
      continue;
    }
    if (untouched.length > 0 && untouched.length < inputs.length) {
      for (const i of untouched) (untouchedNames[i] ??= []).push(name);
    }
    const numel = numelOf(b.shape);
    const vocab = [b, ...inputs.map((x) => x.tensor)].map((t) => t.shape[0] ?? 1);
    const mergedRows = Math.min(...vocab);
    const rowLength = b.shape.length === 0 || numel === 0 ? 1 : numel / (b.shape[0] as number);
    const mergedNumel = inputs.length < 2 || numel === 0 ? 0 : mergedRows * rowLength;
    if (inputs.length < 2 || mergedNumel === 0) {
      const tiedHead = embeddingRole(name, opts.config) === 'output-head' && missing.length > 0;
      const reason =
        numel === 0
          ? 'zero-size tensor: nothing to merge'
          : inputs.length === 0
            ? tiedHead
              ? `no fine-tuned model has it (${TIED}): the output follows the base`
              : 'in no fine-tuned model'
            : inputs.length === 1
              ? `only in ${label(modelIndices[0] as number)} (Model Stock needs 2)`
              : `a fine-tuned model has no rows of it (vocabulary sizes ${vocab.join(', ')})`;
      // --out-dtype applies to every float tensor written, copied ones included (as in mergekit).
      const outDtype = opts.outDtype ?? b.dtype;
      const outByteLength = (numelOf(b.shape) * dtypeBits(outDtype)) / 8;
      steps.push({ action: 'copy', name, base: b, reason, outDtype, outByteLength });
      if (numel > 0) warnings.push(`${name}: copied from the base: ${reason}`);
      inputBytes += b.byteLength;
      outputBytes += outByteLength;
      continue;
    }
    const outDtype = opts.outDtype ?? b.dtype;
    const unitLength = opts.filterWise && b.shape.length >= 2 ? rowLength : mergedNumel;
    const units = mergedNumel / unitLength;
    const baseRows = vocab[0] as number;
    const rows: RowSplit | undefined = vocab.every((v) => v === baseRows)
      ? undefined
      : {
          merged: mergedRows,
          copied: baseRows - mergedRows,
          dropped: vocab.slice(1).reduce((sum, v) => sum + Math.max(0, v - baseRows), 0),
          vocab,
        };
    const notes: string[] = [];
    if (missing.length > 0) {
      notes.push(`merged over ${inputs.length} models; missing in ${missing.map(label).join(', ')}`);
    }
    if (rows !== undefined) {
      const sizes = inputs
        .map((x, k) => `${x.tensor.shape[0]} in ${label(modelIndices[k] as number)}`)
        .join(', ');
      notes.push(
        `vocabulary sizes differ (${baseRows} rows in the base, ${sizes}): rows 0–${mergedRows - 1} merged` +
          (rows.copied > 0 ? `, rows ${mergedRows}–${baseRows - 1} copied from the base` : '') +
          (rows.dropped > 0 ? `, ${rows.dropped} row(s) only fine-tunes have left out` : '') +
          `; the output keeps the base's shape ${fmtShape(b.shape)}`,
      );
    }
    const note = notes.length > 0 ? notes.join('; ') : undefined;
    if (note !== undefined) warnings.push(`${name}: ${note}`);
    const outByteLength = (numel * dtypeBits(outDtype)) / 8;
    const common = {
      name,
      base: b,
      modelIndices,
      outDtype,
      shape: b.shape,
      numel,
      mergedNumel,
      unitLength,
      units,
      outByteLength,
      note,
      rows,
      untouched,
    };
    const prefixBytes = (t: TensorInfo): number => (mergedNumel * dtypeBits(t.dtype)) / 8;
    const factorBytes = (f: LowRankRef | undefined): number =>
      (f?.a?.byteLength ?? 0) + (f?.b.byteLength ?? 0);
    if (inputs.every((x) => x.factor === undefined)) {
      steps.push({ action: 'merge', ...common, inputs: inputs.map((x) => x.tensor) });
      // The merged rows of every input, and the base's copied rows.
      inputBytes += b.byteLength + inputs.reduce((s, x) => s + prefixBytes(x.tensor), 0);
    } else {
      const factorsOnly = inputs.every((x) => x.tensor === b);
      steps.push({ action: 'low-rank', ...common, inputs, factorsOnly });
      // The factors, the base, and the other weights read (the base once, however many adapters apply to it).
      inputBytes +=
        b.byteLength +
        inputs.reduce((s, x) => s + factorBytes(x.factor) + (x.tensor === b ? 0 : prefixBytes(x.tensor)), 0);
    }
    outputBytes += outByteLength;
  }

  yield* checkOverlap(base, models, adapters, baseFloats, sharedFloats, label, warnings);
  untouchedNames.forEach((names, i) => {
    if (names === undefined || names.length === 0) return;
    warnings.push(
      `${label(i)} leaves ${names.length} tensor(s) as the base has them that other fine-tunes change ` +
        `(${names.slice(0, 3).join(', ')}${names.length > 3 ? ', …' : ''}): its task vector there is 0, which ` +
        'Model Stock counts (cosine 0 with it: t shrinks towards the base; for N = 2, t = 0)',
    );
  });

  const droppedMap = new ChunkedMap<number[]>();
  /** The tensor a dropped name has in fine-tune i (an adapter's own or its model's). */
  const droppedTensor = (i: number, name: string): { dtype: DType; shape: readonly number[] } | undefined =>
    adapters[i]?.dropped.find((d) => d.name === name) ??
    ((models[i] as Checkpoint).adapter?.over ?? (models[i] as Checkpoint)).tensors.get(name);
  for (let i = 0; i < models.length; i++) {
    const model = models[i] as Checkpoint;
    const order =
      model.adapter === undefined
        ? model.order
        : [...(model.adapter.over?.order ?? []), ...(adapters[i]?.dropped.map((d) => d.name) ?? [])];
    for (let k = 0; k < order.length; k++) {
      if (k % CHECK_EVERY === CHECK_EVERY - 1) yield;
      const name = order[k] as string;
      if (base.tensors.has(name)) continue;
      const list = droppedMap.get(name);
      if (list === undefined) droppedMap.set(name, [i]);
      else list.push(i);
    }
  }
  const dropped = new ChunkedList<DroppedTensor>();
  const declared =
    opts.config?.tieWordEmbeddings === true ? ', its config.json sets tie_word_embeddings' : '';
  for (const [name, idx] of droppedMap) {
    if (dropped.length % CHECK_EVERY === CHECK_EVERY - 1) yield;
    const first = droppedTensor(idx[0] as number, name)!;
    const reason =
      embeddingRole(name, opts.config) === 'output-head'
        ? `the base has no ${name} (${TIED}${declared}): the output follows the base`
        : (adapters[idx[0] as number]?.dropped.find((d) => d.name === name)?.reason ?? 'not in the base');
    dropped.push({ name, models: idx, reason, dtype: first.dtype, shape: first.shape });
    warnings.push(`${name}: ${reason}, left out (present in ${idx.map(label).join(', ')})`);
  }
  return {
    steps: yield* steps.toArray(),
    dropped: yield* dropped.toArray(),
    warnings: yield* warnings.toArray(),
    inputBytes,
    outputBytes,
  };
}

/**
 * A fine-tune that shares no mergeable tensor with the base would leave the output the base's copy (a
 * checkpoint whose names carry a prefix the base lacks, an adapter read as weights): an error naming it
 * beside one name of each. One that shares less than half of the base's floats is merged, with a warning.
 */
function* checkOverlap(
  base: Checkpoint,
  models: readonly Checkpoint[],
  adapters: readonly (ResolvedAdapter | undefined)[],
  baseFloats: number,
  sharedFloats: Float64Array,
  label: (i: number) => string,
  warnings: ChunkedList<string>,
): Sliced<void> {
  if (baseFloats === 0) return;
  for (let i = 0; i < models.length; i++) {
    const shared = sharedFloats[i] as number;
    const model = models[i] as Checkpoint;
    const adapter = adapters[i];
    if (adapter !== undefined && model.adapter?.over === undefined) {
      // An adapter of the base leaves every other tensor as it is (zero task vectors) by design.
      if (adapter.byTensor.size > 0) continue;
      const theirs = adapter.dropped[0]?.name;
      const ours = base.order.find((n) => isMergeableDType((base.tensors.get(n) as TensorInfo).dtype));
      throw new ModelStockError(
        'NO_COMMON_TENSORS',
        `${label(i)} is a LoRA adapter none of whose modules is in the base ${base.path} ` +
          `(${theirs === undefined ? 'it adapts nothing' : `it adapts e.g. "${theirs}" where the base has e.g. "${ours ?? base.order[0] ?? ''}"`}); ` +
          'is it an adapter of this base?',
        { file: model.path },
      );
    }
    if (shared === 0) {
      let theirs: string | undefined;
      for (let k = 0; k < model.order.length; k++) {
        if (k % CHECK_EVERY === CHECK_EVERY - 1) yield;
        const name = model.order[k] as string;
        if (!base.tensors.has(name)) {
          theirs = name;
          break;
        }
      }
      const ours = base.order.find((n) => isMergeableDType((base.tensors.get(n) as TensorInfo).dtype));
      const example =
        theirs === undefined
          ? `it has ${model.order.length} tensor(s), none a mergeable tensor of the base`
          : `it has e.g. "${theirs}" where the base has e.g. "${ours ?? base.order[0] ?? ''}"`;
      // Adapter weights named without their folder (or a folder missing adapter_config.json).
      const lora = model.order.some((n) => /\.lora_[AB]\.weight$|\.lora_embedding_[AB]$/.test(n));
      throw new ModelStockError(
        'NO_COMMON_TENSORS',
        `${label(i)} shares no mergeable tensor with the base ${base.path} (${example}); ` +
          (lora
            ? 'its tensors are LoRA factors: give the adapter folder, with its adapter_config.json, to merge it as an adapter'
            : `is it a checkpoint of this base, saved with other names?`),
        { file: model.path },
      );
    }
    if (shared < baseFloats / 2) {
      warnings.push(
        `${label(i)} has only ${shared} of the base's ${baseFloats} mergeable elements ` +
          `(${((100 * shared) / baseFloats).toFixed(1)}%): the tensors it lacks are merged over the other fine-tunes or copied from the base`,
      );
    }
  }
}
