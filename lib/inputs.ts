import * as fs from 'node:fs';
import * as path from 'node:path';
import { FLOAT_DTYPES } from './dtype';
import { IO_MODES } from './engine/io';
import { MAX_QUEUE_DEPTH } from './engine/fileSource';
import type { EngineResult } from './engine/scheduler';
import { checkLayerRanges } from './config/layers';
import { ModelStockError, throwIfCancelled } from './errors';
import { modelRefKey } from './hub/reference';
import { resolveInputRef } from './hub/resolve';
import { modelConfigOf, type ModelConfig } from './plan/embeddings';
import { makePlanSliced, type Plan } from './plan/plan';
import { forEachSliced, runSliced } from './util/sliced';
import { openCheckpoint } from './checkpoint/open';
import type { Checkpoint } from './checkpoint/types';
import { DEFAULT_WINDOW_BYTES } from './safetensors/window';
import type { InputIo } from './engine/inputSources';
import type { InputReport, InspectOptions, TensorReport } from './types';

/**
 * What a merge and an inspection share: their options checked, the base and the fine-tunes opened and
 * validated, and the plan — one decision per base tensor, before any byte is read.
 */

export const DEFAULT_MEMORY = 1 << 30;

/**
 * Below this the two pipeline slots (memory / 2 each) hold only a few KiB: nearly every tensor is
 * streamed in windows that small, in two passes, and per-window costs dominate (--memory 1 ran ~470×
 * slower than the default). Accepted, since it is still correct, but said.
 */
export const MIN_USEFUL_MEMORY = 16 * 1024 * 1024;

export function lowMemoryWarning(memory: number): string {
  return (
    `memory budget ${memory} bytes is below 16 MiB: each of the two pipeline slots gets ${Math.floor(memory / 2)} ` +
    `bytes, so tensors are streamed in windows that small, in two passes, and the merge can be hundreds of ` +
    `times slower; the default is 1 GiB`
  );
}

const positive = (v: number | undefined, name: string, max = Number.MAX_SAFE_INTEGER): void => {
  if (v !== undefined && !(Number.isSafeInteger(v) && v > 0 && v <= max)) {
    throw new ModelStockError(
      'BAD_CONFIG',
      `${name} must be a positive integer${max < Number.MAX_SAFE_INTEGER ? ` ≤ ${max}` : ''}, got ${v}`,
    );
  }
};

export function validateInputOptions(o: InspectOptions): void {
  const bad = (m: string): ModelStockError => new ModelStockError('BAD_CONFIG', m);
  if (typeof o.base !== 'string' || o.base === '')
    throw bad('base: a model folder, a weight file (.safetensors, .bin, .pt, …) or a Hub ID is required');
  if (!Array.isArray(o.models)) throw bad('models: expected a list of model folders');
  if (o.models.length < 2) {
    throw new ModelStockError(
      'TOO_FEW_MODELS',
      `Model Stock needs at least 2 fine-tuned models, got ${o.models.length}`,
    );
  }
  if (o.theta !== undefined && o.theta !== 'mean-cos' && o.theta !== 'mean-angle') {
    throw bad(`theta must be mean-cos or mean-angle, got "${String(o.theta)}"`);
  }
  if (o.outDtype !== undefined && !FLOAT_DTYPES.includes(o.outDtype)) {
    throw new ModelStockError(
      'UNSUPPORTED_DTYPE',
      `out dtype must be one of ${FLOAT_DTYPES.join(', ')}, got "${o.outDtype}"`,
    );
  }
  if (o.stateDictKey !== undefined && (typeof o.stateDictKey !== 'string' || o.stateDictKey === ''))
    throw bad(
      'stateDictKey must be a non-empty string: the top-level entry of each PyTorch input holding its weights',
    );
  if (o.io !== undefined && !IO_MODES.includes(o.io))
    throw bad(`io must be one of ${IO_MODES.join(', ')}, got "${o.io}"`);
  positive(o.memory, 'memory');
  positive(o.window, 'window', DEFAULT_WINDOW_BYTES);
  positive(o.threads, 'threads', 1024);
  positive(o.ioQueueDepth, 'ioQueueDepth', MAX_QUEUE_DEPTH);
}

export { positive as checkPositive };

/**
 * What the base's config.json says about its embeddings. Only a model folder has one: beside a single
 * .safetensors file, a config.json may belong to something else.
 */
async function readModelConfig(checkpoint: Checkpoint): Promise<ModelConfig> {
  if (checkpoint.path !== checkpoint.dir) return {};
  try {
    const text = await fs.promises.readFile(path.join(checkpoint.dir, 'config.json'), 'utf8');
    return modelConfigOf(JSON.parse(text));
  } catch {
    return {}; // absent or not JSON: the name table alone decides
  }
}

export interface OpenedInputs {
  readonly base: Checkpoint;
  readonly models: Checkpoint[];
  /** How fine-tune i is named in messages: "model 2 (./ft-code)". */
  readonly modelLabel: (i: number) => string;
  readonly plan: Plan;
}

/**
 * Resolves every reference (a path, or a Hub ID through the Hugging Face cache, downloading what is
 * missing when online), checks mergekit slices against the models' layer counts, opens and validates
 * every checkpoint, then plans; the plan's warnings go to onWarning. References stay as the user wrote
 * them everywhere else (messages, report, config, card).
 */
export async function openInputs(
  o: InspectOptions,
  hooks: {
    /** Hub warnings (fallback to the cache, …): recorded for the report (and said by the caller). */
    readonly record: (message: string) => void;
    /** Called with the references that are local paths, before anything is downloaded. */
    readonly beforeDownload?: (localPaths: string[]) => void | Promise<void>;
  },
): Promise<OpenedInputs> {
  const memory = o.memory ?? DEFAULT_MEMORY;
  if (memory < MIN_USEFUL_MEMORY) {
    const w = lowMemoryWarning(memory);
    hooks.record(w);
    o.onWarning?.(w);
  }
  const refs = [o.base, ...o.models];
  const local: string[] = [];
  for (const r of refs) {
    if (
      await fs.promises.stat(r).then(
        () => true,
        () => false,
      )
    )
      local.push(r);
  }
  await hooks.beforeDownload?.(local);
  // Hub warnings go to the report, and to hub.onWarning when given, else to onWarning.
  const say = o.hub?.onWarning ?? o.onWarning;
  const hub = {
    ...o.hub,
    signal: o.hub?.signal ?? o.signal,
    onWarning: (m: string) => {
      hooks.record(m);
      say?.(m);
    },
  };
  const resolvedRefs: Awaited<ReturnType<typeof resolveInputRef>>[] = [];
  for (const r of refs) resolvedRefs.push(await resolveInputRef(r, hub));
  const paths = resolvedRefs.map((r) => r.path);
  throwIfCancelled(o.signal, 'the merge');
  if (o.layerRanges !== undefined && o.layerRanges.length > 0) {
    const resolved = new Map(refs.map((r, i) => [modelRefKey(r), paths[i]!]));
    await checkLayerRanges(o.layerRanges, (ref) => resolved.get(modelRefKey(ref)) ?? ref);
  }
  const open = async (p: string): Promise<Checkpoint> => {
    const checkpoint = await openCheckpoint(p, { stateDictKey: o.stateDictKey });
    for (const w of checkpoint.warnings) {
      hooks.record(w);
      o.onWarning?.(w);
    }
    return checkpoint;
  };
  if (resolvedRefs[0]!.over !== undefined) {
    throw new ModelStockError(
      'BAD_CONFIG',
      `base "${o.base}": the base must be a full model, not a model + a LoRA adapter (merge the adapter into ` +
        'it first, or give the adapter as one of the models)',
    );
  }
  const base = await open(paths[0]!);
  const baseKey = modelRefKey(o.base);
  const models: Checkpoint[] = [];
  for (const [i, r] of resolvedRefs.slice(1).entries()) {
    const checkpoint = await open(r.path);
    if (r.over === undefined) {
      models.push(checkpoint);
      continue;
    }
    const ref = o.models[i]!;
    if (checkpoint.adapter === undefined) {
      throw new ModelStockError(
        'BAD_CONFIG',
        `"${ref}": what follows the "+" must be a LoRA adapter (a folder with adapter_config.json), ` +
          `but ${checkpoint.path} holds ${checkpoint.format} weights`,
        { file: checkpoint.path },
      );
    }
    // BASE+ADAPTER over the merge's own base is the adapter alone; over another model, that model + it.
    if (modelRefKey(r.over.ref) === baseKey || path.resolve(r.over.path) === base.path) {
      models.push(checkpoint);
      continue;
    }
    const over = await open(r.over.path);
    if (over.adapter !== undefined) {
      throw new ModelStockError(
        'BAD_CONFIG',
        `"${ref}": the model before the "+" must be a full model, but ${over.path} is a LoRA adapter`,
        { file: over.path },
      );
    }
    models.push({ ...checkpoint, adapter: { ...checkpoint.adapter, over } });
  }
  models.forEach((m, i) => {
    const named = m.adapter?.config.baseModel;
    const [ref, dir] =
      m.adapter?.over !== undefined
        ? [resolvedRefs[i + 1]!.over!.ref, m.adapter.over.path]
        : [o.base, base.path];
    if (named === undefined || namesModel(named, ref, dir)) return;
    const w =
      `model ${i + 1} (${o.models[i]}): its adapter_config.json names base_model_name_or_path "${named}", ` +
      `but it is applied to "${ref}": is it an adapter of that model?`;
    hooks.record(w);
    o.onWarning?.(w);
  });
  const labels = o.models.map((m, i) => `model ${i + 1} (${m})`);
  const modelLabel = (i: number): string => labels[i] ?? `model ${i + 1}`;
  const plan = await makePlanSliced(base, models, {
    filterWise: o.filterWise ?? false,
    outDtype: o.outDtype,
    modelLabel,
    config: await readModelConfig(base),
  });
  const onWarning = o.onWarning;
  if (onWarning !== undefined)
    await runSliced(forEachSliced(plan.warnings.length, (i) => onWarning(plan.warnings[i]!)));
  return { base, models, modelLabel, plan };
}

/**
 * Whether an adapter's base_model_name_or_path names the model given as `ref` (resolved to `dir`): the
 * same reference (a Hub ID case-insensitively, a revision aside), the same folder, or a Hub ID whose name
 * is the folder's (a local copy, or the Hub cache's models--org--name).
 */
export function namesModel(named: string, ref: string, dir: string): boolean {
  const norm = (s: string): string =>
    s
      .replace(/@[^/@]*$/, '')
      .replace(/[\\/]+$/, '')
      .toLowerCase();
  if (norm(named) === norm(ref)) return true;
  if (path.isAbsolute(named) || named.startsWith('.')) return path.resolve(named) === path.resolve(dir);
  const repo = norm(named);
  const name = repo.split('/').pop() ?? repo;
  const parts = path.resolve(dir).toLowerCase().split(path.sep);
  return parts.includes(name) || parts.includes(`models--${repo.replace('/', '--')}`);
}

/** The checkpoints a merge reads: the base, the fine-tunes, and the models adapters are applied to. */
export function checkpointsRead(base: Checkpoint, models: readonly Checkpoint[]): Checkpoint[] {
  return [base, ...models, ...models.flatMap((m) => (m.adapter?.over === undefined ? [] : [m.adapter.over]))];
}

/** The report's tensor entries: one per base tensor in its order, then the tensors left out. */
export function reportTensors(plan: Plan, result: EngineResult): TensorReport[] {
  return [
    ...result.tensors,
    ...plan.dropped.map((d) => ({
      name: d.name,
      action: 'drop' as const,
      reason: d.reason,
      models: d.models,
      dtype: d.dtype,
      shape: d.shape,
    })),
  ];
}

/** The report's `inputs`: each reference as written, its format and how its bytes were read (and why not as asked). */
export function reportInputs(
  refs: readonly string[],
  checkpoints: readonly Checkpoint[],
  io: readonly InputIo[],
): InputReport[] {
  return refs.map((ref, i) => ({ ref, format: checkpoints[i]!.format, ...io[i]! }));
}
