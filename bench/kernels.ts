/**
 * Kernel benchmarks (`npm run bench:kernels`): the Gram and interpolation passes on 64 MiB per input,
 * N = 2, for BF16, F16 and F32; the native addon with each ISA forced, on one thread and on all, vs the
 * pure-TypeScript backend; and, in the same run, a single-thread memcpy (Buffer.copy) to compare with.
 * Medians of tinybench samples, data in RAM (warm). GB = 1e9 bytes.
 *
 *   gram GB/s        input bytes / time;     ratio: vs the time memcpy takes to copy those input bytes
 *   interp GB/s      (input + output) bytes / time, read + written;  ratio: vs memcpy read + written
 */
import * as os from 'node:os';
import { Bench } from 'tinybench';
import { floatSize, type FloatDType } from '../lib/dtype';
import type { Backend, TensorSpec } from '../lib/engine/backend';
import type { NativeIsa } from '../lib/engine/native/addon-types';
import { loadNativeAddon } from '../lib/engine/native/loader';
import { createBackend } from '../lib/engine/registry';
import { encodeFloats } from '../lib/math/codec';
import { fixed, formatTable } from './util';

const INPUT_BYTES = 64 << 20;
const DTYPES: readonly FloatDType[] = ['BF16', 'F16', 'F32'];

function randomInputs(dtype: FloatDType, count: number, seed: number): Uint8Array[] {
  let s = seed >>> 0;
  const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 0.1;
  const base = new Float32Array(count);
  for (let k = 0; k < count; k++) base[k] = rand();
  return [0, 1, 2].map((i) => {
    const v = new Float32Array(count);
    for (let k = 0; k < count; k++) v[k] = base[k]! + (i === 0 ? 0 : rand() * 0.1);
    return encodeFloats(v, dtype);
  });
}

interface Row {
  what: string;
  medianMs: number;
}

async function measure(tasks: [string, () => Promise<void> | void][], quick: boolean): Promise<Row[]> {
  const bench = new Bench({
    time: quick ? 200 : 1500,
    iterations: quick ? 2 : 5,
    warmupIterations: 1,
    warmupTime: 0,
  });
  for (const [name, fn] of tasks) bench.add(name, fn);
  await bench.run();
  return bench.tasks.map((t) => {
    const r = t.result as { state: string; latency?: { p50: number }; error?: unknown };
    if (r.latency === undefined) throw new Error(`${t.name}: ${r.state} ${String(r.error ?? '')}`);
    return { what: t.name, medianMs: r.latency.p50 };
  });
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const loaded = loadNativeAddon();
  if (loaded.addon === undefined)
    console.warn(`native addon not loaded, pure TypeScript only: ${loaded.reasons.join('; ')}`);
  const isas: readonly NativeIsa[] = loaded.addon?.info().availableIsas ?? [];
  const allThreads = os.availableParallelism();
  const js: Backend = createBackend('js');
  console.log(
    `kernels: 64 MiB per input, N = 2, ${os.cpus()[0]?.model ?? 'cpu'} × ${allThreads}, node ${process.version}, ` +
      `data in RAM, medians`,
  );

  // memcpy of 64 MiB, one thread: Buffer.copy between two pre-touched buffers.
  const src = Buffer.alloc(INPUT_BYTES, 1);
  const dst = Buffer.alloc(INPUT_BYTES, 2);
  const [copy] = await measure([['memcpy', () => void src.copy(dst)]], quick);
  const copyBytesPerMs = INPUT_BYTES / copy!.medianMs; // bytes copied per ms
  console.log(
    `memcpy (Buffer.copy, 1 thread): ${fixed(copyBytesPerMs / 1e6)} GB/s copied = ` +
      `${fixed((2 * copyBytesPerMs) / 1e6)} GB/s read + written\n`,
  );

  const header = ['pass', 'dtype', 'backend', 'isa', 'threads', 'ms', 'GB/s', '× memcpy', '× js'];
  const table: string[][] = [];
  for (const pass of ['gram', 'interpolate'] as const) {
    for (const dtype of DTYPES) {
      const count = INPUT_BYTES / floatSize(dtype);
      const spec: TensorSpec = {
        name: 'bench',
        dtypes: [dtype, dtype, dtype],
        outDtype: dtype,
        numel: count,
        unitLength: count,
      };
      const window = { firstElement: 0, count, inputs: randomInputs(dtype, count, 7) };
      const t = new Float64Array([0.7]);
      const out = new Uint8Array(INPUT_BYTES);
      const run = (b: Backend) => async (): Promise<void> => {
        const session = b.openTensor(spec);
        try {
          await (pass === 'gram' ? session.gram(window) : session.interpolate(window, t, out));
        } finally {
          await session.close();
        }
      };
      const configs: { backend: string; isa: string; threads: number; fn: () => Promise<void> }[] = [];
      configs.push({ backend: 'js', isa: 'js', threads: 1, fn: run(js) });
      for (const isa of isas) {
        for (const threads of [1, allThreads]) {
          configs.push({
            backend: 'native',
            isa,
            threads,
            fn: run(createBackend('native', { isa, threads })),
          });
        }
      }
      const rows = await measure(
        configs.map((c, i) => [String(i), c.fn]),
        quick,
      );
      const inputBytes = 3 * INPUT_BYTES;
      const movedBytes = pass === 'gram' ? inputBytes : inputBytes + INPUT_BYTES;
      const memcpyMs = pass === 'gram' ? inputBytes / copyBytesPerMs : movedBytes / (2 * copyBytesPerMs);
      const jsMs = rows[0]!.medianMs;
      configs.forEach((c, i) => {
        const ms = rows[i]!.medianMs;
        table.push([
          pass,
          dtype,
          c.backend,
          c.isa,
          String(c.threads),
          fixed(ms, 1),
          fixed(movedBytes / ms / 1e6),
          fixed(memcpyMs / ms),
          c.backend === 'js' ? '1.0' : fixed(jsMs / ms, 1),
        ]);
      });
    }
  }
  console.log(formatTable(header, table));
  console.log(
    '\nGB/s: gram = input bytes read / time; interpolate = input read + output written / time.' +
      '\n× memcpy: gram = time to memcpy the input bytes / time; interpolate = GB/s ÷ memcpy read + written GB/s.',
  );
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
