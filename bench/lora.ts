/**
 * `npm run bench:lora` (also part of `npm run bench`): LoRA adapters merged into a full model. The
 * TinyLlama-shaped bf16 base of bench/e2e.ts's fixture and 2 rank-16 adapters (α = 32, f32 factors as
 * PEFT saves them by default) on all seven linear kinds of its 22 layers (154 tensors each), generated
 * once into .cache/ by lib/fixtures/lora.ts. Rows, warm page cache, each merge in a fresh process, output
 * fsynced:
 *
 *   floor            `cat` the base + write the output's bytes durably (bench/floor.ts)
 *   adapter merge    `--model ADAPTER` × 2: the Gram from the factors, the fused dense output
 *                    (target ≤ 1.3× the floor)
 *   mergekit's route each adapter materialized to disk first — W0 + s·B·A rounded to bf16, as PEFT's
 *                    merge_and_unload + save_pretrained do (no fsync), here with our own fused kernel —
 *                    then a dense merge of the two; timed together (target: the adapter merge ≥ 2× faster)
 *   dense merge      the dense merge of those pre-materialized fine-tunes alone
 *
 * Then (unless --no-accuracy) the inexactness of mergekit's route: every adapted tensor of its output
 * against the float64 formula on the exact dense weights W0 + s·B·A with the exact t (the low-rank Gram's),
 * under docs/merge-contract.md's accuracy contract: how many tensors fall outside, and the worst ratio
 * |out − ref| / tolerance.
 *
 *   node dist/bench/lora.js [--runs N] [--preset tinyllama|medium|example] [--no-accuracy] [--scratch DIR]
 */
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { openCheckpoint } from '../lib/checkpoint/open';
import type { AdapterModule } from '../lib/adapter/types';
import type { TensorInfo } from '../lib/checkpoint/types';
import { floatSize, type FloatDType } from '../lib/dtype';
import type { LowRankFactor } from '../lib/engine/backend';
import { ensureFixture, isPresetName, PRESETS, type FixtureInfo } from '../lib/fixtures/generate';
import { llamaLinearModules, randomAdapter, writePeftAdapter } from '../lib/fixtures/lora';
import { createBackend, mergeModelStock } from '../lib/index';
import { decodeFloats, ulp } from '../lib/math/codec';
import { catGroups, durableWrite, readFiles } from './floor';
import {
  benchEntry,
  childResult,
  fixed,
  formatTable,
  median,
  ROOT,
  safetensorsFiles,
  sendResult,
  spread,
  syncDisks,
  totalSize,
} from './util';

const RANK = 16;
const ALPHA = 32;
const FACTOR_DTYPE: FloatDType = 'F32';
/** Rows per window when materializing or measuring (a few MB per input). */
const WINDOW_ELEMENTS = 4 << 20;

type Job =
  | {
      readonly kind: 'merge';
      readonly base: string;
      readonly models: readonly string[];
      readonly out: string;
    }
  | { readonly kind: 'materialize'; readonly base: string; readonly adapter: string; readonly out: string };

interface Trial {
  readonly seconds: number;
  readonly maxRSS: number;
  readonly isa: string;
}

/** Bytes [start, start + length) of tensor `t`. */
function readAt(t: TensorInfo, start: number, length: number): Uint8Array {
  const fd = openSync(t.file, 'r');
  try {
    const into = new Uint8Array(length);
    for (let done = 0; done < length;)
      done += readSync(fd, into, done, length - done, t.offset + start + done);
    return into;
  } finally {
    closeSync(fd);
  }
}

/** A module's factors as the backend takes them (a Linear's: plain). */
function factorOf(m: AdapterModule): LowRankFactor {
  return {
    a: readAt(m.a, 0, m.a.byteLength),
    aDtype: m.a.dtype as FloatDType,
    b: readAt(m.b, 0, m.b.byteLength),
    bDtype: m.b.dtype as FloatDType,
    rank: m.rank,
    scale: m.scale,
    transposed: false,
  };
}

/** W0 + s·B·A of every adapted tensor rounded once to the base's dtype, the rest copied: one safetensors file. */
async function materialize(baseDir: string, adapterDir: string, out: string): Promise<string> {
  const base = await openCheckpoint(baseDir);
  const adapter = await openCheckpoint(adapterDir);
  const backend = createBackend('native');
  const modules = new Map(adapter.adapter!.modules.map((m) => [`${m.module}.weight`, m]));
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const name of base.order) {
    const t = base.tensors.get(name)!;
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.byteLength] };
    offset += t.byteLength;
  }
  const json = Buffer.from(JSON.stringify(header));
  const padded = Buffer.alloc(Math.ceil(json.byteLength / 8) * 8, 0x20);
  json.copy(padded);
  mkdirSync(out, { recursive: true });
  const file = path.join(out, 'model.safetensors');
  const fd = openSync(file, 'w');
  try {
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(padded.byteLength));
    writeSync(fd, prefix);
    writeSync(fd, padded);
    for (const name of base.order) {
      const t = base.tensors.get(name)!;
      const m = modules.get(name);
      const rows = t.shape[0] ?? 1;
      const cols = t.byteLength / floatSize(t.dtype as FloatDType) / rows;
      const per = Math.max(1, Math.floor(WINDOW_ELEMENTS / cols));
      const size = floatSize(t.dtype as FloatDType);
      if (m === undefined) {
        for (let r = 0; r < rows; r += per)
          writeSync(fd, readAt(t, r * cols * size, Math.min(per, rows - r) * cols * size));
        continue;
      }
      const factor = factorOf(m);
      // The fused output with the adapter and a zero task vector, t = 2: (t/N)·(s·B·A + 0) = s·B·A.
      const session = backend.openLowRank({
        name,
        rows,
        cols,
        baseDtype: t.dtype as FloatDType,
        outDtype: t.dtype as FloatDType,
        filterWise: false,
        factors: [factor, undefined],
      });
      try {
        for (let r = 0; r < rows; r += per) {
          const count = Math.min(per, rows - r);
          const outBytes = new Uint8Array(count * cols * size);
          await session.interpolate(
            { firstRow: r, rows: count, base: readAt(t, r * cols * size, count * cols * size) },
            new Float64Array([2]),
            outBytes,
          );
          writeSync(fd, outBytes);
        }
      } finally {
        await session.close();
      }
    }
  } finally {
    closeSync(fd);
    await backend.dispose();
  }
  return file;
}

async function child(job: Job): Promise<void> {
  const start = process.hrtime.bigint();
  let isa = '';
  if (job.kind === 'merge') {
    const report = await mergeModelStock({
      base: job.base,
      models: job.models,
      out: job.out,
      overwrite: true,
    });
    isa = `${report.backend.name} ${report.backend.isa}, ${report.backend.threads} threads`;
  } else {
    await materialize(job.base, job.adapter, job.out);
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const result: Trial = { seconds, maxRSS: process.resourceUsage().maxRSS, isa };
  sendResult(result);
}

async function runChild(job: Job): Promise<Trial> {
  rmSync(job.out, { recursive: true, force: true });
  syncDisks();
  return childResult<Trial>(__filename, job);
}

/** The two adapters of the fixture's base, generated once (a marker names what they were made from). */
async function adaptersOf(f: FixtureInfo): Promise<string[]> {
  const dir = `${f.dir}-lora`;
  const source = JSON.stringify({
    generator: f.generator,
    options: f.options,
    rank: RANK,
    alpha: ALPHA,
    dtype: FACTOR_DTYPE,
    version: 1,
  });
  const marker = path.join(dir, 'made-from.json');
  const dirs = [1, 2].map((i) => path.join(dir, `adapter-${i}`));
  if (!existsSync(marker) || readFileSync(marker, 'utf8') !== source) {
    rmSync(dir, { recursive: true, force: true });
    const modules = llamaLinearModules(f.options);
    for (const [i, d] of dirs.entries()) {
      await writePeftAdapter(
        d,
        randomAdapter({ modules, rank: RANK, alpha: ALPHA, dtype: FACTOR_DTYPE, seed: 1000 + i }),
      );
    }
    writeFileSync(marker, source);
  }
  return dirs;
}

/**
 * Every adapted tensor of `merged` (mergekit's route) against the float64 formula on the exact dense
 * weights with the exact t of `exactT`: tensors outside the contract, and the worst |out − ref| / tol.
 */
async function inexactness(
  baseDir: string,
  adapters: readonly string[],
  merged: string,
  exactT: ReadonlyMap<string, number>,
): Promise<{ adapted: number; outside: number; worst: number; worstTensor: string }> {
  const base = await openCheckpoint(baseDir);
  const out = await openCheckpoint(merged);
  const ads = await Promise.all(adapters.map((a) => openCheckpoint(a)));
  const backend = createBackend('native');
  let adapted = 0;
  let outside = 0;
  let worst = 0;
  let worstTensor = '';
  try {
    for (const name of base.order) {
      const ms = ads.map((a) => a.adapter!.modules.find((m) => `${m.module}.weight` === name));
      if (ms.every((m) => m === undefined)) continue;
      adapted++;
      const t0 = base.tensors.get(name)!;
      const dtype = t0.dtype as FloatDType;
      const size = floatSize(dtype);
      const rows = t0.shape[0]!;
      const cols = t0.byteLength / size / rows;
      const t = exactT.get(name)!;
      const factors = ms.map((m) => (m === undefined ? undefined : factorOf(m)));
      const per = Math.max(1, Math.floor(WINDOW_ELEMENTS / cols));
      let ratio = 0;
      for (let r = 0; r < rows; r += per) {
        const count = Math.min(per, rows - r);
        const w0Bytes = readAt(t0, r * cols * size, count * cols * size);
        const w0 = decodeFloats(w0Bytes, dtype);
        const got = decodeFloats(readAt(out.tensors.get(name)!, r * cols * size, count * cols * size), dtype);
        const sum = new Float64Array(count * cols);
        for (const f of factors) {
          if (f === undefined) {
            for (let k = 0; k < sum.length; k++) sum[k] = sum[k]! + w0[k]!;
            continue;
          }
          const w = new Uint8Array(count * cols * 8);
          await backend.materializeRows({
            name,
            rows,
            cols,
            baseDtype: dtype,
            factor: f,
            window: { firstRow: r, rows: count, base: w0Bytes },
            out: w,
          });
          const wf = new Float64Array(w.buffer);
          for (let k = 0; k < sum.length; k++) sum[k] = sum[k]! + wf[k]!;
        }
        for (let k = 0; k < sum.length; k++) {
          const avg = sum[k]! / factors.length;
          const ref = w0[k]! + t * (avg - w0[k]!);
          const tol = ulp(ref, dtype) + 2 ** -20 * (Math.abs(t * avg) + Math.abs((1 - t) * w0[k]!));
          ratio = Math.max(ratio, Math.abs(got[k]! - ref) / tol);
        }
      }
      if (ratio > 1) outside++;
      if (ratio > worst) [worst, worstTensor] = [ratio, name];
    }
  } finally {
    await backend.dispose();
  }
  return { adapted, outside, worst, worstTensor };
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: 'string', default: '3' },
      'no-accuracy': { type: 'boolean', default: false },
      scratch: { type: 'string' },
      preset: { type: 'string', default: 'tinyllama' },
    },
  });
  const runs = Number(values.runs);
  if (!Number.isSafeInteger(runs) || runs < 1)
    throw new Error(`--runs expects a positive integer, got ${values.runs}`);
  const load = os.loadavg().map((x) => x.toFixed(1));
  const name = values.preset;
  if (!isPresetName(name)) throw new Error(`--preset: unknown preset "${name}"`);
  const f = await ensureFixture({ ...PRESETS[name], dir: path.join(ROOT, '.cache', `bench-${name}`) });
  const adapters = await adaptersOf(f);
  const scratch = values.scratch ?? path.join(ROOT, '.cache', `bench-lora-scratch-${process.pid}`);
  mkdirSync(scratch, { recursive: true });
  const baseFiles = safetensorsFiles(f.base);
  const out = path.join(scratch, 'merged');
  const materialized = adapters.map((_, i) => path.join(scratch, `materialized-${i + 1}`));
  const rows = {
    floor: [] as number[],
    adapter: [] as Trial[],
    route: [] as number[],
    materialize: [] as number[],
    dense: [] as Trial[],
  };
  try {
    for (let r = 0; r < runs; r++) {
      readFiles([...baseFiles, ...adapters.map((a) => path.join(a, 'adapter_model.safetensors'))]);
      const read = await catGroups([baseFiles]);
      const write = await durableWrite(scratch, f.fileBytesPerModel);
      rows.floor.push(read + write.seconds);
      const a = await runChild({ kind: 'merge', base: f.base, models: adapters, out });
      rows.adapter.push(a);
      let mat = 0;
      for (const [i, ad] of adapters.entries()) {
        mat += (await runChild({ kind: 'materialize', base: f.base, adapter: ad, out: materialized[i]! }))
          .seconds;
      }
      const d = await runChild({ kind: 'merge', base: f.base, models: materialized, out });
      rows.materialize.push(mat);
      rows.dense.push(d);
      rows.route.push(mat + d.seconds);
      process.stderr.write(
        `  run ${r + 1}/${runs}: floor ${(read + write.seconds).toFixed(2)} s, adapter merge ${a.seconds.toFixed(2)} s, ` +
          `materialize ${mat.toFixed(2)} s + dense merge ${d.seconds.toFixed(2)} s\n`,
      );
    }
    const floor = median(rows.floor);
    const adapter = median(rows.adapter.map((t) => t.seconds));
    const route = median(rows.route);
    const dense = median(rows.dense.map((t) => t.seconds));
    const mib = (ts: Trial[]): string =>
      ts.length === 0 ? '-' : fixed(Math.max(...ts.map((t) => t.maxRSS)) / 1024, 0);
    console.log(
      `\nmodel-stock LoRA bench: ${name} base (${f.options.layers} layers, hidden ${f.options.hidden}, ${f.options.dtype}, ` +
        `${(totalSize(baseFiles) / 1e9).toFixed(2)} GB) + 2 adapters, rank ${RANK}, α ${ALPHA}, ${FACTOR_DTYPE} factors, ` +
        `7 linear kinds × ${f.options.layers} layers`,
    );
    console.log(
      `machine: ${os.cpus()[0]?.model ?? '?'}, ${os.cpus().length} CPUs; ${rows.adapter[0]?.isa ?? ''}; load average ` +
        `${load.join(' ')} at the start, ${os
          .loadavg()
          .map((x) => x.toFixed(1))
          .join(' ')} at the end`,
    );
    console.log(`medians of ${runs} run(s), warm page cache, output fsynced, each step in a fresh process\n`);
    console.log(
      formatTable(
        ['', 'wall s', 'spread', '× floor', 'peak RSS MiB'],
        [
          ['floor (cat base + durable write)', fixed(floor), fixed(spread(rows.floor)), '-', '-'],
          [
            'adapter merge (dense output)',
            fixed(adapter),
            fixed(spread(rows.adapter.map((t) => t.seconds))),
            fixed(adapter / floor),
            mib(rows.adapter),
          ],
          [
            "mergekit's route (materialize ×2 + dense merge)",
            fixed(route),
            fixed(spread(rows.route)),
            fixed(route / floor),
            '-',
          ],
          [
            '  of which materialize ×2 (bf16, no fsync)',
            fixed(median(rows.materialize)),
            fixed(spread(rows.materialize)),
            '-',
            '-',
          ],
          [
            'dense merge of materialized fine-tunes',
            fixed(dense),
            fixed(spread(rows.dense.map((t) => t.seconds))),
            fixed(dense / floor),
            mib(rows.dense),
          ],
        ],
      ),
    );
    console.log(`  adapter merge / floor: ${fixed(adapter / floor)}× (target ≤ 1.3×)`);
    console.log(`  mergekit's route / adapter merge: ${fixed(route / adapter)}× (target ≥ 2×)`);
    console.log(`  dense merge of pre-materialized fine-tunes / adapter merge: ${fixed(dense / adapter)}×`);
    if (!values['no-accuracy']) {
      const exact = await mergeModelStock({
        base: f.base,
        models: adapters,
        out,
        overwrite: true,
        fsync: false,
      });
      const t = new Map(
        exact.tensors.filter((x) => typeof x.t === 'number').map((x) => [x.name, x.t as number]),
      );
      await runChild({ kind: 'merge', base: f.base, models: materialized, out });
      const m = await inexactness(f.base, adapters, out, t);
      console.log(
        `  mergekit's route accuracy: ${m.outside} of ${m.adapted} adapted tensors outside the accuracy contract ` +
          `(worst ${fixed(m.worst, 0)}× the tolerance, ${m.worstTensor})`,
      );
    }
  } finally {
    if (values.scratch === undefined) rmSync(scratch, { recursive: true, force: true });
  }
}

benchEntry(child, main, { mainStack: true });
