/**
 * How the memory budget is shared and how large the pipeline's pieces are. Two rings: inputs are read
 * into one (none when every input is mapped), outputs computed into the other (none for the Gram pass
 * alone). The budget is split between them in proportion to what the plan reads into buffers and
 * writes, and each is capped at twice the largest step's need: twice, so that one step can be read (or
 * written) while the one before it computes; never more, since that would only raise the resident
 * memory, not the speed.
 *
 * A merge step whose ring bytes fit its rings (and the backend, and one read's window) is a whole
 * task; a larger one is cut in windows of at most half of each ring, so the next window is read while
 * one computes. Copies go in chunks of the same size.
 */
import { floatSize, type FloatDType } from '../dtype';
import type { MergeStep, PlanStep } from '../plan/plan';
import type { TensorInfo } from '../checkpoint/types';
import { inputsOf, mergedBytes, mergedOutBytes, type EngineOptions } from './context';
import { isMapped } from './pipeline';
import { alignUp } from './ring';
import { factorTensors, storedShape } from './lowRankStep';

/** Largest ring: Node 20 aborts the process on an external ArrayBuffer of 4 GiB or more. */
const MAX_RING = 2 ** 32 - 2 ** 16;
/** Alignment of a slice and of every region in it when the source has no layout of its own. */
const SLICE_ALIGN = 64;
/** Smallest ring: tiny budgets (tests, `--memory 1`) still move a few elements per window. */
const MIN_RING = 1024;
/** Conversions decode through a float64 scratch of a chunk: 4 Mi elements keep that at 32 MiB. */
const MAX_CONVERT_ELEMENTS = 1 << 22;

export interface Sizing {
  /** Ring capacities in bytes (0: that ring is not used). */
  readonly inRing: number;
  readonly outRing: number;
  /** Whether a merge step is one task (else windowed). */
  whole(step: MergeStep): boolean;
  /** Elements per window of a windowed step. */
  windowElements(step: MergeStep): number;
  /** Bytes half the input ring holds for one task reading each of `tensors` once, after their slack. */
  readRoom(tensors: readonly TensorInfo[]): number;
  /** Bytes half the output ring holds for one task's output, after its block slack. */
  readonly writeRoom: number;
  /** Bytes per chunk of a copy of `from` written as read (a mapped input is not bound by the ring). */
  copyBytes(from: TensorInfo): number;
  /** Elements per chunk of a copy of `from` converted to `outDtype`. */
  convertElements(from: TensorInfo, outDtype: FloatDType): number;
}

export function sizePipeline(steps: readonly PlanStep[], opts: EngineOptions): Sizing {
  const { source, window } = opts;
  const gramOnly = opts.sink === undefined;
  const sessionBytes = opts.backend.capacity().sessionBytes;

  /** Ring bytes a read of `length` bytes takes at most: its region, its alignment, the slice's. */
  const ringBytes = (t: TensorInfo, start: number, length: number): number => {
    if (isMapped(source, t)) return 0;
    const l = source.layout?.(t, start, length);
    return l === undefined ? alignUp(length, SLICE_ALIGN) : alignUp(l.bytes, l.alignment) + l.alignment;
  };
  /** Per-read slack of a window whatever its head: two blocks for a layout, the slice alignment else. */
  const slack = (t: TensorInfo): number => {
    if (isMapped(source, t)) return 0;
    const l = source.layout?.(t, 0, 1);
    return l === undefined ? SLICE_ALIGN : 3 * l.alignment;
  };
  /** The least a window reads of one input into a ring: a block's worth for a layout (else slack dominates). */
  const least = (t: TensorInfo): number =>
    isMapped(source, t) ? 0 : (source.layout?.(t, 0, 1)?.alignment ?? floatSize(t.dtype as FloatDType));
  /** A task's ring bytes: its reads' and the slice's alignment — none at all when every read is mapped. */
  const slice = (bytes: number): number => (bytes === 0 ? 0 : bytes + SLICE_ALIGN);
  const stepIn = (s: MergeStep): number =>
    slice(inputsOf(s).reduce((a, t) => a + ringBytes(t, 0, mergedBytes(s, t)), 0));
  /** An output is laid out like the file: up to a block before it, and its slice's alignment. */
  const OUT_SLACK = 2 * 4096;
  const stepOut = (s: MergeStep): number => (gramOnly ? 0 : mergedOutBytes(s) + OUT_SLACK);

  let totalIn = 0;
  let totalOut = 0;
  let maxIn = 0;
  let maxOut = 0;
  let minIn = 0;
  let minOut = 0;
  for (const s of steps) {
    if (s.action === 'copy') {
      if (gramOnly) continue;
      const whole = ringBytes(s.base, 0, s.base.byteLength);
      // Copied in one chunk when half the ring holds it with the chunk's slack (copyRoom).
      const b = whole === 0 ? 0 : whole + slack(s.base) + 2 * SLICE_ALIGN;
      totalIn += b;
      maxIn = Math.max(maxIn, b);
      minIn = Math.max(minIn, 2 * (slack(s.base) + least(s.base)));
      if (s.outDtype !== s.base.dtype) {
        totalOut += s.outByteLength;
        maxOut = Math.max(maxOut, s.outByteLength + OUT_SLACK);
        minOut = Math.max(minOut, 2 * (OUT_SLACK + 8));
      }
      continue;
    }
    if (s.action === 'low-rank') {
      // The factors are read by one task (whole); the base and own weights in row windows.
      const { cols } = storedShape(s);
      const rows = s.mergedNumel / cols;
      const factorsIn = slice(factorTensors(s).reduce((a, t) => a + ringBytes(t, 0, t.byteLength), 0));
      const windowed = [s.base, ...s.inputs.filter((x) => x.tensor !== s.base).map((x) => x.tensor)];
      const rowsIn = slice(
        windowed.reduce(
          (a, t) => a + slack(t) + ringBytes(t, 0, rows * cols * floatSize(t.dtype as FloatDType)),
          0,
        ),
      );
      const o = gramOnly ? 0 : s.mergedNumel * floatSize(s.outDtype) + OUT_SLACK;
      totalIn += factorsIn + (gramOnly && s.factorsOnly ? 0 : rowsIn);
      totalOut += o;
      maxIn = Math.max(maxIn, factorsIn, gramOnly && s.factorsOnly ? 0 : rowsIn);
      maxOut = Math.max(maxOut, o);
      // Half of the ring holds one row of every windowed input; the whole ring holds the factors.
      const row = slice(
        windowed.reduce(
          (a, t) => a + slack(t) + (isMapped(source, t) ? 0 : cols * floatSize(t.dtype as FloatDType)),
          0,
        ),
      );
      minIn = Math.max(minIn, factorsIn, 2 * row);
      if (!gramOnly) minOut = Math.max(minOut, 2 * (OUT_SLACK + cols * floatSize(s.outDtype)));
      continue;
    }
    const i = stepIn(s);
    const o = stepOut(s);
    totalIn += i;
    totalOut += o;
    maxIn = Math.max(maxIn, i);
    maxOut = Math.max(maxOut, o);
    // However small the budget, half of each ring holds a window of more than its slack.
    const tensors = inputsOf(s);
    minIn = Math.max(minIn, 2 * slice(tensors.reduce((a, t) => a + slack(t) + least(t), 0)));
    if (!gramOnly) minOut = Math.max(minOut, 2 * (OUT_SLACK + 4096));
  }
  const share = totalIn + totalOut === 0 ? 0 : totalIn / (totalIn + totalOut);
  const ring = (budget: number, max: number, min: number): number =>
    max === 0 ? 0 : Math.min(MAX_RING, Math.max(min, MIN_RING, Math.min(Math.floor(budget), 2 * max)));
  const inRing = ring(opts.memory * share, maxIn, minIn);
  // An input ring raised to its minimum does not starve the output ring of its share.
  const outRing = ring(Math.max(opts.memory - inRing, opts.memory * (1 - share)), maxOut, minOut);

  const whole = (s: MergeStep): boolean => {
    const tensors = inputsOf(s);
    const bytes = tensors.reduce((a, t) => a + mergedBytes(s, t), mergedOutBytes(s));
    return (
      stepIn(s) <= Math.max(inRing, SLICE_ALIGN) &&
      stepOut(s) <= outRing &&
      bytes <= sessionBytes &&
      tensors.every((t) => mergedBytes(s, t) <= window)
    );
  };

  const readRoom = (tensors: readonly TensorInfo[]): number =>
    inRing / 2 - tensors.reduce((a, t) => a + slack(t), SLICE_ALIGN);
  const writeRoom = outRing / 2 - OUT_SLACK;

  const windowElements = (s: MergeStep): number => {
    const tensors = inputsOf(s);
    const sizes = tensors.map((t) => floatSize(t.dtype as FloatDType));
    const outSize = floatSize(s.outDtype);
    const limits: number[] = [Math.floor(window / Math.max(...sizes, outSize))];
    const ringSizes = tensors.reduce((a, t, i) => a + (isMapped(source, t) ? 0 : sizes[i]!), 0);
    if (ringSizes > 0) limits.push(Math.floor(readRoom(tensors) / ringSizes));
    if (!gramOnly) limits.push(Math.floor(writeRoom / outSize));
    if (Number.isFinite(sessionBytes)) {
      const perElement = sizes.reduce((a, b) => a + b, 0) + outSize;
      limits.push(Math.floor((sessionBytes - 64 * (sizes.length + 1)) / perElement));
    }
    return Math.max(1, Math.min(...limits));
  };

  /** Bytes a copy's chunk may read of `from`: a window of a mapping, else what half the input ring holds. */
  const copyRoom = (from: TensorInfo): number =>
    isMapped(source, from) ? window : Math.min(window, readRoom([from]) - SLICE_ALIGN);
  return {
    inRing,
    outRing,
    whole,
    windowElements,
    readRoom,
    writeRoom,
    copyBytes: (from) => Math.max(1, Math.floor(copyRoom(from))),
    convertElements: (from, outDtype) => {
      const inSize = floatSize(from.dtype as FloatDType);
      const outSize = floatSize(outDtype);
      const byIn = Math.floor(copyRoom(from) / inSize);
      const byOut = Math.floor(writeRoom / outSize);
      return Math.max(1, Math.min(byIn, byOut, MAX_CONVERT_ELEMENTS));
    },
  };
}
