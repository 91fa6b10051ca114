import type { MergeStep } from '../plan/plan';
import type { TensorReport } from '../types';
import { specOf, type StepContext } from './context';
import { checkFinite } from './finite';
import { ratios } from './report';

/**
 * One tensor whose inputs and output fit in memory at once: one session, one window per pass. `views`
 * hold the base's and the fine-tunes' merged bytes; `out` receives the merged bytes (undefined: the Gram
 * pass only).
 */
export async function mergeWhole(
  step: MergeStep,
  views: readonly Uint8Array[],
  out: Uint8Array | undefined,
  ctx: StepContext,
): Promise<TensorReport> {
  const { backend, theta, modelLabel } = ctx.options;
  const session = backend.openTensor(specOf(step));
  try {
    const window = { firstElement: 0, count: step.mergedNumel, inputs: views };
    await session.gram(window);
    const gram = await session.gramResult();
    await checkFinite(step, gram, modelLabel, async (visit) => {
      for (let i = 0; i < views.length; i++) await visit(i, views[i]!, 0);
    });
    const { t, report } = ratios(step, gram, theta, ctx.warn, ctx.negative);
    if (out !== undefined) await session.interpolate(window, t, out);
    return report;
  } finally {
    await session.close();
  }
}
