#!/usr/bin/env node
import { Command, CommanderError, Option } from 'commander';
import { parseDtypeName } from '../config/mergekit';
import { escapeControl, isModelStockError } from '../errors';
import { mergeModelStock } from '../merge';
import { OUT_FORMATS, type MergeOptions, type OutFormat } from '../types';
import { WRITE_MODES, type WriteMode } from '../safetensors/shardFile';
import { doctor } from './doctor';
import { profileLine, readsSummary } from './profile';
import {
  addComputeOptions,
  addInputOptions,
  HUB_HELP,
  resolveInputs,
  sizeArg,
  UsageError,
  withTerminal,
  type InputFlags,
} from './inputs';
import { runInspect } from './inspect';
import { plot } from './plot';
import { addServeCommand } from './serve';
import { exitCodeFor, interruptedBy } from './signals';
import { formatBytes } from './size';
import { groupedWarningLines } from '../report/warnings';

/** Exit codes: 0 success, 1 the command failed, 2 bad usage (130/143: interrupted, signals.ts). */
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

interface MergeFlags extends InputFlags {
  out?: string;
  outFormat?: OutFormat;
  outDtype?: string;
  shardSize?: number;
  report?: string;
  overwrite?: boolean;
  fsync: boolean;
  writeMode: WriteMode;
}

function resolveMerge(
  config: string | undefined,
  outArg: string | undefined,
  f: MergeFlags,
  onWarning: (m: string) => void,
): MergeOptions {
  const { options, yaml } = resolveInputs(config, f, onWarning);
  let outDtype = f.outDtype !== undefined ? parseDtypeName(f.outDtype, '--out-dtype') : undefined;
  let out = f.out;
  let outFormat = f.outFormat;
  if (yaml !== undefined) {
    outDtype ??= yaml.outDtype;
    outFormat ??= yaml.outFormat;
    if (outArg !== undefined && out !== undefined)
      throw new UsageError('give OUT either as an argument or --out');
    out = outArg ?? out;
  } else if (outArg !== undefined) {
    throw new UsageError(`unexpected argument "${outArg}"`);
  }
  if (out === undefined) throw new UsageError('missing --out DIR (or OUT after CONFIG.yml)');
  return {
    ...options,
    out,
    outFormat: outFormat ?? 'model',
    outDtype,
    shardSize: f.shardSize,
    overwrite: f.overwrite ?? false,
    fsync: f.fsync,
    writeMode: f.writeMode,
    report: f.report,
    ...(yaml !== undefined ? { tokenizerSource: yaml.tokenizerSource, chatTemplate: yaml.chatTemplate } : {}),
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
  const warnings: string[] = [];
  const report = await withTerminal(
    'the merge',
    "a hidden staging folder (.OUT.partial-*) may remain in OUT's parent folder; the next merge to OUT removes it",
    f.quiet,
    printWarning,
    (hooks) => mergeModelStock({ ...options, ...hooks, onWarning: (m) => warnings.push(m) }),
  );
  if (f.quiet) return;
  // One line per kind of warning (the report keeps each one).
  for (const w of groupedWarningLines(warnings)) process.stderr.write(`warning: ${escapeControl(w)}\n`);
  const merged = report.tensors.filter((t) => t.action === 'merge').length;
  const copied = report.tensors.filter((t) => t.action === 'copy').length;
  const rate = report.bytesRead / report.seconds / 1e9;
  process.stdout.write(
    (report.outFormat === 'peft'
      ? `merged ${merged} tensors into the LoRA adapter ${escapeControl(report.out)} (${copied} left to the base): `
      : `merged ${merged} tensors (${copied} copied from the base) into ${escapeControl(report.out)}: `) +
      `${formatBytes(report.bytesRead)} read, ${formatBytes(report.bytesWritten)} written in ` +
      `${report.seconds.toFixed(2)} s (${rate.toFixed(2)} GB/s, ${report.backend.name} backend, ${report.backend.isa}, ` +
      `${readsSummary(report.inputs)}, ${report.write.mode} writes)\n`,
  );
  if (f.profile) process.stdout.write(profileLine(report) ?? '');
}

export function buildProgram(): Command {
  const program = new Command('model-stock')
    .description(
      'Model Stock (Jang, Yun, Han, ECCV 2024): merge fine-tuned checkpoints (safetensors, PyTorch) of one base model',
    )
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  const merge = program
    .command('merge')
    .summary('merge N ≥ 2 fine-tunes into their base')
    .description(
      'Merge fine-tuned models with Model Stock, from flags or from a mergekit YAML (merge_method: model_stock).\n' +
        'The output is written to a temporary folder beside OUT and renamed into place when complete.',
    )
    .argument('[config]', 'mergekit YAML with merge_method: model_stock')
    .argument('[out]', 'output folder (with CONFIG)');
  addInputOptions(merge)
    .option('--out <dir>', 'output folder')
    .addOption(
      new Option(
        '--out-format <format>',
        'model (default): the merged model; peft: when every model is a LoRA adapter of the base, the merge as one LoRA adapter (exact, megabytes)',
      ).choices([...OUT_FORMATS]),
    )
    .option(
      '--out-dtype <dtype>',
      "dtype of merged tensors: bfloat16, float16, float32, float64 (default: the base's)",
    )
    .option('--shard-size <size>', 'largest output shard, e.g. 5GB, 2GiB (default 5GB)', sizeArg)
    .option('--report <file>', 'also write the per-tensor JSON report here')
    .option('--overwrite', 'replace OUT if it exists (only an empty folder or an earlier merge)');
  addComputeOptions(merge)
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
        '  model-stock merge --base llama --model lora-a --model lora-b --out-format peft --out merged-lora\n' +
        '  model-stock merge --base mistralai/Mistral-7B-v0.1 --model org/ft-a --model org/ft-b@v2 --out merged\n' +
        HUB_HELP +
        '\nExit codes: 0 success, 1 failure (first stderr line names the problem), 2 bad usage,\n' +
        '130/143 interrupted by SIGINT/SIGTERM (nothing left behind).',
    )
    .action(runMerge);

  const inspect = program
    .command('inspect')
    .summary('the angles and ratios a merge would use, without merging')
    .description(
      'Run the Gram pass of the merge the same inputs would run (reads every input once, writes no weights) and ' +
        'print per layer and tensor kind the angle between task vectors (degrees), c and t, each min / mean / max ' +
        '(over tensors, pairs and, filter-wise, rows).',
    )
    .argument('[config]', 'mergekit YAML with merge_method: model_stock');
  addInputOptions(inspect)
    .option('--json', "print the report's JSON (docs/report.schema.json) instead of the table")
    .option('--report <file>', "also write the report's JSON here")
    .option('--svg <file>', 'also draw the picture a merge writes (model_stock_report.svg) here')
    .option(
      '--overwrite',
      'replace an existing --svg/--report file (an earlier picture or report is replaced without it)',
    );
  addComputeOptions(inspect)
    .option('-q, --quiet', 'no progress bar, warnings or table')
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  model-stock inspect --base llama --model ft-a --model ft-b\n' +
        '  model-stock inspect config.yml --filter-wise --svg preview.svg\n' +
        '  model-stock inspect --base llama --model ft-a --model ft-b --json > report.json\n' +
        HUB_HELP +
        '\nExit codes: 0 success, 1 failure (first stderr line names the problem), 2 bad usage,\n' +
        '130/143 interrupted by SIGINT/SIGTERM.',
    )
    .action(runInspect);

  program
    .command('plot')
    .summary('draw a merge report as SVG')
    .description(
      'Draw t per layer and tensor kind and the angle between task vectors per layer from a report ' +
        '(model_stock_report.json of a merge, or inspect --report), as a merge does into model_stock_report.svg.',
    )
    .argument('<report>', 'model_stock_report.json of a merge, or the JSON of inspect')
    .requiredOption('-o, --out <file>', 'SVG file to write')
    .option('--overwrite', 'replace the output file if it exists')
    .action(plot);

  addServeCommand(program);

  program
    .command('doctor')
    .summary('what this machine merges with; with FOLDER, whether its file system takes O_DIRECT')
    .description(
      'print the backend auto selects, the SIMD instruction set, threads and CUDA support; with FOLDER, ' +
        'whether its file system takes O_DIRECT (--io direct reads, direct writes) and how much of it is cached',
    )
    .argument('[folder]', 'a model folder, or where outputs go')
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
