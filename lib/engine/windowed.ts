import { floatSize, type FloatDType } from '../dtype';
import type { MergeStep } from '../plan/plan';
import type { TensorReport } from '../types';
import type { TensorSession } from './backend';
import { closeSession, inputsOf, openSession, type StepContext } from './context';
import { checkFinite, type InputScan } from './finite';
import { isMapped, type Task, type TaskRead } from './pipeline';
import { ratios } from './report';

/** Bytes per read when an input is scanned again for NaN/Inf (only after the Gram pass found one). */
const SCAN_BYTES = 16 << 20;

/**
 * A merge step too large to hold at once: two passes over windows of `w` elements, each a task — the
 * Gram pass, a task that turns the Gram matrix into t, then (when writing) the interpolation pass,
 * each window read again unless the backend still holds it from the Gram pass. The interpolation
 * windows' reads wait for t (whether the backend holds a window is known only then); within each pass
 * the pipeline reads the next windows while one computes.
 */
export function* windowedTasks(
  step: MergeStep,
  index: number,
  w: number,
  ctx: StepContext,
  last: boolean,
): Generator<Task> {
  const { sink, theta, modelLabel, source } = ctx.options;
  const tensors = inputsOf(step);
  const sizes = tensors.map((t) => floatSize(t.dtype as FloatDType));
  const outSize = floatSize(step.outDtype);
  const rangesOf = (first: number, count: number): TaskRead[] =>
    tensors.map((tensor, i) => ({ tensor, start: first * sizes[i]!, length: count * sizes[i]! }));
  const windows: [number, number][] = [];
  for (let first = 0; first < step.mergedNumel; first += w)
    windows.push([first, Math.min(w, step.mergedNumel - first)]);

  let session: TensorSession | undefined;
  const open = (): TensorSession => (session ??= openSession(step, ctx));
  let t: Float64Array | undefined;
  let gramDone!: () => void;
  const ratiosKnown = new Promise<void>((resolve) => (gramDone = resolve));

  for (const [first, count] of windows) {
    yield {
      step: index,
      name: step.name,
      reads: () => rangesOf(first, count),
      outBytes: 0,
      last: false,
      run: async (inputs) => {
        await open().gram({ firstElement: first, count, inputs });
        return undefined;
      },
    };
  }

  /** Every input again, in chunks of ≤ SCAN_BYTES: to name the model whose NaN/Inf the Gram pass met. */
  const scan: InputScan = async (visit) => {
    for (let i = 0; i < tensors.length; i++) {
      const tensor = tensors[i]!;
      const per = Math.max(1, Math.floor(SCAN_BYTES / sizes[i]!));
      for (let first = 0; first < step.mergedNumel; first += per) {
        const count = Math.min(per, step.mergedNumel - first);
        const start = first * sizes[i]!;
        const length = count * sizes[i]!;
        if (isMapped(source, tensor)) {
          await visit(i, source.view!(tensor, start, length), first);
          source.release?.(tensor, start, length);
        } else {
          const bytes = new Uint8Array(length);
          await source.readInto(tensor, start, bytes);
          await visit(i, bytes, first);
        }
      }
    }
  };

  const writing = sink !== undefined && windows.length > 0;
  yield {
    step: index,
    name: step.name,
    reads: () => [],
    outBytes: 0,
    last: last && !writing,
    run: async () => {
      const s = open();
      const gram = await s.gramResult();
      let report: TensorReport;
      try {
        await checkFinite(step, gram, modelLabel, scan);
        ({ t, report } = ratios(step, gram, theta, ctx.warn, ctx.negative));
      } finally {
        if (!writing) await closeSession(s, ctx);
      }
      ctx.report(report);
      gramDone();
      return undefined;
    },
  };
  if (!writing) return;

  for (let k = 0; k < windows.length; k++) {
    const [first, count] = windows[k]!;
    const final = k === windows.length - 1;
    yield {
      step: index,
      name: step.name,
      after: ratiosKnown,
      reads: () => (session!.holds(first, count) ? [] : rangesOf(first, count)),
      outBytes: count * outSize,
      outAt: { name: step.name, offset: first * outSize },
      last: last && final,
      run: async (inputs, out) => {
        const s = session!;
        await s.interpolate(
          { firstElement: first, count, inputs: inputs.length > 0 ? inputs : undefined },
          t!,
          out!,
        );
        if (final) await closeSession(s, ctx);
        return { name: step.name, offset: first * outSize, data: out! };
      },
    };
  }
}
