/**
 * Kernel benchmarks (`npm run bench:kernels`): the Gram and interpolation passes on 64 MiB per input,
 * N = 2, for BF16, F16 and F32; the native addon with each ISA forced, on one thread and on all, vs the
 * pure-TypeScript backend; and, in the same run, a single-thread memcpy (Buffer.copy) to compare with.
 * Medians of tinybench samples, data in RAM (warm). GB = 1e9 bytes.
 *
 *   gram GB/s        input bytes / time;     ratio: vs the time memcpy takes to copy those input bytes
 *   interp GB/s      (input + output) bytes / time, read + written;  ratio: vs memcpy read + written
 *
 * Then the low-rank (LoRA) steps on Llama/TinyLlama-shaped tensors, N = 2 adapters of rank 16 (BF16
 * factors, BF16 base and output): the Gram from the factors (packing and orthonormalization included),
 * layer- and filter-wise; the fused output (base read + output written / time) against the dense
 * interpolation of the same tensor from three BF16 inputs (the route that needs materialized fine-tunes).
 *
 *   node dist/bench/kernels.js [--quick] [--low-rank (the low-rank table only)]
 */
import * as os from 'node:os';
import { Bench } from 'tinybench';
import { floatSize, type FloatDType } from '../lib/dtype';
import type { Backend, LowRankFactor, LowRankSpec, TensorSpec } from '../lib/engine/backend';
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
  if (process.argv.includes('--low-rank')) return lowRankRows(quick, isas, allThreads);
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
  await lowRankRows(quick, isas, allThreads);
}

/** Stored [rows, cols] shapes of the tensors LoRA adapters target. */
const LORA_SHAPES: readonly [string, number, number][] = [
  ['4096×4096 Llama-7B q/k/v/o', 4096, 4096],
  ['2048×2048 TinyLlama q/o', 2048, 2048],
  ['256×2048 TinyLlama k/v', 256, 2048],
  ['5632×2048 TinyLlama gate/up', 5632, 2048],
  ['2048×5632 TinyLlama down', 2048, 5632],
];
const LORA_RANK = 16;

function randomFactor(rows: number, cols: number, seed: number): LowRankFactor {
  const [a] = randomInputs('BF16', LORA_RANK * cols, seed);
  const [b] = randomInputs('BF16', rows * LORA_RANK, seed + 1);
  return { a: a!, aDtype: 'BF16', b: b!, bDtype: 'BF16', rank: LORA_RANK, scale: 2, transposed: false };
}

async function lowRankRows(quick: boolean, isas: readonly NativeIsa[], allThreads: number): Promise<void> {
  const header = [
    'tensor',
    'backend',
    'threads',
    'gram ms',
    'rows gram ms',
    'out ms',
    'out GB/s',
    'dense ms',
    'out ÷ dense',
  ];
  const table: string[][] = [];
  for (const [label, rows, cols] of LORA_SHAPES) {
    const count = rows * cols;
    const factors = [randomFactor(rows, cols, 11), randomFactor(rows, cols, 13)];
    const spec = (filterWise: boolean): LowRankSpec => ({
      name: label,
      rows,
      cols,
      baseDtype: 'BF16',
      outDtype: 'BF16',
      filterWise,
      factors,
    });
    const inputs = randomInputs('BF16', count, 17);
    const window = { firstRow: 0, rows, base: inputs[0]! };
    const out = new Uint8Array(count * 2);
    const t = new Float64Array([0.7]);
    const dense: TensorSpec = {
      name: label,
      dtypes: ['BF16', 'BF16', 'BF16'],
      outDtype: 'BF16',
      numel: count,
      unitLength: count,
    };
    const configs: { backend: string; threads: number; make: () => Backend }[] = [
      { backend: 'js', threads: 1, make: () => createBackend('js') },
    ];
    if (isas.length > 0) {
      for (const threads of [1, allThreads])
        configs.push({
          backend: `native ${isas[0]}`,
          threads,
          make: () => createBackend('native', { threads }),
        });
    }
    for (const c of configs) {
      const backend = c.make();
      const gram = (filterWise: boolean) => async (): Promise<void> => {
        const session = backend.openLowRank(spec(filterWise));
        await session.gram();
        await session.close();
      };
      const session = backend.openLowRank(spec(false));
      await session.gram(); // packed once: the output rows time the fused kernel alone
      const denseSession = backend.openTensor(dense);
      const jsOutput = c.backend === 'js' && count > 1 << 22;
      const tasks: [string, () => Promise<void>][] = [
        ['gram', gram(false)],
        ['rows', gram(true)],
        ['out', () => session.interpolate(window, t, out)],
        ['dense', () => denseSession.interpolate({ firstElement: 0, count, inputs }, t, out)],
      ];
      // js on the largest tensors: the output passes take seconds; measured on the smaller ones only.
      const measured = await measure(jsOutput ? tasks.slice(0, 2) : tasks, quick);
      const ms = (name: string): number | undefined => measured.find((r) => r.what === name)?.medianMs;
      const outMs = ms('out');
      const denseMs = ms('dense');
      table.push([
        label,
        c.backend,
        String(c.threads),
        fixed(ms('gram')!, 2),
        fixed(ms('rows')!, 2),
        outMs === undefined ? '–' : fixed(outMs, 1),
        outMs === undefined ? '–' : fixed((count * 4) / outMs / 1e6),
        denseMs === undefined ? '–' : fixed(denseMs, 1),
        outMs === undefined || denseMs === undefined ? '–' : fixed(outMs / denseMs),
      ]);
      await session.close();
      await denseSession.close();
      await backend.dispose();
    }
  }
  console.log(
    `\nlow-rank steps: N = 2 adapters of rank ${LORA_RANK} (BF16 factors), BF16 base and output, medians`,
  );
  console.log(formatTable(header, table));
  console.log(
    '\ngram: the Gram from the factors (packing and orthonormalization included), one unit; rows gram: one unit per row.' +
      '\nout GB/s: base read + output written / time of the fused output pass; dense: the dense interpolation of the' +
      '\nsame tensor from base + 2 materialized BF16 fine-tunes; out ÷ dense: their time ratio.',
  );
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
