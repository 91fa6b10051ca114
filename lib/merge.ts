import * as path from 'node:path';
import { resolvedConfigYaml } from './config/mergekit';
import { FLOAT_DTYPES } from './dtype';
import { ModelStockError } from './errors';
import { runPlan } from './engine/engine';
import { selectBackend } from './engine/select';
import { ThetaRule } from './math/ratio';
import { REPORT_FILE, StagingDir, checkOutputPath, writeFileSynced } from './output/atomic';
import { copyBaseFiles, modelCardSliced } from './output/extras';
import { writeReportJson } from './output/report';
import { makePlanSliced } from './plan/plan';
import { openCheckpoint } from './safetensors/checkpoint';
import { planShardsSliced } from './safetensors/layout';
import { forEachSliced, mapSliced, runSliced } from './util/sliced';
import { DEFAULT_WINDOW_BYTES } from './safetensors/window';
import { IO_MODES, openTensorSource } from './engine/io';
import { SafetensorsWriter } from './safetensors/writer';
import type { Checkpoint } from './safetensors/types';
import type { MergeOptions, MergeReport } from './types';

export const CONFIG_FILE = 'model_stock_config.yml';
export const DEFAULT_SHARD_SIZE = 5_000_000_000;
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
  if (memory < MIN_USEFUL_MEMORY) options.onWarning?.(lowMemoryWarning(memory));

  const base = await openCheckpoint(options.base);
  const models: Checkpoint[] = [];
  for (const m of options.models) models.push(await openCheckpoint(m));
  const labels = options.models.map((m, i) => `model ${i + 1} (${m})`);
  const modelLabel = (i: number): string => labels[i] ?? `model ${i + 1}`;
  const target = checkOutputPath(
    options.out,
    [base, ...models].map((c) => c.dir),
    options.overwrite ?? false,
  );
  const plan = await makePlanSliced(base, models, { filterWise, outDtype: options.outDtype, modelLabel });
  const onWarning = options.onWarning;
  if (onWarning !== undefined)
    await runSliced(forEachSliced(plan.warnings.length, (i) => onWarning(plan.warnings[i] as string)));
  const layout = await planShardsSliced(
    await runSliced(
      mapSliced(plan.steps, (s) => ({
        name: s.name,
        dtype: s.outDtype,
        shape: s.base.shape,
        byteLength: s.outByteLength,
      })),
    ),
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
    const configYaml =
      options.configYaml ??
      resolvedConfigYaml({
        base: options.base,
        models: options.models,
        filterWise,
        theta,
        outDtype: options.outDtype,
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
      warnings: plan.warnings.concat(result.warnings),
      bytesRead: result.bytesRead,
      bytesWritten: result.bytesWritten,
      seconds: Number(process.hrtime.bigint() - started) / 1e9,
    };
    await writeReportJson(path.join(staging.dir, REPORT_FILE), report, { fsync, flags: 'wx' });
    await writeFileSynced(path.join(staging.dir, CONFIG_FILE), configYaml, fsync);
    await writeFileSynced(
      path.join(staging.dir, 'README.md'),
      await modelCardSliced(report, configYaml),
      fsync,
    );
    await staging.commit(fsync);
    // Written again rather than copied: --report may name the report inside OUT, and a copy onto
    // itself would truncate it first.
    if (options.report !== undefined)
      await writeReportJson(options.report, report, { fsync: false, flags: 'w' });
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
