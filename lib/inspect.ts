import { asCancelled, asIoError, throwIfCancelled } from './errors';
import { openInputSources, type InputSources } from './engine/inputSources';
import { createBackend } from './engine/registry';
import { runPlan } from './engine/scheduler';
import {
  DEFAULT_MEMORY,
  checkpointsRead,
  openInputs,
  reportInputs,
  reportTensors,
  validateInputOptions,
} from './inputs';
import { DEFAULT_WINDOW_BYTES } from './safetensors/window';
import { checkUnchanged } from './checkpoint/identity';
import type { InspectOptions, InspectReport } from './types';

/**
 * A merge's geometry without the merge: the Gram pass only — every merged input read once, no weights
 * written — giving per tensor the pairwise cosines, c and t a merge with the same options would use
 * (the same plan, backend and numbers; `merge` reports them identically). Judge whether fine-tunes are
 * compatible before spending the disk and time of a merge.
 */
export async function inspectModelStock(options: InspectOptions): Promise<InspectReport> {
  return inspect(options).catch((e: unknown) => {
    throw asIoError(e);
  });
}

async function inspect(options: InspectOptions): Promise<InspectReport> {
  const started = process.hrtime.bigint();
  validateInputOptions(options);
  throwIfCancelled(options.signal, 'the inspection');
  const filterWise = options.filterWise ?? false;
  const theta = options.theta ?? 'mean-cos';
  const hubWarnings: string[] = [];
  const { base, models, modelLabel, plan } = await openInputs(options, {
    record: (m) => hubWarnings.push(m),
  });
  const backend = createBackend(options.backend ?? 'auto', {
    threads: options.threads,
    onWarning: options.onWarning,
    signal: options.signal,
  });
  let source: InputSources | undefined;
  try {
    source = await openInputSources(
      options.io ?? 'auto',
      checkpointsRead(base, models).map((c) => ({ files: c.files })),
      { signal: options.signal, queueDepth: options.ioQueueDepth },
    );
    const result = await runPlan(plan, {
      backend,
      source,
      sink: undefined,
      theta,
      memory: options.memory ?? DEFAULT_MEMORY,
      window: options.window ?? DEFAULT_WINDOW_BYTES,
      modelLabel,
      onProgress: options.onProgress,
      onWarning: options.onWarning,
      signal: options.signal,
    });
    // Numbers from a mapping that faulted, or from a file that changed meanwhile, would describe no model.
    source.check?.();
    await checkUnchanged(new Map(checkpointsRead(base, models).flatMap((c) => [...c.identities])));
    return {
      method: 'model_stock',
      base: options.base,
      models: [...options.models],
      filterWise,
      theta,
      backend: backend.info(),
      inputs: reportInputs([options.base, ...options.models], [base, ...models], await source.inputIo()),
      tensors: reportTensors(plan, result),
      warnings: [...hubWarnings, ...plan.warnings, ...result.warnings],
      bytesRead: result.bytesRead,
      seconds: Number(process.hrtime.bigint() - started) / 1e9,
      profile: result.profile,
    };
  } catch (e) {
    throw asCancelled(e, options.signal, 'the inspection');
  } finally {
    await source?.close();
    await backend.dispose();
  }
}
