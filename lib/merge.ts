import * as fs from 'node:fs';
import * as path from 'node:path';
import { resolvedConfigYaml } from './config/mergekit';
import { ModelStockError } from './errors';
import { runPlan } from './engine/scheduler';
import { createBackend } from './engine/registry';
import { ThetaRule } from './math/ratio';
import { REPORT_FILE, StagingDir, checkOutputPath, writeFileSynced } from './output/atomic';
import { copyBaseFiles, modelCard } from './output/extras';
import { checkTokenizerSource, copyTokenizer, writeChatTemplate } from './output/tokenizer';
import { modelRefKey } from './hub/reference';
import { checkPositive, DEFAULT_MEMORY, openInputs, reportTensors, validateInputOptions } from './inputs';
import { planShards } from './safetensors/layout';
import { DEFAULT_WINDOW_BYTES } from './safetensors/window';
import { openTensorSource } from './engine/io';
import { SafetensorsWriter } from './safetensors/writer';
import type { MergeOptions, MergeReport } from './types';

export const CONFIG_FILE = 'model_stock_config.yml';
export const DEFAULT_SHARD_SIZE = 5_000_000_000;
export { DEFAULT_MEMORY };

function validate(o: MergeOptions): void {
  validateInputOptions(o);
  const bad = (m: string): ModelStockError => new ModelStockError('BAD_CONFIG', m);
  if (typeof o.out !== 'string' || o.out === '') throw bad('out: an output folder is required');
  checkPositive(o.shardSize, 'shardSize');
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

  const { base, models, modelLabel, plan } = await openInputs(options, {
    record: (m) => ownWarnings.push(m),
    // An OUT we would refuse is refused before any download (and again once Hub IDs are resolved).
    beforeDownload: (local) => void checkOutputPath(options.out, local, options.overwrite ?? false),
  });
  if (tokenizerSource !== 'base') {
    checkTokenizerSource({
      source: models[tokenizerSource]!,
      sourceLabel: `"${options.models[tokenizerSource]}"`,
      base,
    });
  }
  const target = checkOutputPath(
    options.out,
    [base, ...models].map((c) => c.dir),
    options.overwrite ?? false,
  );
  const layout = planShards(
    plan.steps.map((s) => ({
      name: s.name,
      dtype: s.outDtype,
      shape: s.base.shape,
      byteLength: s.outByteLength,
    })),
    { shardSize: options.shardSize ?? DEFAULT_SHARD_SIZE },
  );

  const backend = createBackend(options.backend ?? 'auto', {
    threads: options.threads,
    onWarning: options.onWarning,
  });
  const reader = openTensorSource(options.io ?? 'auto', { threads: options.threads });
  const staging = await StagingDir.create(target);
  let writer: SafetensorsWriter | undefined;
  try {
    writer = await SafetensorsWriter.create(staging.dir, layout, { mode: options.writeMode });
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
    const write = await writer.finish({ fsync });
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
      tensors: reportTensors(plan, result),
      warnings: [...ownWarnings, ...plan.warnings, ...result.warnings],
      bytesRead: result.bytesRead,
      bytesWritten: result.bytesWritten,
      write,
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
