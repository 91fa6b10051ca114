import { floatSize, type FloatDType } from '../dtype';
import {
  decodeBf16Words,
  decodeF16Values,
  encodeBf16FromF64,
  encodeF16FromF64,
  type FloatArray,
} from '../math/codec';
import { throwIfCancelled } from '../errors';
import { gramSize } from '../math/gram';
import { accumulateGram, interpolateUnits } from '../math/kernels';
import {
  cpuDevice,
  unitsOf,
  type Backend,
  type BackendCapacity,
  type BackendInfo,
  type BackendOptions,
  type LowRankSession,
  type LowRankSpec,
  type MaterializeJob,
  type TensorSession,
  type TensorSpec,
  type TensorWindow,
} from './backend';
import { JsLowRankSession, materializeRowsJs } from './jsLowRank';

/**
 * The pure-TypeScript backend: lib/math/kernels.ts behind the seam, and the baseline the native engine
 * is measured against. Inputs are decoded CHUNK elements at a time into reused scratch (float32 when
 * every input fits it exactly, float64 as soon as one input is F64, so each kernel sees one array type
 * per call), and the event loop gets a turn every YIELD_BYTES of input.
 */

/** Elements decoded per step: N+2 scratch arrays of this many elements stay in L2. */
const CHUNK = 16384;
/** Input bytes processed between yields to the event loop. */
const YIELD_BYTES = 4 << 20;
/** Host buffers: cache-line aligned, like the addon's. */
// Page-aligned, so direct reads land in these buffers without a bounce copy (fileSource.ts).
const ALIGNMENT = 4096;

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
  decode(
    input: Uint8Array,
    dtype: FloatDType,
    start: number,
    n: number,
    wide: boolean,
    i: number,
  ): FloatArray {
    this.slot(i);
    const size = floatSize(dtype);
    let bytes = input.subarray(start * size, (start + n) * size);
    if (bytes.byteOffset % size !== 0) {
      const copy = this.copies[i]!;
      copy.set(bytes);
      bytes = copy;
    }
    switch (dtype) {
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

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

class JsSession implements TensorSession {
  private readonly gram_: Float64Array;
  private readonly wide: boolean;
  private readonly bytesPerElement: number;

  constructor(
    readonly spec: TensorSpec,
    private readonly scratchPool: Scratch[],
    private readonly signal: AbortSignal | undefined,
  ) {
    this.gram_ = new Float64Array(unitsOf(spec) * gramSize(spec.dtypes.length - 1));
    this.wide = spec.dtypes.includes('F64');
    this.bytesPerElement = spec.dtypes.reduce((s, d) => s + floatSize(d), 0);
  }

  /** Decodes the window CHUNK elements at a time and hands each chunk to `body`, yielding as it goes. */
  private async eachChunk(
    window: TensorWindow,
    body: (base: FloatArray, models: FloatArray[], start: number, n: number, scratch: Scratch) => void,
  ): Promise<void> {
    const inputs = window.inputs as readonly Uint8Array[];
    const dtypes = this.spec.dtypes;
    const scratch = this.scratchPool.pop() ?? new Scratch();
    try {
      const models: FloatArray[] = new Array<FloatArray>(inputs.length - 1);
      let sinceYield = 0;
      for (let start = 0; start < window.count; start += CHUNK) {
        throwIfCancelled(this.signal, `tensor "${this.spec.name}"`);
        const n = Math.min(CHUNK, window.count - start);
        const base = scratch.decode(inputs[0]!, dtypes[0]!, start, n, this.wide, 0);
        for (let i = 0; i < models.length; i++)
          models[i] = scratch.decode(inputs[i + 1]!, dtypes[i + 1]!, start, n, this.wide, i + 1);
        body(base, models, start, n, scratch);
        sinceYield += n * this.bytesPerElement;
        if (sinceYield >= YIELD_BYTES && start + n < window.count) {
          sinceYield = 0;
          await yieldToLoop();
        }
      }
    } finally {
      this.scratchPool.push(scratch);
    }
  }

  gram(window: TensorWindow): Promise<void> {
    const { unitLength } = this.spec;
    return this.eachChunk(window, (base, models, start, n) =>
      accumulateGram(base, models, n, window.firstElement + start, unitLength, this.gram_),
    );
  }

  async gramResult(): Promise<Float64Array> {
    return this.gram_;
  }

  holds(): boolean {
    return false;
  }

  interpolate(window: TensorWindow, t: Float64Array, out: Uint8Array): Promise<void> {
    const { unitLength, outDtype } = this.spec;
    const outSize = floatSize(outDtype);
    const aligned = out.byteOffset % outSize === 0;
    return this.eachChunk(window, (base, models, start, n, scratch) => {
      const dst = out.subarray(start * outSize, (start + n) * outSize);
      writeResults(outDtype, aligned ? dst : scratch.outBytes, n, scratch, (values) =>
        interpolateUnits(base, models, n, window.firstElement + start, unitLength, t, values),
      );
      if (!aligned) dst.set(scratch.outBytes.subarray(0, n * outSize));
    });
  }

  async close(): Promise<void> {
    // Nothing held beyond the Gram array, which the engine may still read.
  }
}

export class JsBackend implements Backend {
  readonly name = 'js' as const;
  private readonly scratchPool: Scratch[] = [];

  constructor(private readonly options: BackendOptions = {}) {}

  info(): BackendInfo {
    return { name: 'js', isa: 'js', threads: 1, device: cpuDevice() };
  }

  capacity(): BackendCapacity {
    return { sessionBytes: Infinity, alignment: ALIGNMENT };
  }

  allocHost(bytes: number): Uint8Array {
    const raw = Buffer.allocUnsafeSlow(bytes + ALIGNMENT);
    const shift = (ALIGNMENT - (raw.byteOffset % ALIGNMENT)) % ALIGNMENT;
    return new Uint8Array(raw.buffer, raw.byteOffset + shift, bytes);
  }

  freeHost(): void {
    // Garbage-collected memory: nothing to return early.
  }

  openTensor(spec: TensorSpec): TensorSession {
    return new JsSession(spec, this.scratchPool, this.options.signal);
  }

  openLowRank(spec: LowRankSpec): LowRankSession {
    return new JsLowRankSession(spec, this.options.signal);
  }

  materializeRows(job: MaterializeJob): Promise<void> {
    return materializeRowsJs(job, this.options.signal);
  }

  async dispose(): Promise<void> {
    this.scratchPool.length = 0;
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
