import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkLayerRanges } from './config/layers';
import { resolvedConfigYaml } from './config/mergekit';
import { FLOAT_DTYPES } from './dtype';
import { ModelStockError } from './errors';
import { runPlan } from './engine/engine';
import { selectBackend } from './engine/select';
import { ThetaRule } from './math/ratio';
import { REPORT_FILE, StagingDir, checkOutputPath, writeFileSynced } from './output/atomic';
import { copyBaseFiles, modelCard } from './output/extras';
import { checkTokenizerSource, copyTokenizer, writeChatTemplate } from './output/tokenizer';
import { modelRefKey } from './hub/reference';
import { resolveModelRef } from './hub/resolve';
import { makePlan } from './plan/plan';
import { openCheckpoint } from './safetensors/checkpoint';
import { planShards } from './safetensors/layout';
import { DEFAULT_WINDOW_BYTES } from './safetensors/window';
import { IO_MODES, openTensorSource } from './engine/io';
import { SafetensorsWriter } from './safetensors/writer';
import type { Checkpoint } from './safetensors/types';
import type { MergeOptions, MergeReport } from './types';

export const CONFIG_FILE = 'model_stock_config.yml';
export const DEFAULT_SHARD_SIZE = 5_000_000_000;
export const DEFAULT_MEMORY = 1 << 30;

function validate(o: MergeOptions): void {
  const bad = (m: string): ModelStockError => new ModelStockError('BAD_CONFIG', m);
  if (typeof o.base !== 'string' || o.base === '')
    throw bad('base: a model folder or .safetensors file is required');
  if (!Array.isArray(o.models)) throw bad('models: expected a list of model folders');
  if (o.models.length < 2) {
    throw new ModelStockError(
      'TOO_FEW_MODELS',
      `Model Stock needs at least 2 fine-tuned models, got ${o.models.length}`,
    );
  }
  if (typeof o.out !== 'string' || o.out === '') throw bad('out: an output folder is required');
  if (o.theta !== undefined && o.theta !== 'mean-cos' && o.theta !== 'mean-angle') {
    throw bad(`theta must be mean-cos or mean-angle, got "${String(o.theta)}"`);
  }
  if (o.outDtype !== undefined && !FLOAT_DTYPES.includes(o.outDtype)) {
    throw new ModelStockError(
      'UNSUPPORTED_DTYPE',
      `out dtype must be one of ${FLOAT_DTYPES.join(', ')}, got "${o.outDtype}"`,
    );
  }
  const positive = (v: number | undefined, name: string, max = Number.MAX_SAFE_INTEGER): void => {
    if (v !== undefined && !(Number.isSafeInteger(v) && v > 0 && v <= max)) {
      throw bad(
        `${name} must be a positive integer${max < Number.MAX_SAFE_INTEGER ? ` ≤ ${max}` : ''}, got ${v}`,
      );
    }
  };
  if (o.io !== undefined && !IO_MODES.includes(o.io))
    throw bad(`io must be one of ${IO_MODES.join(', ')}, got "${o.io}"`);
  positive(o.shardSize, 'shardSize');
  positive(o.memory, 'memory');
  positive(o.window, 'window', DEFAULT_WINDOW_BYTES);
  positive(o.threads, 'threads', 1024);
  if (o.tokenizerSource !== undefined && (typeof o.tokenizerSource !== 'string' || o.tokenizerSource === ''))
    throw bad('tokenizerSource must be "base" or the reference of one of the models');
  if (o.chatTemplate !== undefined && typeof o.chatTemplate !== 'string')
    throw bad('chatTemplate must be a template string');
}

/** 'base', or the index in `models` of the model whose tokenizer the output gets. */
function tokenizerSourceIndex(o: MergeOptions): 'base' | number {
  const source = o.tokenizerSource;
  if (source === undefined || source === 'base') return 'base';
  const key = modelRefKey(source);
  if (key === modelRefKey(o.base)) return 'base';
  const i = o.models.findIndex((m) => modelRefKey(m) === key);
  if (i < 0) {
    throw new ModelStockError(
      'BAD_CONFIG',
      `tokenizer source "${source}" is neither the base nor one of the models of this merge`,
    );
  }
  return i;
}

/**
 * Merges `models` into `base` with Model Stock and writes the result to `out`, atomically: everything is
 * built in a temporary folder beside `out` and renamed into place at the end; on any failure nothing is
 * left behind and the inputs are untouched. Returns the per-tensor report (also written as
 * model_stock_report.json beside the weights).
 */
export async function mergeModelStock(options: MergeOptions): Promise<MergeReport> {
  const started = process.hrtime.bigint();
  validate(options);
  const filterWise = options.filterWise ?? false;
  const theta: ThetaRule = options.theta ?? 'mean-cos';
  const fsync = options.fsync ?? true;
  const memory = options.memory ?? DEFAULT_MEMORY;
  const window = options.window ?? DEFAULT_WINDOW_BYTES;
  const tokenizerSource = tokenizerSourceIndex(options);
  // Warnings of our own (Hub fallbacks, chat template) go to onWarning and into the report.
  const ownWarnings: string[] = [];
  const warn = (m: string): void => {
    ownWarnings.push(m);
    options.onWarning?.(m);
  };

  // An OUT we would refuse is refused before any download (checked again once Hub IDs are resolved).
  const localInputs: string[] = [];
  for (const r of [options.base, ...options.models]) {
    if (
      await fs.promises.stat(r).then(
        () => true,
        () => false,
      )
    )
      localInputs.push(r);
  }
  checkOutputPath(options.out, localInputs, options.overwrite ?? false);
  // References stay as written (report, config, card); only opening uses the resolved paths.
  const hubWarning = options.hub?.onWarning ?? options.onWarning;
  const hub = {
    ...options.hub,
    onWarning: (m: string) => {
      ownWarnings.push(m);
      hubWarning?.(m);
    },
  };
  const basePath = await resolveModelRef(options.base, hub);
  const modelPaths: string[] = [];
  for (const m of options.models) modelPaths.push(await resolveModelRef(m, hub));
  if (options.layerRanges !== undefined && options.layerRanges.length > 0) {
    const resolved = new Map(
      [options.base, ...options.models].map((r, i) => [
        modelRefKey(r),
        i === 0 ? basePath : modelPaths[i - 1]!,
      ]),
    );
    await checkLayerRanges(options.layerRanges, (ref) => resolved.get(modelRefKey(ref)) ?? ref);
  }

  const base = await openCheckpoint(basePath);
  const models: Checkpoint[] = [];
  for (const m of modelPaths) models.push(await openCheckpoint(m));
  if (tokenizerSource !== 'base') {
    checkTokenizerSource({
      source: models[tokenizerSource]!,
      sourceLabel: `"${options.models[tokenizerSource]}"`,
      base,
    });
  }
  const labels = options.models.map((m, i) => `model ${i + 1} (${m})`);
  const modelLabel = (i: number): string => labels[i] ?? `model ${i + 1}`;
  const target = checkOutputPath(
    options.out,
    [base, ...models].map((c) => c.dir),
    options.overwrite ?? false,
  );
  const plan = makePlan(base, models, { filterWise, outDtype: options.outDtype, modelLabel });
  for (const w of plan.warnings) options.onWarning?.(w);
  const layout = planShards(
    plan.steps.map((s) => ({
      name: s.name,
      dtype: s.outDtype,
      shape: s.base.shape,
      byteLength: s.outByteLength,
    })),
    { shardSize: options.shardSize ?? DEFAULT_SHARD_SIZE },
  );

  const backend = selectBackend(options.backend ?? 'auto', {
    threads: options.threads,
    onWarning: options.onWarning,
  });
  const reader = openTensorSource(options.io ?? 'auto');
  const staging = await StagingDir.create(target);
  let writer: SafetensorsWriter | undefined;
  try {
    writer = await SafetensorsWriter.create(staging.dir, layout);
    const w = writer;
    const result = await runPlan(plan, {
      backend,
      source: reader,
      sink: { write: (name, offset, data) => w.write(name, offset, data) },
      theta,
      memory,
      window,
      modelLabel,
      onProgress: options.onProgress,
      onWarning: options.onWarning,
    });
    await writer.finish({ fsync });
    writer = undefined;
    await copyBaseFiles(base.dir, staging.dir, options.outDtype, fsync);
    if (tokenizerSource !== 'base') await copyTokenizer(models[tokenizerSource]!.dir, staging.dir, fsync);
    if (options.chatTemplate !== undefined) {
      const w = await writeChatTemplate(staging.dir, options.chatTemplate, fsync);
      if (w !== undefined) warn(w);
    }
    const configYaml =
      options.configYaml ??
      resolvedConfigYaml({
        base: options.base,
        models: options.models,
        filterWise,
        theta,
        outDtype: options.outDtype,
        tokenizerSource: options.tokenizerSource,
        chatTemplate: options.chatTemplate,
      });
    const report: MergeReport = {
      method: 'model_stock',
      base: options.base,
      models: [...options.models],
      out: options.out,
      filterWise,
      theta,
      backend: backend.info(),
      tensors: result.tensors,
      warnings: [...ownWarnings, ...plan.warnings, ...result.warnings],
      bytesRead: result.bytesRead,
      bytesWritten: result.bytesWritten,
      seconds: Number(process.hrtime.bigint() - started) / 1e9,
    };
    const reportJson = JSON.stringify(report, null, 2) + '\n';
    await writeFileSynced(path.join(staging.dir, REPORT_FILE), reportJson, fsync);
    await writeFileSynced(path.join(staging.dir, CONFIG_FILE), configYaml, fsync);
    await writeFileSynced(path.join(staging.dir, 'README.md'), modelCard(report, configYaml), fsync);
    await staging.commit(fsync);
    if (options.report !== undefined) await fs.promises.writeFile(options.report, reportJson);
    return report;
  } catch (e) {
    await writer?.abort();
    await staging.discard();
    throw e;
  } finally {
    await reader.close();
    await backend.dispose();
  }
}
