/**
 * `--out-format peft`: which tensors of a merge of LoRA adapters are written as merged factors, which
 * whole (PEFT's modules_to_save), and the adapter file's layout — decided from the plan before any
 * weight is read. The engine runs the same plan as a dense merge (the same Gram, the same t, the same
 * report); a tensor written as factors takes its t through EngineOptions.lowRankOutput instead of the
 * fused W0 + (t/N)·Σ s_i·B_i·A_i pass, and a tensor written whole is the dense merge's output under
 * PEFT's plain name. Tensors no adapter changes are not written: the adapter leaves them to the base.
 */
import type { Checkpoint } from '../checkpoint/types';
import type { LowRankFactor } from '../engine/backend';
import { ModelStockError } from '../errors';
import { decodeFloats } from '../math/codec';
import type { LowRankStep, Plan, PlanStep } from '../plan/plan';
import type { ShardLayout, TensorLayoutEntry } from '../safetensors/types';
import {
  adapterLayout,
  loraKeyOf,
  mergeFactors,
  mergedAdapterConfig,
  moduleOfParameter,
  PEFT_KEY_PREFIX,
  writeFactors,
} from './peft';

/** A tensor written as merged factors. */
interface FactorTarget {
  readonly module: string;
  readonly rows: number;
  readonly cols: number;
  readonly transposed: boolean;
  readonly embedding: boolean;
  readonly rank: number;
}

export interface AdapterOutputPlan {
  /**
   * The tensors written as factors: a Gram pass (no sink, so no base weight is read) whose t goes to
   * EngineOptions.lowRankOutput.
   */
  readonly factorSteps: readonly PlanStep[];
  /** The tensors written whole: an ordinary merge into the adapter file, under PEFT's keys. */
  readonly wholeSteps: readonly PlanStep[];
  /** Step name → the module its merged factors are written for. */
  readonly factors: ReadonlyMap<string, FactorTarget>;
  /** Step name → the key of the whole merged tensor in adapter_model.safetensors. */
  readonly wholeKeys: ReadonlyMap<string, string>;
  readonly layout: ShardLayout;
  /** adapter_config.json's fields. */
  readonly config: Record<string, unknown>;
}

const refuse = (message: string, file?: string): ModelStockError =>
  new ModelStockError(
    'UNSUPPORTED_ADAPTER',
    `--out-format peft: ${message}`,
    file === undefined ? {} : { file },
  );

/**
 * Every fine-tune must be a LoRA adapter of the base itself, and the adapters must name one base model:
 * refused otherwise (before any weight is read), naming the input. Returns the base model and task type
 * the output's config names.
 */
export function checkAdapterInputs(
  baseRef: string,
  models: readonly Checkpoint[],
  label: (i: number) => string,
): { baseModel: string; taskType: string | undefined } {
  let named: { value: string; who: number } | undefined;
  let taskType: string | undefined;
  models.forEach((m, i) => {
    const adapter = m.adapter;
    if (adapter === undefined) {
      throw new ModelStockError(
        'BAD_CONFIG',
        `--out-format peft writes a LoRA adapter, so every model must be a LoRA adapter of the base; ${label(i)} is a full ${m.format} checkpoint (write a full model: --out-format model)`,
        { file: m.path },
      );
    }
    if (adapter.over !== undefined) {
      throw refuse(
        `${label(i)} is an adapter applied to ${adapter.over.path}, not to the base: the merge is no adapter of the base`,
        adapter.configFile,
      );
    }
    const b = adapter.config.baseModel;
    if (b !== undefined) {
      if (named !== undefined && named.value !== b) {
        throw refuse(
          `the adapters name different base models (base_model_name_or_path "${named.value}" in ${label(named.who)}, "${b}" in ${label(i)}); ` +
            'an adapter of one base cannot hold them both (correct the field if they are the same model)',
          adapter.configFile,
        );
      }
      named ??= { value: b, who: i };
    }
    taskType ??= adapter.config.taskType;
  });
  return { baseModel: named?.value ?? baseRef, taskType };
}

/** The module of the step's factors, all inputs agreeing, or undefined when it has none with lora_A (a lora_B.bias). */
function factorModule(step: LowRankStep): string | undefined {
  let module: string | undefined;
  for (const x of step.inputs) {
    const f = x.factor;
    if (f === undefined) continue;
    if (f.a === undefined) return undefined;
    if (module !== undefined && module !== f.module) {
      throw refuse(
        `${step.name} is module "${module}" in one adapter and "${f.module}" in another: one adapter cannot name it both ways`,
      );
    }
    module = f.module;
  }
  return module;
}

/** An adapter's key as the parameter's name: prefix off, a wrapped layer's `base_layer.` too (P:src/peft/utils/save_and_load.py). */
const plainName = (key: string): string =>
  key.replace(/^base_model\.model\./, '').replace(/\.base_layer\.(weight|bias)$/, '.$1');

/** The adapter's own name of a whole tensor the step writes: from an adapter's factors or saved tensor, else the base's. */
function wholeName(step: PlanStep): string {
  const param = step.name.slice(step.name.lastIndexOf('.') + 1);
  if (step.action === 'low-rank') {
    for (const x of step.inputs) if (x.factor !== undefined) return `${x.factor.module}.${param}`;
    for (const x of step.inputs) if (x.tensor !== step.base) return plainName(x.tensor.name);
  } else if (step.action === 'merge') {
    for (const t of step.inputs) if (t !== step.base) return plainName(t.name);
  }
  return step.name;
}

/**
 * Splits the plan into merged factors and whole tensors. A module with any tensor that must be merged
 * whole — an adapter saved it (modules_to_save), trained its bias, or the tensor mixes factors with
 * whole weights or merges only some rows (vocabularies) — is saved whole, every tensor of it: PEFT
 * gives a module in modules_to_save no LoRA layer.
 */
export function planAdapterOutput(
  plan: Plan,
  base: Checkpoint,
  models: readonly Checkpoint[],
  meta: { baseModel: string; taskType: string | undefined },
): AdapterOutputPlan {
  const changed = plan.steps.filter((s) => s.action !== 'copy');
  const lowRank = new Map<string, { step: LowRankStep; module: string }>();
  const wholeModules = new Set<string>();
  for (const s of changed) {
    const module =
      s.action === 'low-rank' && s.factorsOnly && s.rows === undefined ? factorModule(s) : undefined;
    if (module !== undefined && s.action === 'low-rank') lowRank.set(s.name, { step: s, module });
    else wholeModules.add(moduleOfParameter(wholeName(s)));
  }
  // Embeddings' factors keep PEFT's embedding keys (their LowRankRef is transposed like a Conv1D's).
  const embeddings = new Set(
    models.flatMap((m) => (m.adapter?.modules ?? []).filter((x) => x.embedding).map((x) => x.module)),
  );
  const factors = new Map<string, FactorTarget>();
  const wholeKeys = new Map<string, string>();
  const entries: TensorLayoutEntry[] = [];
  for (const s of changed) {
    const lr = lowRank.get(s.name);
    if (lr !== undefined && !wholeModules.has(lr.module)) {
      const rows = lr.step.shape[0] ?? 1;
      const cols = lr.step.numel / rows;
      const present = lr.step.inputs.filter((x) => x.factor !== undefined);
      const rank = present.reduce((a, x) => a + x.factor!.rank, 0);
      const transposed = present[0]!.factor!.transposed;
      const embedding = embeddings.has(lr.module);
      const target = { module: lr.module, rows, cols, transposed, embedding, rank };
      factors.set(s.name, target);
      const [inDim, outDim] = transposed ? [rows, cols] : [cols, rows];
      entries.push(
        {
          name: loraKeyOf(lr.module, 'A', embedding),
          dtype: 'F32',
          shape: [rank, inDim],
          byteLength: rank * inDim * 4,
        },
        {
          name: loraKeyOf(lr.module, 'B', embedding),
          dtype: 'F32',
          shape: [outDim, rank],
          byteLength: outDim * rank * 4,
        },
      );
      continue;
    }
    const name =
      lr !== undefined ? `${lr.module}.${s.name.slice(s.name.lastIndexOf('.') + 1)}` : wholeName(s);
    const key = PEFT_KEY_PREFIX + name;
    wholeKeys.set(s.name, key);
    entries.push({ name: key, dtype: s.outDtype, shape: s.shape, byteLength: s.outByteLength });
  }
  const targets = [...new Map([...factors.values()].map((f) => [f.module, f])).values()];
  const layers = targets.filter((f) => !f.embedding);
  // Modules a pattern key must not also match: the adapters', and the base's when they use its names
  // (GPT-2's adapters say transformer.h.0…, its checkpoint h.0…: those are not modules of the adapter's model).
  const knownModules = new Set<string>();
  for (const m of models) for (const x of m.adapter?.modules ?? []) knownModules.add(x.module);
  const baseModules = base.order.map(moduleOfParameter);
  const baseNames = new Set(baseModules);
  if ([...knownModules].some((m) => baseNames.has(m))) for (const m of baseModules) knownModules.add(m);
  const config = mergedAdapterConfig({
    modules: targets.map((f) => ({ module: f.module, rank: f.rank })),
    modulesToSave: [
      ...new Set([...wholeKeys.values()].map((k) => moduleOfParameter(k.slice(PEFT_KEY_PREFIX.length)))),
    ],
    knownModules,
    // Conv1D layers only; PEFT forces the flag per layer type anyway (P:src/peft/tuners/lora/layer.py#L2627-L2634).
    fanInFanOut: layers.length > 0 && layers.every((f) => f.transposed),
    baseModel: meta.baseModel,
    taskType: meta.taskType,
  });
  return {
    factorSteps: changed.filter((s) => factors.has(s.name)),
    wholeSteps: changed.filter((s) => !factors.has(s.name)),
    factors,
    wholeKeys,
    layout: adapterLayout(entries),
    config,
  };
}

/**
 * The engine's onLowRankTerms hook for the tensors planned as factors: A′, B′ computed at once — the
 * factor bytes are views into the pipeline's buffers, valid only during the call — and written in the
 * background; `settle` waits for every write (and throws the first failure).
 */
export function factorWriter(
  out: AdapterOutputPlan,
  writer: { write(name: string, offset: number, data: Uint8Array): Promise<void> },
): {
  onTerms: (step: LowRankStep, factors: readonly (LowRankFactor | undefined)[], t: Float64Array) => void;
  settle: () => Promise<void>;
} {
  const writes: Promise<void>[] = [];
  return {
    onTerms: (step, factors, t) => {
      const target = out.factors.get(step.name);
      if (target === undefined) return;
      const merged = mergeFactors({
        ...target,
        n: step.inputs.length,
        t,
        factors: factors.map((f) =>
          f === undefined
            ? undefined
            : {
                a: decodeFloats(f.a, f.aDtype),
                b: decodeFloats(f.b, f.bDtype),
                rank: f.rank,
                scale: f.scale,
              },
        ),
      });
      const write = writeFactors(writer, merged);
      write.catch(() => undefined); // awaited by settle(); never an unhandled rejection meanwhile
      writes.push(write);
    },
    settle: async () => {
      await Promise.all(writes);
    },
  };
}
