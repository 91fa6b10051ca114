import { floatSize, type FloatDType } from '../dtype';
import type { MergeStep } from '../plan/plan';
import type { TensorReport } from '../types';
import type { Arena } from './arena';
import { acquire, inputsOf, settleAll, specOf, type StepContext } from './context';
import { copyBaseTail } from './copy';
import { checkFinite } from './finite';
import { ratios } from './report';

/** Bytes of per-input alignment slack an arena needs for one window of every input and the output. */
const slackFor = (buffers: number): number => 64 * buffers;

/**
 * A tensor too large to hold at once: two passes over windows of `arena` (Gram, then interpolation),
 * each window read once per pass — unless the backend still holds it from the Gram pass.
 */
export async function mergeWindowed(
  step: MergeStep,
  arena: Arena,
  ctx: StepContext,
  progress: (tensor: string) => void,
): Promise<TensorReport> {
  const { backend, source, sink, theta, modelLabel } = ctx.options;
  const tensors = inputsOf(step);
  const sizes = tensors.map((t) => floatSize(t.dtype as FloatDType));
  const outSize = floatSize(step.outDtype);
  const perElement = sizes.reduce((a, b) => a + b, 0) + outSize;
  // Elements per window: what the arena and the backend hold, and what one read may span.
  const room = Math.min(arena.capacity, backend.capacity().sessionBytes) - slackFor(sizes.length + 1);
  const w = Math.max(
    1,
    Math.min(Math.floor(room / perElement), Math.floor(ctx.options.window / Math.max(...sizes, outSize))),
  );

  /** The inputs' bytes of elements [first, first + count), and a release for when they are used. */
  const read = async (first: number, count: number): Promise<Uint8Array[]> => {
    ctx.checkCancelled();
    arena.reset();
    const views = await settleAll(
      tensors.map((t, i) => acquire(source, arena, t, first * sizes[i]!, count * sizes[i]!)),
    );
    ctx.onRead(views.reduce((a, v) => a + v.byteLength, 0));
    return views;
  };
  const release = (first: number, views: readonly Uint8Array[]): void =>
    tensors.forEach((t, i) => source.release?.(t, first * sizes[i]!, views[i]!.byteLength));

  const session = backend.openTensor(specOf(step));
  let t: Float64Array;
  let report: TensorReport;
  try {
    for (let first = 0; first < step.mergedNumel; first += w) {
      const count = Math.min(w, step.mergedNumel - first);
      const inputs = await read(first, count);
      await session.gram({ firstElement: first, count, inputs });
      release(first, inputs);
      progress(step.name);
    }
    const gram = await session.gramResult();
    await checkFinite(step, gram, modelLabel, async (visit) => {
      for (let first = 0; first < step.mergedNumel; first += w) {
        const count = Math.min(w, step.mergedNumel - first);
        for (let i = 0; i < tensors.length; i++) {
          ctx.checkCancelled();
          arena.reset();
          const t = tensors[i]!;
          const view = await acquire(source, arena, t, first * sizes[i]!, count * sizes[i]!);
          await visit(i, view, first);
          source.release?.(t, first * sizes[i]!, view.byteLength);
        }
      }
    });
    ({ t, report } = ratios(step, gram, theta, ctx.warn, ctx.negative));
    if (sink === undefined) return report;
    for (let first = 0; first < step.mergedNumel; first += w) {
      const count = Math.min(w, step.mergedNumel - first);
      ctx.checkCancelled();
      const held = session.holds(first, count);
      arena.reset();
      const inputs = held ? undefined : await read(first, count);
      const out = arena.take(count * outSize);
      await session.interpolate({ firstElement: first, count, inputs }, t, out);
      if (inputs !== undefined) release(first, inputs);
      await sink.write(step.name, first * outSize, out);
      progress(step.name);
    }
  } finally {
    await session.close();
  }
  await copyBaseTail(step, arena, ctx, progress);
  return report;
}
