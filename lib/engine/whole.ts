import type { MergeStep } from '../plan/plan';
import {
  closeSession,
  inputsOf,
  mergedBytes,
  mergedOutBytes,
  openSession,
  type StepContext,
} from './context';
import { checkFinite } from './finite';
import type { Task } from './pipeline';
import { ratios } from './report';

/**
 * A merge step whose inputs and output fit the pipeline's rings at once: one task, one session, one
 * window per pass. The task reads every input's merged bytes, runs the Gram pass, turns the Gram
 * matrix into t and (when writing) interpolates into its output.
 */
export function wholeTask(step: MergeStep, index: number, ctx: StepContext, last: boolean): Task {
  const { sink, theta, modelLabel } = ctx.options;
  const tensors = inputsOf(step);
  return {
    step: index,
    name: step.name,
    reads: () => tensors.map((tensor) => ({ tensor, start: 0, length: mergedBytes(step, tensor) })),
    outBytes: sink === undefined ? 0 : mergedOutBytes(step),
    outAt: { name: step.name, offset: 0 },
    last,
    run: async (views, out) => {
      const session = openSession(step, ctx);
      try {
        const window = { firstElement: 0, count: step.mergedNumel, inputs: views };
        await session.gram(window);
        const gram = await session.gramResult();
        await checkFinite(step, gram, modelLabel, async (visit) => {
          for (let i = 0; i < views.length; i++) await visit(i, views[i]!, 0);
        });
        const { t, report } = ratios(step, gram, theta, ctx.warn, ctx.negative);
        ctx.report(report);
        if (out === undefined) return undefined;
        await session.interpolate(window, t, out);
        return { name: step.name, offset: 0, data: out };
      } finally {
        await closeSession(session, ctx);
      }
    },
  };
}
