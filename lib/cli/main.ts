#!/usr/bin/env node
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { parseDtypeName, readMergekitYaml } from '../config/mergekit';
import { ModelStockError, escapeControl, isModelStockError } from '../errors';
import { mergeModelStock } from '../merge';
import type { ThetaRule } from '../math/ratio';
import type { BackendChoice, MergeOptions } from '../types';
import { IO_MODES, type IoMode } from '../engine/io';
import { WRITE_MODES, type WriteMode } from '../safetensors/shardFile';
import { doctor } from './doctor';
import { exitCodeFor, interruptedBy, interruptOnSignals } from './signals';
import { DownloadProgressView } from './download';
import { ProgressBar } from './progress';
import { formatBytes, parseSize } from './size';

/** Exit codes: 0 success, 1 the merge failed, 2 bad usage. */
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

class UsageError extends Error {}

const sizeArg = (v: string): number => {
  try {
    return parseSize(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
};
const intArg = (v: string): number => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(`"${v}" is not a positive integer`);
  return n;
};
const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

interface MergeFlags {
  base?: string;
  model?: string[];
  out?: string;
  filterWise?: boolean;
  theta: ThetaRule;
  outDtype?: string;
  shardSize?: number;
  report?: string;
  overwrite?: boolean;
  backend: BackendChoice;
  memory?: number;
  io: IoMode;
  threads?: number;
  fsync: boolean;
  writeMode: WriteMode;
  quiet?: boolean;
}

function resolveMerge(
  config: string | undefined,
  outArg: string | undefined,
  f: MergeFlags,
  onWarning: (m: string) => void,
): MergeOptions {
  let base = f.base;
  let fromConfig: Partial<MergeOptions> = {};
  let models = f.model ?? [];
  let filterWise = f.filterWise ?? false;
  let outDtype = f.outDtype !== undefined ? parseDtypeName(f.outDtype, '--out-dtype') : undefined;
  let out = f.out;
  if (config !== undefined) {
    const c = readMergekitYaml(config);
    if (base !== undefined || models.length > 0) {
      throw new UsageError('give either CONFIG.yml or --base/--model, not both');
    }
    base = c.base;
    models = c.models;
    filterWise = f.filterWise ?? c.filterWise;
    outDtype ??= c.outDtype;
    fromConfig = {
      tokenizerSource: c.tokenizerSource,
      chatTemplate: c.chatTemplate,
      layerRanges: c.layerRanges,
    };
    for (const w of c.warnings) onWarning(`${config}: ${w}`);
    if (outArg !== undefined && out !== undefined)
      throw new UsageError('give OUT either as an argument or --out');
    out = outArg ?? out;
  } else if (outArg !== undefined) {
    throw new UsageError(`unexpected argument "${outArg}"`);
  }
  if (base === undefined) throw new UsageError('missing --base DIR (or a CONFIG.yml)');
  if (models.length < 2 && config !== undefined) {
    throw new ModelStockError(
      'TOO_FEW_MODELS',
      `Model Stock needs at least 2 fine-tuned models besides the base, the config lists ${models.length}`,
      { file: config },
    );
  }
  if (models.length < 2)
    throw new UsageError(`need at least 2 fine-tuned models (--model DIR --model DIR), got ${models.length}`);
  if (out === undefined) throw new UsageError('missing --out DIR (or OUT after CONFIG.yml)');
  return {
    base,
    models,
    out,
    filterWise,
    theta: f.theta,
    outDtype,
    shardSize: f.shardSize,
    overwrite: f.overwrite ?? false,
    backend: f.backend,
    memory: f.memory,
    io: f.io,
    threads: f.threads,
    fsync: f.fsync,
    writeMode: f.writeMode,
    report: f.report,
    ...fromConfig,
  };
}

async function runMerge(
  config: string | undefined,
  outArg: string | undefined,
  f: MergeFlags,
): Promise<void> {
  const printWarning = (m: string): void => {
    if (!f.quiet) process.stderr.write(`warning: ${escapeControl(m)}\n`);
  };
  // Config warnings come first, before any download or merge work.
  const options = resolveMerge(config, outArg, f, printWarning);
  const tty = !f.quiet && process.stderr.isTTY === true;
  const bar = new ProgressBar(tty);
  const downloads = new DownloadProgressView(f.quiet ? 'off' : tty ? 'bar' : 'lines');
  const warnings: string[] = [];
  const interrupt = interruptOnSignals('the merge', () => {
    downloads.stop();
    bar.stop();
  });
  const report = await mergeModelStock({
    ...options,
    signal: interrupt.signal,
    hub: { onProgress: (p) => downloads.update(p), onWarning: printWarning },
    onProgress: (p) => {
      downloads.stop();
      bar.update(p);
    },
    onWarning: (m) => warnings.push(m),
  }).finally(() => {
    interrupt.dispose();
    downloads.stop();
    bar.stop();
  });
  if (f.quiet) return;
  for (const w of warnings) process.stderr.write(`warning: ${escapeControl(w)}\n`);
  const merged = report.tensors.filter((t) => t.action === 'merge').length;
  const copied = report.tensors.filter((t) => t.action === 'copy').length;
  const rate = report.bytesRead / report.seconds / 1e9;
  process.stdout.write(
    `merged ${merged} tensors (${copied} copied from the base) into ${escapeControl(report.out)}: ` +
      `${formatBytes(report.bytesRead)} read, ${formatBytes(report.bytesWritten)} written in ` +
      `${report.seconds.toFixed(2)} s (${rate.toFixed(2)} GB/s, ${report.backend.name} backend, ${report.backend.isa}, ${report.write.mode} writes)\n`,
  );
}

export function buildProgram(): Command {
  const program = new Command('model-stock')
    .description(
      'Model Stock (Jang, Yun, Han, ECCV 2024): merge fine-tuned safetensors checkpoints of one base model',
    )
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  program
    .command('merge')
    .summary('merge N ≥ 2 fine-tunes into their base')
    .description(
      'Merge fine-tuned models with Model Stock, from flags or from a mergekit YAML (merge_method: model_stock).\n' +
        'The output is written to a temporary folder beside OUT and renamed into place when complete.',
    )
    .argument('[config]', 'mergekit YAML with merge_method: model_stock')
    .argument('[out]', 'output folder (with CONFIG)')
    .option(
      '--base <model>',
      'base (pre-trained) model: folder, .safetensors file or Hub ID org/name[@revision]',
    )
    .option('--model <model>', 'fine-tuned model, as --base (repeat, at least twice)', collect)
    .option('--out <dir>', 'output folder')
    .option('--filter-wise', 'one ratio per output row instead of per tensor')
    .addOption(
      new Option('--theta <rule>', 'how pairwise cosines combine (N > 2)')
        .choices(['mean-cos', 'mean-angle'])
        .default('mean-cos'),
    )
    .option(
      '--out-dtype <dtype>',
      "dtype of merged tensors: bfloat16, float16, float32, float64 (default: the base's)",
    )
    .option('--shard-size <size>', 'largest output shard, e.g. 5GB, 2GiB (default 5GB)', sizeArg)
    .option('--report <file>', 'also write the per-tensor JSON report here')
    .option('--overwrite', 'replace OUT if it exists (only an empty folder or an earlier merge)')
    .addOption(
      new Option('--backend <name>', 'compute backend')
        .choices(['auto', 'js', 'native', 'cuda'])
        .default('auto'),
    )
    .option('--memory <size>', 'memory budget for tensor buffers (default 1GiB)', sizeArg)
    .addOption(
      new Option(
        '--io <mode>',
        'how inputs are read: mmap (zero-copy), pread (native), fs (Node); auto = mmap when the addon loads',
      )
        .choices([...IO_MODES])
        .default('auto'),
    )
    .option('--threads <n>', 'native worker threads (default: all cores)', intArg)
    .option('--no-fsync', 'do not fsync the output before renaming it into place')
    .addOption(
      new Option(
        '--write-mode <mode>',
        'how the output reaches the disk, dirty data bounded in each: direct (O_DIRECT), rolling (rolling writeback), plain (periodic fdatasync), node (no addon); auto = direct when the addon loads',
      )
        .choices([...WRITE_MODES])
        .default('auto'),
    )
    .option('-q, --quiet', 'no progress bar, warnings or summary')
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  model-stock merge --base llama --model ft-a --model ft-b --out merged\n' +
        '  model-stock merge config.yml merged --out-dtype bfloat16\n' +
        '  model-stock merge --base mistralai/Mistral-7B-v0.1 --model org/ft-a --model org/ft-b@v2 --out merged\n' +
        '\nHub IDs resolve through the Hugging Face cache (HF_HUB_CACHE, HF_HOME, ~/.cache/huggingface/hub) and are\n' +
        'downloaded when missing (HF_TOKEN for gated models, HF_ENDPOINT); HF_HUB_OFFLINE=1 uses the cache only.\n' +
        '\nExit codes: 0 success, 1 failure (first stderr line names the problem), 2 bad usage.',
    )
    .action(runMerge);

  program
    .command('doctor')
    .description('print the backend auto selects, the SIMD instruction set, threads and CUDA support')
    .action(doctor);

  return program;
}

export async function main(argv: readonly string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv as string[], { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version exit 0; commander has already printed its message.
      return e.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    if (e instanceof UsageError) {
      process.stderr.write(`model-stock: ${e.message}\n(run with --help for usage)\n`);
      return EXIT_USAGE;
    }
    const interrupted = interruptedBy();
    if (isModelStockError(e) && e.code === 'CANCELLED' && interrupted !== undefined) {
      process.stderr.write(`model-stock: cancelled (${interrupted}); nothing was written\n`);
      return exitCodeFor(interrupted);
    }
    if (isModelStockError(e)) {
      process.stderr.write(`model-stock: error [${e.code}]: ${e.message}\n`);
    } else {
      process.stderr.write(`model-stock: error: ${escapeControl((e as Error)?.message ?? String(e))}\n`);
      if (process.env.MODEL_STOCK_DEBUG) process.stderr.write(`${(e as Error)?.stack}\n`);
    }
    return EXIT_FAILURE;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
