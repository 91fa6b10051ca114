import { InvalidArgumentError, Option, type Command } from 'commander';
import { readMergekitYaml, type MergekitConfig } from '../config/mergekit';
import { ModelStockError } from '../errors';
import { IO_MODES, type IoMode } from '../engine/io';
import type { ThetaRule } from '../math/ratio';
import type { BackendChoice, InspectOptions, MergeProgress } from '../types';
import type { HubOptions } from '../hub/settings';
import { DownloadProgressView } from './download';
import { ProgressBar } from './progress';
import { interruptOnSignals } from './signals';
import { parseSize } from './size';

/**
 * What `merge` and `inspect` share: the inputs (flags or a mergekit YAML) and how they are computed.
 * One definition, so the two commands read the same models the same way and `inspect` previews exactly
 * the merge the same flags would run.
 */

/** A command line that cannot be run as given: exit 2, with the usage hint. */
export class UsageError extends Error {}

export const sizeArg = (v: string): number => {
  try {
    return parseSize(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
};
export const intArg = (v: string): number => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(`"${v}" is not a positive integer`);
  return n;
};
const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

export interface InputFlags {
  base?: string;
  model?: string[];
  filterWise?: boolean;
  stateDictKey?: string;
  theta: ThetaRule;
  backend: BackendChoice;
  memory?: number;
  io: IoMode;
  ioDepth?: number;
  threads?: number;
  profile?: boolean;
  quiet?: boolean;
}

/** The input options (models, filter-wise, theta). */
export function addInputOptions(cmd: Command): Command {
  return cmd
    .option(
      '--base <model>',
      'base (pre-trained) model: folder, weight file (.safetensors, .bin, .pt, .pth, .ckpt) or Hub ID org/name[@revision]',
    )
    .option(
      '--model <model>',
      'fine-tuned model, as --base, or a PEFT LoRA adapter (its folder or Hub ID; MODEL+ADAPTER applies it to another model) (repeat, at least twice)',
      collect,
    )
    .option('--filter-wise', 'one ratio per output row instead of per tensor')
    .option(
      '--state-dict-key <key>',
      'PyTorch inputs: the entry holding the weights, e.g. state_dict_ema (default: the top level, else state_dict, model_state_dict, model, module)',
    )
    .addOption(
      new Option('--theta <rule>', 'how pairwise cosines combine (N > 2)')
        .choices(['mean-cos', 'mean-angle'])
        .default('mean-cos'),
    );
}

/** How the work is computed: backend, memory, reads, threads; and -q. */
export function addComputeOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option('--backend <name>', 'compute backend')
        .choices(['auto', 'js', 'native', 'cuda'])
        .default('auto'),
    )
    .option('--memory <size>', 'memory budget for tensor buffers (default 1GiB)', sizeArg)
    .addOption(
      new Option(
        '--io <mode>',
        'how inputs are read: mmap (zero-copy views), direct (O_DIRECT, no page cache), pread (buffered), fs (Node); ' +
          'auto = per input: direct when less than half of it is in the page cache, else mmap',
      )
        .choices([...IO_MODES])
        .default('auto'),
    )
    .option('--io-depth <n>', 'direct and pread reads in flight per input, 4 MiB each (default 4)', intArg)
    .option('--threads <n>', 'native worker threads (default: all cores)', intArg)
    .option('--profile', 'also print where the time went: reading, computing, writing, and the waits');
}

export const HUB_HELP =
  '\nHub IDs resolve through the Hugging Face cache (HF_HUB_CACHE, HF_HOME, ~/.cache/huggingface/hub) and are\n' +
  'downloaded when missing (HF_TOKEN for gated models, HF_ENDPOINT); HF_HUB_OFFLINE=1 uses the cache only.\n';

/** The inputs from the flags or from `config` (never both), checked for what usage alone can tell. */
export function resolveInputs(
  config: string | undefined,
  f: InputFlags,
  onWarning: (m: string) => void,
): { options: InspectOptions; yaml: MergekitConfig | undefined } {
  let base = f.base;
  let models = f.model ?? [];
  let filterWise = f.filterWise ?? false;
  let stateDictKey = f.stateDictKey;
  let yaml: MergekitConfig | undefined;
  if (config !== undefined) {
    yaml = readMergekitYaml(config);
    if (base !== undefined || models.length > 0) {
      throw new UsageError('give either CONFIG.yml or --base/--model, not both');
    }
    base = yaml.base;
    models = yaml.models;
    filterWise = f.filterWise ?? yaml.filterWise;
    stateDictKey ??= yaml.stateDictKey;
    for (const w of yaml.warnings) onWarning(`${config}: ${w}`);
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
  return {
    options: {
      base,
      models,
      filterWise,
      ...(stateDictKey !== undefined ? { stateDictKey } : {}),
      theta: f.theta,
      backend: f.backend,
      memory: f.memory,
      io: f.io,
      ioQueueDepth: f.ioDepth,
      threads: f.threads,
      ...(yaml?.layerRanges !== undefined ? { layerRanges: yaml.layerRanges } : {}),
    },
    yaml,
  };
}

/** What a command's run gets from `withTerminal`: its signal, and where progress goes. */
export interface TerminalHooks {
  readonly signal: AbortSignal;
  readonly hub: HubOptions;
  readonly onProgress: (p: MergeProgress) => void;
}

/**
 * Runs `work` with a progress bar (on a terminal, unless quiet), download progress, and SIGINT/SIGTERM
 * cancelling it (signals.ts); the bars are stopped and the handlers removed however it ends.
 */
export async function withTerminal<T>(
  what: string,
  /** What exiting at once on a second signal may leave behind (signals.ts). */
  leftover: string,
  quiet: boolean | undefined,
  printWarning: (m: string) => void,
  work: (hooks: TerminalHooks) => Promise<T>,
): Promise<T> {
  const tty = !quiet && process.stderr.isTTY === true;
  const bar = new ProgressBar(tty);
  const downloads = new DownloadProgressView(quiet ? 'off' : tty ? 'bar' : 'lines');
  const interrupt = interruptOnSignals(
    what,
    () => {
      downloads.stop();
      bar.stop();
    },
    leftover,
  );
  return work({
    signal: interrupt.signal,
    hub: { onProgress: (p) => downloads.update(p), onWarning: printWarning },
    onProgress: (p) => {
      downloads.stop();
      bar.update(p);
    },
  }).finally(() => {
    interrupt.dispose();
    downloads.stop();
    bar.stop();
  });
}
