import { floatSize, type FloatDType } from '../dtype';
import { decodeFloats, encodeFloats } from '../math/codec';
import type { CopyStep } from '../plan/plan';
import type { Arena } from './arena';
import { acquire, type StepContext } from './context';

/**
 * A tensor copied from the base: byte for byte, or re-encoded (round-to-nearest-even, NaN and Inf kept)
 * when --out-dtype asks for another float dtype. Rare and small, so the conversion is plain TypeScript.
 * Returns the bytes written.
 */
export async function copyTensor(
  step: CopyStep,
  arena: Arena,
  ctx: StepContext,
  progress: (tensor: string) => void,
): Promise<number> {
  const { source, sink } = ctx.options;
  const from = step.base.dtype;
  const convert = step.outDtype !== from;
  const inSize = convert ? floatSize(from as FloatDType) : 1;
  const outSize = convert ? floatSize(step.outDtype as FloatDType) : 0;
  const perElement = inSize + outSize;
  // Elements per chunk (bytes for a plain copy): what the arena holds and what one read may span.
  // A conversion also decodes through a float64 scratch of the chunk: 4Mi elements keep that at 32 MiB.
  const fits = Math.floor(Math.min(arena.capacity - 128, ctx.options.window) / perElement);
  const chunk = Math.max(1, convert ? Math.min(fits, 1 << 22) : fits);
  const count = step.base.byteLength / inSize;
  for (let first = 0; first < count; first += chunk) {
    const n = Math.min(chunk, count - first);
    arena.reset();
    const view = await acquire(source, arena, step.base, first * inSize, n * inSize);
    ctx.onRead(view.byteLength);
    const bytes = convert
      ? encodeFloats(
          decodeFloats(view, from as FloatDType),
          step.outDtype as FloatDType,
          arena.take(n * outSize),
        )
      : view;
    await sink.write(step.name, first * (convert ? outSize : 1), bytes);
    source.release?.(step.base, first * inSize, view.byteLength);
    progress(step.name);
  }
  return step.outByteLength;
}
