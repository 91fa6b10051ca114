import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { escapeControl } from '../errors';
import { randomToken, isLoopbackHost } from '../serve/security';
import { DEFAULT_CONCURRENCY, DEFAULT_QUEUE } from '../serve/defaults';
import { ServeSetupError } from '../serve/errors';
import { intArg, sizeArg, UsageError } from './inputs';
import { exitCodeFor } from './signals';

/**
 * `model-stock serve`: the command line of the merge service (lib/serve). Prints the URL to open with
 * its token, runs until SIGINT/SIGTERM, then cancels the running jobs (they become `interrupted`),
 * closes the store and exits 0; a second signal exits at once.
 */

export const DEFAULT_PORT = 8700;
/** A token from a file shorter than this is refused: it could be guessed. */
export const MIN_TOKEN_LENGTH = 16;

interface ServeFlags {
  host: string;
  port: number;
  models: string[];
  out: string;
  state?: string;
  tokenFile?: string;
  token: boolean;
  allowedHost?: string[];
  concurrency: number;
  queue: number;
  memory?: number;
  hub?: boolean;
  logLevel: string;
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];
const portArg = (v: string): number => {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 65535) throw new InvalidArgumentError(`"${v}" is not a port (0–65535)`);
  return n;
};

/** $XDG_STATE_HOME/model-stock, else ~/.local/state/model-stock. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_STATE_HOME?.trim() || path.join(os.homedir(), '.local', 'state');
  return path.join(base, 'model-stock');
}

/** The token file's first line, trimmed. */
export function readTokenFile(file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ServeSetupError(`cannot read the token file ${file}: ${(e as Error).message}`);
  }
  const token = (text.split(/\r?\n/, 1)[0] ?? '').trim();
  if (token.length < MIN_TOKEN_LENGTH)
    throw new ServeSetupError(
      `the token file ${file} must hold a token of at least ${MIN_TOKEN_LENGTH} characters on its first line`,
    );
  return token;
}

export function addServeCommand(program: Command): void {
  program
    .command('serve')
    .summary('a merge service: HTTP API, durable jobs, live progress, cancel')
    .description(
      'Serve merges and inspections over HTTP to whoever holds the token. Models are read only from the ' +
        '--models folders (relative references resolve against them in order); merges write only into --out, ' +
        'under a name each. Jobs are kept in SQLite in --state and survive restarts. Prints the URL to open, ' +
        'token included.',
    )
    .requiredOption('--models <dir>', 'a folder of models jobs may read (repeat; searched in order)', collect)
    .requiredOption('--out <dir>', 'the folder merges write their outputs into')
    .option('--host <address>', 'address to bind (a non-loopback one needs --token-file)', '127.0.0.1')
    .option('--port <n>', `port (0 picks a free one)`, portArg, DEFAULT_PORT)
    .option('--state <dir>', 'the job store, locked while serving (default: $XDG_STATE_HOME/model-stock)')
    .option('--token-file <file>', "the token: this file's first line (default: a random token, printed)")
    .option('--no-token', 'no token at all (loopback hosts only)')
    .option(
      '--allowed-host <name>',
      'also accept this Host header (a reverse proxy’s name, name:port), and its https:// Origin (repeat)',
      collect,
    )
    .option('--concurrency <n>', 'jobs run at once', intArg, DEFAULT_CONCURRENCY)
    .option(
      '--queue <n>',
      'queued jobs at most (running ones not counted); more get 429',
      intArg,
      DEFAULT_QUEUE,
    )
    .option('--memory <size>', "each job's budget for tensor buffers (default 1GiB)", sizeArg)
    .option('--hub', 'accept Hugging Face Hub IDs for references not found under --models')
    .addOption(
      new Option('--log-level <level>', 'request log level (JSON lines on stderr)')
        .choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
        .default('info'),
    )
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  model-stock serve --models ~/models --out ~/merged\n' +
        '  model-stock serve --models /srv/models --models /srv/hf --out /srv/merged --hub --port 0\n' +
        '  model-stock serve --host 0.0.0.0 --token-file /etc/model-stock/token --allowed-host merge.example.com ...\n' +
        "\nThe API, the security model and what it does not cover (TLS: use a reverse proxy; the server's\n" +
        'HF_TOKEN is used for everyone holding the token): docs/serve.md.\n' +
        'Environment: MODEL_STOCK_SQLITE_BINDING=path/to/better_sqlite3.node loads that SQLite binding.\n' +
        '\nExit codes: 0 stopped by SIGINT/SIGTERM (running jobs cancelled and marked interrupted), 1 cannot\n' +
        'serve (the reason on stderr: the state folder in use, SQLite unavailable, a root missing), 2 bad usage.',
    )
    .action(runServe);
}

async function runServe(f: ServeFlags): Promise<void> {
  if (f.tokenFile !== undefined && !f.token)
    throw new UsageError('give --token-file or --no-token, not both');
  if (!f.token && !isLoopbackHost(f.host))
    throw new UsageError(
      `--no-token is allowed only on a loopback host (127.0.0.1, ::1, localhost), not ${f.host}`,
    );
  if (f.token && f.tokenFile === undefined && !isLoopbackHost(f.host))
    throw new UsageError(`a non-loopback --host (${f.host}) needs --token-file: a token you chose and keep`);
  // Setup failures (a root missing, the state folder in use, SQLite unavailable) exit 1 with their message.
  const token = !f.token ? undefined : f.tokenFile !== undefined ? readTokenFile(f.tokenFile) : randomToken();
  if (f.tokenFile !== undefined && (fs.statSync(f.tokenFile).mode & 0o077) !== 0)
    process.stderr.write(`model-stock serve: warning: ${f.tokenFile} is readable by other users\n`);
  // Loaded only here: fastify and SQLite are for `serve`, not for every command's start-up.
  const { createServer } = await import('../serve/server');
  const server = await createServer({
    host: f.host,
    port: f.port,
    models: f.models,
    out: f.out,
    state: f.state ?? defaultStateDir(),
    token,
    allowedHosts: f.allowedHost ?? [],
    concurrency: f.concurrency,
    queue: f.queue,
    memory: f.memory,
    hub: f.hub ?? false,
    log: { level: f.logLevel },
    sqliteBinding: process.env.MODEL_STOCK_SQLITE_BINDING || undefined,
  });
  process.stdout.write(`model-stock serve: open ${server.openUrl}\n`);
  const s = server;
  await new Promise<void>((resolve) => {
    let stopping = false;
    const onSignal = (sig: NodeJS.Signals): void => {
      if (stopping) {
        process.stderr.write(`model-stock serve: ${sig} again: exiting now\n`);
        process.exit(exitCodeFor(sig));
      }
      stopping = true;
      process.stderr.write(
        `model-stock serve: ${sig}: stopping (running jobs are cancelled and marked interrupted)\n`,
      );
      s.close(`interrupted by ${sig}`).then(
        () => {
          for (const x of ['SIGINT', 'SIGTERM'] as const) process.off(x, onSignal);
          resolve();
        },
        (e: unknown) => {
          process.stderr.write(`model-stock serve: error while stopping: ${escapeControl(String(e))}\n`);
          process.exit(1);
        },
      );
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}
