import { floatSize, type FloatDType } from '../dtype';
import {
  decodeBf16Words,
  decodeF16Values,
  encodeBf16FromF64,
  encodeF16FromF64,
  type FloatArray,
} from '../math/codec';
import {
  gramSize,
  type Backend,
  type BackendInfo,
  type GramJob,
  type InputWindow,
  type InterpolateJob,
  type WindowJob,
} from './backend';

/**
 * The pure-TypeScript backend: the reference-order float64 kernels behind the Backend seam, and the
 * baseline the native engine is measured against.
 *
 * Sums run element by element in index order, each Gram accumulator loaded from `gram` and stored back
 * per unit segment, so splitting a tensor into windows anywhere gives bit-identical results to one
 * window and to referenceGram. Inputs are decoded CHUNK elements at a time into reused scratch
 * (float32 when every input fits it exactly, float64 as soon as one input is F64, so each kernel sees
 * one array type per call).
 */

/** Elements decoded per step: N+2 scratch arrays of this many elements stay in L2. */
const CHUNK = 16384;
/** Input bytes processed between yields to the event loop. */
const YIELD_BYTES = 4 << 20;

// ---------------------------------------------------------------------------------------------------
// Kernels on decoded arrays. `base`, `models[i]` and `out` hold elements origin … origin+count−1 of the
// tensor at indices 0 … count−1; units are unitLength elements of the tensor, counted from 0.

/** gram[u·P + gramIndex(i, j, N)] += Σ d_i·d_j over the elements, in float64. */
export function accumulateGram(
  base: FloatArray,
  models: readonly FloatArray[],
  count: number,
  origin: number,
  unitLength: number,
  gram: Float64Array,
): void {
  const n = models.length;
  const p = gramSize(n);
  let k = 0;
  while (k < count) {
    const u = Math.floor((origin + k) / unitLength);
    const end = Math.min(count, (u + 1) * unitLength - origin);
    if (n === 2) gram2(base, models[0]!, models[1]!, k, end, gram, u * p);
    else if (n === 3) gram3(base, models[0]!, models[1]!, models[2]!, k, end, gram, u * p);
    else gramN(base, models, k, end, gram, u * p);
    k = end;
  }
}

function gram2(
  b: FloatArray,
  a0: FloatArray,
  a1: FloatArray,
  from: number,
  to: number,
  g: Float64Array,
  o: number,
) {
  let g00 = g[o]!;
  let g01 = g[o + 1]!;
  let g11 = g[o + 2]!;
  for (let k = from; k < to; k++) {
    const w0 = b[k]!;
    const d0 = a0[k]! - w0;
    const d1 = a1[k]! - w0;
    g00 += d0 * d0;
    g01 += d0 * d1;
    g11 += d1 * d1;
  }
  g[o] = g00;
  g[o + 1] = g01;
  g[o + 2] = g11;
}

function gram3(
  b: FloatArray,
  a0: FloatArray,
  a1: FloatArray,
  a2: FloatArray,
  from: number,
  to: number,
  g: Float64Array,
  o: number,
) {
  let g00 = g[o]!;
  let g01 = g[o + 1]!;
  let g02 = g[o + 2]!;
  let g11 = g[o + 3]!;
  let g12 = g[o + 4]!;
  let g22 = g[o + 5]!;
  for (let k = from; k < to; k++) {
    const w0 = b[k]!;
    const d0 = a0[k]! - w0;
    const d1 = a1[k]! - w0;
    const d2 = a2[k]! - w0;
    g00 += d0 * d0;
    g01 += d0 * d1;
    g02 += d0 * d2;
    g11 += d1 * d1;
    g12 += d1 * d2;
    g22 += d2 * d2;
  }
  g[o] = g00;
  g[o + 1] = g01;
  g[o + 2] = g02;
  g[o + 3] = g11;
  g[o + 4] = g12;
  g[o + 5] = g22;
}

/** Task vectors for N ≥ 4, BLOCK elements at a time; module scope is safe: kernels never await. */
const BLOCK = 2048;
const taskVectors: Float64Array[] = [];

function gramN(
  b: FloatArray,
  models: readonly FloatArray[],
  from: number,
  to: number,
  g: Float64Array,
  o: number,
) {
  const n = models.length;
  while (taskVectors.length < n) taskVectors.push(new Float64Array(BLOCK));
  for (let start = from; start < to; start += BLOCK) {
    const len = Math.min(BLOCK, to - start);
    for (let i = 0; i < n; i++) {
      const a = models[i]!;
      const d = taskVectors[i]!;
      for (let k = 0; k < len; k++) d[k] = a[start + k]! - b[start + k]!;
    }
    let idx = o;
    for (let i = 0; i < n; i++) {
      const di = taskVectors[i]!;
      for (let j = i; j < n; j++) {
        const dj = taskVectors[j]!;
        let s = g[idx]!;
        for (let k = 0; k < len; k++) s += di[k]! * dj[k]!;
        g[idx++] = s;
      }
    }
  }
}

/** out[k] = w0 + t[u]·(avg − w0), avg = (Σ w_i)/N summed in model order, in float64; t = 0 copies w0. */
export function interpolateUnits(
  base: FloatArray,
  models: readonly FloatArray[],
  count: number,
  origin: number,
  unitLength: number,
  t: Float64Array,
  out: FloatArray,
): void {
  const n = models.length;
  let k = 0;
  while (k < count) {
    const u = Math.floor((origin + k) / unitLength);
    const end = Math.min(count, (u + 1) * unitLength - origin);
    const tu = t[u]!;
    if (tu === 0) copyBase(base, k, end, out);
    else if (n === 2) interp2(base, models[0]!, models[1]!, k, end, tu, out);
    else if (n === 3) interp3(base, models[0]!, models[1]!, models[2]!, k, end, tu, out);
    else interpN(base, models, k, end, tu, out);
    k = end;
  }
}

function copyBase(b: FloatArray, from: number, to: number, out: FloatArray) {
  for (let k = from; k < to; k++) out[k] = b[k]!;
}

function interp2(
  b: FloatArray,
  a0: FloatArray,
  a1: FloatArray,
  from: number,
  to: number,
  t: number,
  out: FloatArray,
) {
  for (let k = from; k < to; k++) {
    const w0 = b[k]!;
    out[k] = w0 + t * ((a0[k]! + a1[k]!) / 2 - w0);
  }
}

function interp3(
  b: FloatArray,
  a0: FloatArray,
  a1: FloatArray,
  a2: FloatArray,
  from: number,
  to: number,
  t: number,
  out: FloatArray,
) {
  for (let k = from; k < to; k++) {
    const w0 = b[k]!;
    out[k] = w0 + t * ((a0[k]! + a1[k]! + a2[k]!) / 3 - w0);
  }
}

function interpN(
  b: FloatArray,
  models: readonly FloatArray[],
  from: number,
  to: number,
  t: number,
  out: FloatArray,
) {
  const n = models.length;
  const first = models[0]!;
  for (let k = from; k < to; k++) {
    let s = first[k]!;
    for (let i = 1; i < n; i++) s += models[i]![k]!;
    const w0 = b[k]!;
    out[k] = w0 + t * (s / n - w0);
  }
}

// ---------------------------------------------------------------------------------------------------
// Decoding windows chunk by chunk into reused scratch.

/** Scratch for one job at a time; the backend pools them so concurrent jobs never share one. */
class Scratch {
  private readonly f32: Float32Array[] = [];
  private readonly f32Words: Uint32Array[] = [];
  private readonly f64: Float64Array[] = [];
  private readonly copies: Uint8Array[] = [];
  /** Results before encoding to F16/BF16, or before copying to an unaligned output. */
  readonly result = new Float64Array(CHUNK);
  readonly resultWords = new Uint32Array(this.result.buffer);
  readonly outBytes = new Uint8Array(CHUNK * 8);

  private slot(i: number): void {
    while (this.f32.length <= i) {
      const f = new Float32Array(CHUNK);
      this.f32.push(f);
      this.f32Words.push(new Uint32Array(f.buffer));
      this.f64.push(new Float64Array(CHUNK));
      this.copies.push(new Uint8Array(CHUNK * 8));
    }
  }

  /** Elements start … start+n−1 of `win` as numbers, at indices 0 … n−1 of the returned array. */
  decode(win: InputWindow, start: number, n: number, wide: boolean, i: number): FloatArray {
    this.slot(i);
    const size = floatSize(win.dtype);
    let bytes = win.bytes.subarray(start * size, (start + n) * size);
    if (bytes.byteOffset % size !== 0) {
      const copy = this.copies[i]!;
      copy.set(bytes);
      bytes = copy;
    }
    switch (win.dtype) {
      case 'F64':
        return new Float64Array(bytes.buffer, bytes.byteOffset, n);
      case 'F32': {
        const view = new Float32Array(bytes.buffer, bytes.byteOffset, n);
        if (!wide) return view;
        const f64 = this.f64[i]!;
        f64.set(view);
        return f64;
      }
      case 'BF16': {
        const src = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
        decodeBf16Words(src, 0, n, this.f32Words[i]!, 0);
        const f32 = this.f32[i]!;
        if (!wide) return f32;
        const f64 = this.f64[i]!;
        f64.set(n === CHUNK ? f32 : f32.subarray(0, n));
        return f64;
      }
      case 'F16': {
        const dst = wide ? this.f64[i]! : this.f32[i]!;
        decodeF16Values(new Uint16Array(bytes.buffer, bytes.byteOffset, n), 0, n, dst, 0);
        return dst;
      }
    }
  }
}

function isWide(job: WindowJob): boolean {
  return job.base.dtype === 'F64' || job.models.some((m) => m.dtype === 'F64');
}

function checkJob(job: WindowJob, pass: string): number {
  const { count, firstElement, unitLength, models } = job;
  if (models.length < 2)
    throw new RangeError(`${pass}: need at least 2 fine-tuned inputs, got ${models.length}`);
  if (!Number.isSafeInteger(count) || count < 0) throw new RangeError(`${pass}: bad count ${count}`);
  if (!Number.isSafeInteger(firstElement) || firstElement < 0) {
    throw new RangeError(`${pass}: bad firstElement ${firstElement}`);
  }
  if (count > 0 && !(Number.isSafeInteger(unitLength) && unitLength >= 1)) {
    throw new RangeError(`${pass}: bad unitLength ${unitLength}`);
  }
  [job.base, ...models].forEach((w, i) => {
    const want = count * floatSize(w.dtype);
    if (w.bytes.byteLength !== want) {
      throw new RangeError(
        `${pass}: input ${i} (${w.dtype}) has ${w.bytes.byteLength} bytes for ${count} elements (want ${want})`,
      );
    }
  });
  // Units touched: the last one's index + 1.
  return count === 0 ? 0 : Math.floor((firstElement + count - 1) / unitLength) + 1;
}

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class JsBackend implements Backend {
  readonly name = 'js' as const;
  private readonly pool: Scratch[] = [];

  info(): BackendInfo {
    return { name: 'js', isa: 'js', threads: 1, cudaCompiled: false, cudaDevice: undefined };
  }

  async gram(job: GramJob): Promise<void> {
    const units = checkJob(job, 'gram');
    const need = units * gramSize(job.models.length);
    if (job.gram.length < need) throw new RangeError(`gram: ${job.gram.length} accumulators, need ${need}`);
    const scratch = this.pool.pop() ?? new Scratch();
    try {
      const wide = isWide(job);
      const models: FloatArray[] = new Array<FloatArray>(job.models.length);
      const bytesPerElement = [job.base, ...job.models].reduce((s, w) => s + floatSize(w.dtype), 0);
      let sinceYield = 0;
      for (let start = 0; start < job.count; start += CHUNK) {
        const n = Math.min(CHUNK, job.count - start);
        const base = scratch.decode(job.base, start, n, wide, 0);
        for (let i = 0; i < models.length; i++)
          models[i] = scratch.decode(job.models[i]!, start, n, wide, i + 1);
        accumulateGram(base, models, n, job.firstElement + start, job.unitLength, job.gram);
        sinceYield += n * bytesPerElement;
        if (sinceYield >= YIELD_BYTES && start + n < job.count) {
          sinceYield = 0;
          await yieldToLoop();
        }
      }
    } finally {
      this.pool.push(scratch);
    }
  }

  async interpolate(job: InterpolateJob): Promise<void> {
    const units = checkJob(job, 'interpolate');
    if (job.t.length < units) throw new RangeError(`interpolate: ${job.t.length} ratios, need ${units}`);
    const outSize = floatSize(job.outDtype);
    if (job.out.byteLength !== job.count * outSize) {
      throw new RangeError(`interpolate: out has ${job.out.byteLength} bytes, want ${job.count * outSize}`);
    }
    const scratch = this.pool.pop() ?? new Scratch();
    try {
      const wide = isWide(job);
      const models: FloatArray[] = new Array<FloatArray>(job.models.length);
      const bytesPerElement = [job.base, ...job.models].reduce((s, w) => s + floatSize(w.dtype), 0);
      const aligned = job.out.byteOffset % outSize === 0;
      let sinceYield = 0;
      for (let start = 0; start < job.count; start += CHUNK) {
        const n = Math.min(CHUNK, job.count - start);
        const base = scratch.decode(job.base, start, n, wide, 0);
        for (let i = 0; i < models.length; i++)
          models[i] = scratch.decode(job.models[i]!, start, n, wide, i + 1);
        const out = job.out.subarray(start * outSize, (start + n) * outSize);
        writeResults(job.outDtype, aligned ? out : scratch.outBytes, n, scratch, (dst) =>
          interpolateUnits(base, models, n, job.firstElement + start, job.unitLength, job.t, dst),
        );
        if (!aligned) out.set(scratch.outBytes.subarray(0, n * outSize));
        sinceYield += n * bytesPerElement;
        if (sinceYield >= YIELD_BYTES && start + n < job.count) {
          sinceYield = 0;
          await yieldToLoop();
        }
      }
    } finally {
      this.pool.push(scratch);
    }
  }

  async dispose(): Promise<void> {
    this.pool.length = 0;
  }
}

/**
 * Runs `compute` into an array that lands in `bytes` (aligned to the out dtype) as `outDtype`: straight
 * into a typed view for F64 and F32 (a Float32Array store is RNE), via float64 scratch for F16/BF16.
 */
function writeResults(
  outDtype: FloatDType,
  bytes: Uint8Array,
  n: number,
  scratch: Scratch,
  compute: (dst: FloatArray) => void,
): void {
  switch (outDtype) {
    case 'F64':
      compute(new Float64Array(bytes.buffer, bytes.byteOffset, n));
      return;
    case 'F32':
      compute(new Float32Array(bytes.buffer, bytes.byteOffset, n));
      return;
    case 'F16':
    case 'BF16': {
      compute(scratch.result);
      const dst16 = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
      if (outDtype === 'BF16') encodeBf16FromF64(scratch.result, scratch.resultWords, n, dst16, 0);
      else encodeF16FromF64(scratch.result, scratch.resultWords, n, dst16, 0);
      return;
    }
  }
}
