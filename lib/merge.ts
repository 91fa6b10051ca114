import * as path from 'node:path';
import { resolvedConfigYaml } from './config/mergekit';
import { ModelStockError, asCancelled, asIoError, throwIfCancelled } from './errors';
import { runPlan } from './engine/scheduler';
import { createBackend } from './engine/registry';
import { ThetaRule } from './math/ratio';
import { REPORT_FILE, StagingDir, checkOutputPath, writeFileSynced } from './output/atomic';
import type { Placement } from './output/place';
import { checkReportPath, placeReport } from './output/reportFile';
import { copyBaseFiles, modelCardSliced } from './output/extras';
import { writeReportJson } from './output/report';
import { checkTokenizerSource, copyTokenizer, writeChatTemplate } from './output/tokenizer';
import { modelRefKey } from './hub/reference';
import {
  checkPositive,
  checkpointsRead,
  DEFAULT_MEMORY,
  openInputs,
  reportInputs,
  reportTensors,
  validateInputOptions,
} from './inputs';
import { PLOT_FILE, reportPicture } from './report/svg';
import { planShardsSliced } from './safetensors/layout';
import { mapSliced, runSliced } from './util/sliced';
import { DEFAULT_WINDOW_BYTES } from './safetensors/window';
import { openInputSources, type InputSources } from './engine/inputSources';
import { checkUnchanged } from './checkpoint/identity';
import { SafetensorsWriter } from './safetensors/writer';
import { OUT_FORMATS, type MergeOptions, type MergeReport, type TensorReport } from './types';
import {
  checkAdapterInputs,
  factorWriter,
  planAdapterOutput,
  type AdapterOutputPlan,
} from './output/adapterMerge';
import { ADAPTER_CONFIG_FILE, adapterConfigText } from './output/peft';
import type { Plan } from './plan/plan';
import type { EngineOptions, EngineResult } from './engine/scheduler';
import { writerStaging } from './safetensors/shardFile';

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
  if (o.outFormat !== undefined && !OUT_FORMATS.includes(o.outFormat))
    throw bad(
      `outFormat must be ${OUT_FORMATS.map((f) => `"${f}"`).join(' or ')}, got ${JSON.stringify(o.outFormat)}`,
    );
  if (o.outFormat === 'peft') {
    // An adapter folder holds no tokenizer: PEFT loads it over the base, with the base's.
    if (o.tokenizerSource !== undefined && o.tokenizerSource !== 'base')
      throw bad(
        'tokenizerSource: an adapter (outFormat "peft") has no tokenizer of its own; it uses the base\'s',
      );
    if (o.chatTemplate !== undefined)
      throw bad('chatTemplate: an adapter (outFormat "peft") has no tokenizer config to write it into');
  }
}

/**
 * An adapter output's two engine runs: the tensors written as factors first, as a Gram pass (their t to
 * the factor writer; no base weight read), then the tensors written whole, as an ordinary merge.
 * Progress counts on across both.
 */
async function runAdapterOutput(
  plan: Plan,
  peft: AdapterOutputPlan,
  engine: EngineOptions,
  writer: SafetensorsWriter,
): Promise<EngineResult> {
  let first = { bytes: 0, tensors: 0 };
  const onProgress = engine.onProgress;
  const factorWrites = factorWriter(peft, writer);
  const factors = await runPlan(
    { ...plan, steps: peft.factorSteps },
    {
      ...engine,
      sink: undefined,
      onLowRankTerms: factorWrites.onTerms,
      onProgress:
        onProgress &&
        ((p) => {
          first = { bytes: p.bytesTotal, tensors: p.tensorsTotal };
          onProgress(p);
        }),
    },
  );
  await factorWrites.settle();
  const whole = await runPlan(
    { ...plan, steps: peft.wholeSteps },
    {
      ...engine,
      onProgress:
        onProgress &&
        ((p) =>
          onProgress({
            ...p,
            bytesDone: first.bytes + p.bytesDone,
            bytesTotal: first.bytes + p.bytesTotal,
            tensorsDone: first.tensors + p.tensorsDone,
            tensorsTotal: first.tensors + p.tensorsTotal,
          })),
    },
  );
  return {
    tensors: [...factors.tensors, ...whole.tensors],
    warnings: [...factors.warnings, ...whole.warnings],
    bytesRead: factors.bytesRead + whole.bytesRead,
    bytesWritten: peft.layout.shards[0]!.size,
    // The two runs one after the other: their times add up.
    profile: {
      seconds: factors.profile.seconds + whole.profile.seconds,
      read: factors.profile.read + whole.profile.read,
      compute: factors.profile.compute + whole.profile.compute,
      write: factors.profile.write + whole.profile.write,
      readWait: factors.profile.readWait + whole.profile.readWait,
      writeWait: factors.profile.writeWait + whole.profile.writeWait,
    },
  };
}

/**
 * The report's tensors of an adapter output: the merged ones as the engine reported them, and those no
 * adapter changes, which the adapter leaves to the base (copy).
 */
function adapterReportTensors(plan: Plan, result: EngineResult): TensorReport[] {
  const merged = new Map(result.tensors.map((t) => [t.name, t]));
  return [
    ...plan.steps.map(
      (s): TensorReport =>
        merged.get(s.name) ?? {
          name: s.name,
          action: 'copy',
          reason: `${s.action === 'copy' ? s.reason : 'unchanged'}: not in the adapter (the base's own)`,
          dtype: s.base.dtype,
          shape: s.base.shape,
        },
    ),
    ...reportTensors(plan, { ...result, tensors: [] }),
  ];
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

/** The fault of a mapped input, if one faulted: it explains whatever failed after it. */
function inputFault(reader: InputSources | undefined): unknown {
  try {
    reader?.check?.();
    return undefined;
  } catch (fault) {
    return fault;
  }
}

/**
 * Merges `models` into `base` with Model Stock and writes the result to `out`, atomically: everything is
 * built in a temporary folder beside `out` and renamed into place at the end; on any failure nothing is
 * left behind and the inputs are untouched. Returns the per-tensor report (also written as
 * model_stock_report.json beside the weights, and drawn as model_stock_report.svg).
 */
export async function mergeModelStock(options: MergeOptions): Promise<MergeReport> {
  // A file-system error that escaped uncoded anywhere (Hub cache, inputs, output) still names its path.
  return merge(options).catch((e: unknown) => {
    throw asIoError(e);
  });
}

async function merge(options: MergeOptions): Promise<MergeReport> {
  const started = process.hrtime.bigint();
  validate(options);
  throwIfCancelled(options.signal, 'the merge');
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

  const overwrite = options.overwrite ?? false;
  const checkOutputs = async (inputs: string[]): Promise<string> => {
    const target = checkOutputPath(options.out, inputs, overwrite);
    if (options.report !== undefined) await checkReportPath(options.report, inputs, target);
    return target;
  };
  const { base, models, modelLabel, plan } = await openInputs(options, {
    record: (m) => ownWarnings.push(m),
    // Outputs we would refuse are refused before any download (and again once Hub IDs are resolved).
    beforeDownload: async (local) => void (await checkOutputs(local)),
  });
  if (tokenizerSource !== 'base') {
    checkTokenizerSource({
      source: models[tokenizerSource]!,
      sourceLabel: `"${options.models[tokenizerSource]}"`,
      base,
    });
  }
  const inputs = checkpointsRead(base, models);
  // Each model as given (folder or file) and every file it has, through links (Hugging Face blobs).
  const target = await checkOutputs(
    inputs.flatMap((c) => [c.path, ...c.files, ...(c.indexFile === undefined ? [] : [c.indexFile])]),
  );
  // --out-format peft: refused before any weight is read unless every fine-tune is an adapter of the base.
  const peft =
    options.outFormat === 'peft'
      ? planAdapterOutput(plan, base, models, checkAdapterInputs(options.base, models, modelLabel))
      : undefined;
  const layout =
    peft?.layout ??
    (await planShardsSliced(
      await runSliced(
        mapSliced(plan.steps, (s) => ({
          name: s.name,
          dtype: s.outDtype,
          shape: s.base.shape,
          byteLength: s.outByteLength,
        })),
      ),
      { shardSize: options.shardSize ?? DEFAULT_SHARD_SIZE },
    ));

  // Cancelled while opening, downloading or planning: nothing has been created yet.
  const cancelled = (): void => throwIfCancelled(options.signal, 'the merge');
  cancelled();
  const backend = createBackend(options.backend ?? 'auto', {
    threads: options.threads,
    onWarning: options.onWarning,
    signal: options.signal,
  });
  let reader: InputSources | undefined;
  let staging: StagingDir | undefined;
  let writer: SafetensorsWriter | undefined;
  let reportCopy: Placement | undefined;
  let committed = false;
  try {
    reader = await openInputSources(
      options.io ?? 'auto',
      inputs.map((c) => ({ files: c.files })),
      { signal: options.signal, queueDepth: options.ioQueueDepth },
    );
    staging = await StagingDir.create(target, { overwrite, onWarning: options.onWarning });
    // The writer's staging blocks come out of the memory budget; the pipeline's buffers get the rest.
    const staged = writerStaging(memory, options.writeMode ?? 'auto');
    writer = await SafetensorsWriter.create(staging.dir, layout, {
      mode: options.writeMode,
      blockBytes: staged.blockBytes,
    });
    const w = writer;
    // Adapter output: tensors written whole go under PEFT's keys; factors through the low-rank hook.
    const keyOf = (name: string): string => peft?.wholeKeys.get(name) ?? name;
    const engine = {
      backend,
      source: reader,
      sink: {
        write: (name: string, offset: number, data: Uint8Array) => w.write(keyOf(name), offset, data),
        blockOffset: (name: string, offset: number) => w.blockOffset(keyOf(name), offset),
      },
      theta,
      // At least half, when the staging's smallest blocks would leave less (a budget of a few MiB).
      memory: Math.max(memory - staged.bytes, Math.floor(memory / 2)),
      window,
      modelLabel,
      onProgress: options.onProgress,
      onWarning: options.onWarning,
      signal: options.signal,
    };
    const result =
      peft === undefined ? await runPlan(plan, engine) : await runAdapterOutput(plan, peft, engine, w);
    // Every input byte has been read: none may have come from a mapping that faulted or a file that changed.
    reader.check?.();
    await checkUnchanged(new Map(inputs.flatMap((c) => [...c.identities])));
    const written = await writer.finish({ fsync });
    writer = undefined;
    cancelled();
    if (peft !== undefined) {
      await writeFileSynced(
        path.join(staging.dir, ADAPTER_CONFIG_FILE),
        adapterConfigText(peft.config),
        fsync,
      );
    } else if (base.path === base.dir) {
      // Only a model folder has extras: beside a single weight file lies whatever else the user keeps there.
      await copyBaseFiles(base.dir, staging.dir, options.outDtype, fsync);
    }
    if (tokenizerSource !== 'base') await copyTokenizer(models[tokenizerSource]!.dir, staging.dir, fsync);
    cancelled();
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
        stateDictKey: options.stateDictKey,
        outFormat: options.outFormat,
      });
    const summary: MergeReport = {
      method: 'model_stock',
      base: options.base,
      models: [...options.models],
      out: options.out,
      ...(peft !== undefined ? { outFormat: 'peft' as const } : {}),
      filterWise,
      theta,
      backend: backend.info(),
      inputs: reportInputs([options.base, ...options.models], inputs, await reader.inputIo()),
      tensors: peft === undefined ? reportTensors(plan, result) : adapterReportTensors(plan, result),
      warnings: [...ownWarnings, ...plan.warnings, ...result.warnings],
      bytesRead: result.bytesRead,
      bytesWritten: result.bytesWritten,
      write: written,
      seconds: Number(process.hrtime.bigint() - started) / 1e9,
      profile: result.profile,
    };
    // Drawn after the weights, committed with them; a fault in drawing costs the picture, not the merge.
    const failures: string[] = [];
    const picture = await reportPicture(summary, (w) => failures.push(w));
    for (const w of failures) options.onWarning?.(w);
    const report: MergeReport = { ...summary, warnings: [...summary.warnings, ...failures] };
    await writeReportJson(path.join(staging.dir, REPORT_FILE), report, { fsync, flags: 'wx' });
    await writeFileSynced(path.join(staging.dir, CONFIG_FILE), configYaml, fsync);
    if (picture !== undefined) await writeFileSynced(path.join(staging.dir, PLOT_FILE), picture, fsync);
    await writeFileSynced(
      path.join(staging.dir, 'README.md'),
      await modelCardSliced(report, configYaml, picture !== undefined ? PLOT_FILE : undefined),
      fsync,
    );
    cancelled();
    if (options.report !== undefined) {
      const write = (file: string) => writeReportJson(file, report, { fsync: false, flags: 'wx' });
      reportCopy = await placeReport(options.report, write, fsync);
    }
    for (const w of await staging.commit(fsync)) options.onWarning?.(w);
    committed = true;
    await reportCopy
      ?.finish()
      .catch((e: unknown) =>
        options.onWarning?.(
          `the earlier report at ${options.report} could not be deleted: ${(e as Error).message}`,
        ),
      );
    return report;
  } catch (e) {
    await writer?.abort();
    if (!committed) {
      await reportCopy?.undo().catch(() => undefined);
      await staging?.discard();
    }
    if (committed) throw e;
    // A fault on a mapped input explains whatever failed after it; a fired signal, everything.
    throw asCancelled(inputFault(reader) ?? e, options.signal, 'the merge');
  } finally {
    await reader?.close();
    await backend.dispose();
  }
}
