/**
 * `npm run bench:adapter-output` (also part of `npm run bench`): a merge of LoRA adapters written as one
 * adapter (`--out-format peft`, issue 19) against the same merge written as a full model. The
 * TinyLlama-shaped bf16 base of bench/e2e.ts's fixture and 2 rank-16 adapters (α = 32, f32 factors as
 * PEFT saves them) on all seven linear kinds of its 22 layers, generated once into .cache/. Each merge
 * in a fresh process, warm page cache, output fsynced; medians and min–max over the runs, the output's
 * bytes against the base's.
 *
 *   node dist/bench/adapterOutput.js [--runs N] [--preset tinyllama|medium|example]
 */
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { ensureFixture, isPresetName, PRESETS } from '../lib/fixtures/generate';
import { llamaLinearModules, randomAdapter, writePeftAdapter } from '../lib/fixtures/lora';
import { mergeModelStock } from '../lib/index';
import type { OutFormat } from '../lib/types';
import {
  benchEntry,
  childResult,
  fixed,
  formatTable,
  median,
  ROOT,
  safetensorsFiles,
  sendResult,
  syncDisks,
  totalSize,
} from './util';

interface Job {
  readonly base: string;
  readonly models: readonly string[];
  readonly out: string;
  readonly outFormat: OutFormat;
}
interface Trial {
  readonly seconds: number;
  readonly maxRSS: number;
  readonly bytesRead: number;
  readonly isa: string;
}

async function child(job: Job): Promise<void> {
  const start = process.hrtime.bigint();
  const report = await mergeModelStock({ ...job, overwrite: true });
  const trial: Trial = {
    seconds: Number(process.hrtime.bigint() - start) / 1e9,
    maxRSS: process.resourceUsage().maxRSS,
    bytesRead: report.bytesRead,
    isa: `${report.backend.name} ${report.backend.isa}, ${report.backend.threads} threads`,
  };
  sendResult(trial);
}

async function run(job: Job): Promise<Trial> {
  rmSync(job.out, { recursive: true, force: true });
  syncDisks();
  return childResult<Trial>(__filename, job);
}

const folderBytes = (dir: string): number =>
  readdirSync(dir).reduce((a, f) => a + statSync(path.join(dir, f)).size, 0);

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { runs: { type: 'string', default: '3' }, preset: { type: 'string', default: 'tinyllama' } },
  });
  const runs = Number(values.runs);
  if (!Number.isSafeInteger(runs) || runs < 1) throw new Error('--runs expects a positive integer');
  const preset = values.preset!;
  if (!isPresetName(preset)) throw new Error(`unknown --preset ${preset}`);
  const shape = PRESETS[preset];
  const fixture = await ensureFixture({ ...shape, dir: path.join(ROOT, '.cache', `bench-${preset}`) });
  const modules = llamaLinearModules(shape);
  const adapters = [0, 1].map((i) => path.join(fixture.dir, `lora-r16-${i + 1}`));
  for (const [i, dir] of adapters.entries()) {
    if (existsSync(path.join(dir, 'adapter_model.safetensors'))) continue;
    await writePeftAdapter(
      dir,
      randomAdapter({ modules, rank: 16, alpha: 32, dtype: 'F32', seed: 1000 + i }),
    );
  }
  const job = (outFormat: OutFormat): Job => ({
    base: fixture.base,
    models: adapters,
    out: path.join(fixture.dir, `merged-${outFormat}`),
    outFormat,
  });
  // Untimed: the inputs into the page cache.
  await run(job('model'));
  await run(job('peft'));
  const trials: Record<OutFormat, Trial[]> = { model: [], peft: [] };
  for (let r = 0; r < runs; r++)
    for (const f of r % 2 === 0 ? (['peft', 'model'] as const) : (['model', 'peft'] as const))
      trials[f].push(await run(job(f)));
  const outBytes = { model: folderBytes(job('model').out), peft: folderBytes(job('peft').out) };
  const baseBytes = totalSize(safetensorsFiles(fixture.base));
  const adapterBytes = totalSize(adapters.map((d) => path.join(d, 'adapter_model.safetensors')));
  for (const f of ['model', 'peft'] as const) rmSync(job(f).out, { recursive: true, force: true });
  const row = (f: OutFormat, label: string): string[] => {
    const s = trials[f].map((t) => t.seconds);
    return [
      label,
      fixed(median(s)),
      `${fixed(Math.min(...s))}–${fixed(Math.max(...s))}`,
      fixed(median(trials[f].map((t) => t.bytesRead)) / 1e6, 1),
      fixed(outBytes[f] / 1e6, 1),
      fixed(median(trials[f].map((t) => t.maxRSS)) / 1024, 0),
    ];
  };
  console.log(
    `${preset}: base ${(baseBytes / 1e9).toFixed(2)} GB (bf16), 2 adapters of rank 16 on ${modules.length} modules ` +
      `(${(adapterBytes / 1e6).toFixed(1)} MB of f32 factors), ${runs} run${runs === 1 ? '' : 's'} each, warm page cache, ` +
      `fsync on; ${trials.peft[0]?.isa}; ${os.cpus()[0]?.model ?? 'unknown CPU'}`,
  );
  console.log(
    formatTable(
      ['output', 'median s', 'min–max s', 'read MB', 'written MB', 'max RSS MB'],
      [row('peft', '--out-format peft (one adapter)'), row('model', '--out-format model (full model)')],
    ),
  );
  const ratio = median(trials.model.map((t) => t.seconds)) / median(trials.peft.map((t) => t.seconds));
  console.log(
    `adapter output: ${(outBytes.peft / 1e6).toFixed(1)} MB = ${((100 * outBytes.peft) / baseBytes).toFixed(1)}% of the base's ` +
      `weights; ${ratio.toFixed(1)}× faster than writing the model`,
  );
}

benchEntry(child, main);
