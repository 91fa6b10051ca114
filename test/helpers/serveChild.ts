/**
 * A merge service in a child process, for what a test cannot do to its own process: SIGKILL it at a
 * named moment of a job (crash safety), or count its descriptors and mappings over many merges (soak).
 * Run as `node serveChild.js '<json ChildConfig>'`; it sends {ready: port} over IPC, answers 'stats'
 * with its descriptors, mappings and memory after a full collection, writes a heap snapshot when sent
 * {snapshot: FILE}, and on SIGTERM closes the server and exits 0.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as v8 from 'node:v8';
import type { ProbePoint } from '../../lib/serve/jobs';
import { createServer } from '../../lib/serve/server';
import { TOKEN } from './serve';

export interface ChildConfig {
  /** Default 0: a free port. */
  readonly port?: number;
  readonly models: string;
  readonly out: string;
  readonly state: string;
  readonly memory?: number;
  readonly concurrency?: number;
  /** Request logs at info level into this file, as `model-stock serve` writes them (default: none). */
  readonly logFile?: string;
  /** Skip the full collection before 'stats' (what RSS does on its own). */
  readonly noGc?: boolean;
  /** SIGKILL itself the n-th time the server reaches `point`. */
  readonly crashAt?: { readonly point: ProbePoint; readonly n: number };
}

export interface ChildStats {
  /** Open descriptors (/proc/self/fd). */
  readonly fds: number;
  /** Lines of /proc/self/maps. */
  readonly maps: number;
  /** Of those, mappings of files (a path in the last field): what an unreleased mmap leaves. */
  readonly fileMaps: number;
  /** Mappings of files under the models root (inputs still mapped). */
  readonly inputMaps: number;
  /** V8's live heap after a full collection (bytes). */
  readonly heapUsed: number;
  /** V8's heap as reserved from the system (bytes). */
  readonly heapTotal: number;
  /** Memory of JS-owned objects outside the heap: Buffers, ArrayBuffers, the addon's (bytes). */
  readonly external: number;
  readonly arrayBuffers: number;
  readonly rss: number;
  /** Of the RSS, anonymous memory (smaps_rollup: heaps, malloc arenas, stacks) and file pages (bytes). */
  readonly rssAnon: number;
  readonly rssFile: number;
  /** Code V8 compiled (bytes; heap statistics). */
  readonly codeBytes: number;
}

export interface ServeChild {
  readonly port: number;
  readonly child: ChildProcess;
  /** How the process ended. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stats(): Promise<ChildStats>;
  /** Writes a heap snapshot of the server's process to `file` (after a full collection). */
  snapshot(file: string): Promise<void>;
  /** SIGTERM, then its exit. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts the child and waits until it listens (or dies first). */
export function startServeChild(config: ChildConfig): Promise<ServeChild> {
  const child = spawn(process.execPath, ['--expose-gc', __filename, JSON.stringify(config)], {
    stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return new Promise((resolve, reject) => {
    const onMessage = (m: { ready?: number }): void => {
      if (m.ready === undefined) return;
      child.off('message', onMessage);
      const port = m.ready;
      resolve({
        port,
        child,
        exited,
        stats: () =>
          new Promise((res) => {
            const onStats = (s: { stats?: ChildStats }): void => {
              if (s.stats === undefined) return;
              child.off('message', onStats);
              res(s.stats);
            };
            child.on('message', onStats);
            child.send('stats');
          }),
        snapshot: (file) =>
          new Promise((res) => {
            const onDone = (s: { snapshot?: string }): void => {
              if (s.snapshot !== file) return;
              child.off('message', onDone);
              res();
            };
            child.on('message', onDone);
            child.send({ snapshot: file });
          }),
        stop: () => {
          child.kill('SIGTERM');
          return exited;
        },
      });
    };
    child.on('message', onMessage);
    void exited.then(({ code, signal }) =>
      reject(new Error(`the serve child exited before listening (${code ?? signal}): ${stderr}`)),
    );
  });
}

async function main(config: ChildConfig): Promise<void> {
  let hits = 0;
  const server = await createServer({
    port: config.port ?? 0,
    models: [config.models],
    out: config.out,
    state: config.state,
    token: TOKEN,
    memory: config.memory,
    concurrency: config.concurrency ?? 1,
    log:
      config.logFile === undefined
        ? { level: 'silent' }
        : { level: 'info', stream: fs.createWriteStream(config.logFile, { flags: 'a' }) },
    probe: (point) => {
      if (config.crashAt?.point === point && ++hits === config.crashAt.n)
        process.kill(process.pid, 'SIGKILL');
    },
  });
  process.on('message', (m: string | { snapshot?: string }) => {
    if (typeof m === 'object' && m.snapshot !== undefined) {
      v8.writeHeapSnapshot(m.snapshot);
      process.send!({ snapshot: m.snapshot });
      return;
    }
    if (m !== 'stats') return;
    if (config.noGc !== true) (globalThis as { gc?: () => void }).gc?.();
    const maps = fs.readFileSync('/proc/self/maps', 'utf8').trimEnd().split('\n');
    const rollup = fs.readFileSync('/proc/self/smaps_rollup', 'utf8');
    const kb = (field: string): number =>
      Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? 0) * 1024;
    const memory = process.memoryUsage();
    const heap = v8.getHeapCodeStatistics();
    process.send!({
      stats: {
        fds: fs.readdirSync('/proc/self/fd').length,
        maps: maps.length,
        fileMaps: maps.filter((l) => /^\S+ \S+ \S+ \S+ \S+\s+\//.test(l)).length,
        inputMaps: maps.filter((l) => l.includes(config.models)).length,
        heapUsed: memory.heapUsed,
        heapTotal: memory.heapTotal,
        external: memory.external,
        arrayBuffers: memory.arrayBuffers,
        rss: memory.rss,
        rssAnon: kb('Anonymous'),
        rssFile: kb('Rss') - kb('Anonymous'),
        codeBytes: heap.code_and_metadata_size + heap.bytecode_and_metadata_size,
      } satisfies ChildStats,
    });
  });
  process.once('SIGTERM', () => {
    void server.close('interrupted by SIGTERM').then(() => process.disconnect());
  });
  process.send!({ ready: server.port });
}

if (require.main === module) {
  main(JSON.parse(process.argv[2]!) as ChildConfig).catch((e: unknown) => {
    process.stderr.write(`${(e as Error).stack}\n`);
    process.exit(1);
  });
}
