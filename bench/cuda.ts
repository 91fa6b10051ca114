/**
 * `node dist/bench/cuda.js`: the CUDA kernels on resident data, and one tensor's passes end to end
 * through a session (upload, kernels, download), on the first device. Run by scripts/gpu-check.sh.
 *
 * Rows per shape: Gram and interpolation kernel throughput in GB/s of input bytes (CUDA events
 * around the kernels alone, median of --runs calls on resident inputs), then the wall time of a
 * whole session (gram + interpolate, uploads included) from pageable and from pinned host buffers.
 *
 *   node dist/bench/cuda.js [--runs N] [--json FILE]
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { floatSize, type FloatDType } from '../lib/dtype';
import type { NativeGramJob, NativeInput, NativeInterpolateJob } from '../lib/engine/native/addon-types';
import { gramSize } from '../lib/math/gram';
import type { CudaAddon, CudaTensorSession } from '../lib/engine/cuda/addon-types';
import { loadCudaAddon } from '../lib/engine/cuda/addon';
import { fixed, formatTable, median, since } from './util';

interface Shape {
  readonly label: string;
  readonly rows: number;
  readonly cols: number;
  readonly dtypes: readonly FloatDType[]; // base first
  readonly filterWise: boolean;
}

// TinyLlama's largest matrices (hidden 2048, intermediate 5632, vocab 32000), base + 2 fine-tunes.
const SHAPES: readonly Shape[] = [
  {
    label: 'mlp 5632×2048 bf16 N=2',
    rows: 5632,
    cols: 2048,
    dtypes: ['BF16', 'BF16', 'BF16'],
    filterWise: false,
  },
  {
    label: 'embed 32000×2048 bf16 N=2',
    rows: 32000,
    cols: 2048,
    dtypes: ['BF16', 'BF16', 'BF16'],
    filterWise: false,
  },
  {
    label: 'embed rows (filter-wise)',
    rows: 32000,
    cols: 2048,
    dtypes: ['BF16', 'BF16', 'BF16'],
    filterWise: true,
  },
  { label: 'mlp f32 N=3', rows: 5632, cols: 2048, dtypes: ['F32', 'F32', 'F32', 'F32'], filterWise: false },
  {
    label: 'mlp bf16 N=8',
    rows: 5632,
    cols: 2048,
    dtypes: Array(9).fill('BF16') as FloatDType[],
    filterWise: false,
  },
];

interface Result {
  readonly shape: string;
  readonly inputBytes: number;
  readonly gramGBs: number;
  readonly interpolateGBs: number;
  readonly sessionPageableS: number;
  readonly sessionPinnedS: number;
}

function inputs(
  count: number,
  dtypes: readonly FloatDType[],
  alloc: (bytes: number) => Uint8Array,
): NativeInput[] {
  return dtypes.map((dtype, m) => {
    const bytes = alloc(count * floatSize(dtype));
    // Cheap non-trivial contents: the kernels' speed does not depend on the values.
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 2);
    for (let k = 0; k < words.length; k++)
      words[k] = (0x3c003c00 + ((k * 2654435761 + m * 40503) & 0x00ff00ff)) >>> 0;
    return { bytes, dtype };
  });
}

function jobs(shape: Shape, ins: NativeInput[], out: Uint8Array) {
  const count = shape.rows * shape.cols;
  const unitLength = shape.filterWise ? shape.cols : count;
  const units = count / unitLength;
  const n = ins.length - 1;
  const window = { base: ins[0]!, models: ins.slice(1), count, firstElement: 0, unitLength };
  const gram = (): NativeGramJob => ({ ...window, gram: new Float64Array(units * gramSize(n)) });
  const interpolate: NativeInterpolateJob = {
    ...window,
    t: new Float64Array(units).fill(0.7),
    outDtype: ins[0]!.dtype,
    out,
  };
  return { gram, interpolate, count, unitLength };
}

async function session(cuda: CudaAddon, shape: Shape, ins: NativeInput[], out: Uint8Array) {
  const j = jobs(shape, ins, out);
  const s: CudaTensorSession = cuda.cudaOpenTensor({
    name: shape.label,
    count: j.count,
    unitLength: j.unitLength,
    base: ins[0]!.dtype,
    models: ins.slice(1).map((w) => w.dtype),
    outDtype: ins[0]!.dtype,
  });
  return { s, j };
}

async function measure(cuda: CudaAddon, shape: Shape, runs: number): Promise<Result> {
  const count = shape.rows * shape.cols;
  const pageable = inputs(count, shape.dtypes, (b) => new Uint8Array(b));
  const inputBytes = pageable.reduce((s, w) => s + w.bytes.byteLength, 0);
  const out = new Uint8Array(count * floatSize(shape.dtypes[0]!));

  // Resident kernels: one uploading call, then repeated calls on resident data.
  const { s, j } = await session(cuda, shape, pageable, out);
  await s.gram(j.gram());
  const gramMs: number[] = [];
  const lerpMs: number[] = [];
  for (let r = 0; r < runs; r++) {
    let before = s.stats();
    await s.gram(j.gram());
    gramMs.push(s.stats().gramKernelMs - before.gramKernelMs);
    before = s.stats();
    await s.interpolate(j.interpolate);
    lerpMs.push(s.stats().interpolateKernelMs - before.interpolateKernelMs);
  }
  if (!s.stats().resident) throw new Error(`${shape.label}: not resident on the device`);
  await s.close();

  // Whole sessions: open, gram (upload), interpolate (resident), download, close.
  const wall = async (ins: NativeInput[], o: Uint8Array): Promise<number> => {
    const times: number[] = [];
    for (let r = 0; r < runs; r++) {
      const start = process.hrtime.bigint();
      const { s: t, j: k } = await session(cuda, shape, ins, o);
      await t.gram(k.gram());
      await t.interpolate(k.interpolate);
      await t.close();
      times.push(since(start));
    }
    return median(times);
  };
  const sessionPageableS = await wall(pageable, out);
  const pinned = inputs(count, shape.dtypes, (b) => cuda.cudaAllocHost(b));
  const pinnedOut = cuda.cudaAllocHost(out.byteLength);
  const sessionPinnedS = await wall(pinned, pinnedOut);
  for (const w of pinned) cuda.cudaFreeHost(w.bytes);
  cuda.cudaFreeHost(pinnedOut);

  return {
    shape: shape.label,
    inputBytes,
    gramGBs: inputBytes / 1e6 / median(gramMs),
    interpolateGBs: inputBytes / 1e6 / median(lerpMs),
    sessionPageableS,
    sessionPinnedS,
  };
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { runs: { type: 'string', default: '5' }, json: { type: 'string' } },
  });
  const runs = Number(values.runs);
  if (!Number.isSafeInteger(runs) || runs < 1)
    throw new Error(`--runs expects a positive integer, got ${values.runs}`);
  const loaded = loadCudaAddon();
  if (loaded.addon === undefined) throw new Error(loaded.reason);
  const cuda = loaded.addon;
  const info = cuda.cudaInfo();
  const device = info.devices[0];
  if (device === undefined || info.reason !== undefined) throw new Error(info.reason ?? 'no CUDA device');
  const results: Result[] = [];
  for (const shape of SHAPES) results.push(await measure(cuda, shape, runs));

  console.log(
    `\nmodel-stock CUDA bench: ${device.name} (${device.computeCapability}, ${(device.totalMemory / 2 ** 30).toFixed(0)} GiB), ` +
      `runtime ${info.runtimeVersion}, driver ${info.driverVersion}; medians of ${runs} runs`,
  );
  console.log('kernel GB/s: input bytes ÷ kernel time (CUDA events), inputs resident on the device');
  console.log('session s: open + gram (upload) + interpolate + download + close, from host memory\n');
  console.log(
    formatTable(
      ['', 'input MB', 'gram GB/s', 'interp GB/s', 'session s pageable', 'GB/s', 'session s pinned', 'GB/s'],
      results.map((r) => [
        r.shape,
        fixed(r.inputBytes / 1e6, 0),
        fixed(r.gramGBs, 0),
        fixed(r.interpolateGBs, 0),
        fixed(r.sessionPageableS, 4),
        fixed(r.inputBytes / 1e9 / r.sessionPageableS, 1),
        fixed(r.sessionPinnedS, 4),
        fixed(r.inputBytes / 1e9 / r.sessionPinnedS, 1),
      ]),
    ),
  );
  if (values.json !== undefined)
    writeFileSync(values.json, JSON.stringify({ device, info, results }, null, 2));
}

main(process.argv.slice(2)).catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : String(e));
  process.exitCode = 1;
});
