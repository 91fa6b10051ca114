/**
 * `npm run bench:serve` (and part of `npm run bench`): `model-stock serve` over a long soak and under load,
 * each against a server in its own process (test/helpers/serveChild.ts), on loopback only.
 *
 * - **Soak**: `--merges` (default 100) merges of the example fixture, one after another, in one server
 *   process. After each (and a full collection in the server): its open descriptors (/proc/<pid>/fd), its
 *   mappings (/proc/<pid>/maps: all, files, inputs), RSS (anonymous and file pages), V8's heap, external
 *   memory and compiled code. The level is taken after the first `--warmup` merges; the verdict asks
 *   descriptors and file mappings to stay at it, all mappings within 96 of it, RSS within 15% and the
 *   live heap within 2 MiB of it, no input mapped and no staging folder left. Each output is removed once
 *   measured (the bench's own; the server never deletes one).
 * - **Load**: `--connections` (default 200) keep-alive connections are opened first; then bursts of as many
 *   requests at once — half `GET /api/health`, half `GET /api/jobs/:id` of the running job — each timed
 *   from its send to its full response, with no merge running (the floor), while a native merge runs and
 *   while a js merge runs (its arithmetic shares the event loop, in slices). Only bursts during which the
 *   job stayed `running` count. Target: p99 ≤ 50 ms.
 *
 *   node dist/bench/serve.js [--merges N] [--warmup N] [--connections N] [--bursts N] [--only soak|load]
 *                            [--scratch DIR]
 *
 * On a shared machine the figures are indicative: the load average is printed with them.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { ensureFixture, PRESETS } from '../lib/fixtures/generate';
import { request, stagingLeft, TOKEN, waitForJob } from '../test/helpers/serve';
import { startServeChild, type ChildStats, type ServeChild } from '../test/helpers/serveChild';
import { fixed, formatTable, median } from './util';

const MiB = 2 ** 20;
/** Untimed bursts before the load is measured: V8 compiles the request path's code. */
const WARMUP_BURSTS = 40;
/** Anonymous mappings V8 and malloc may add between two quiet moments (as the soak test allows). */
const MAPS_SLACK = 96;

const { values } = parseArgs({
  options: {
    merges: { type: 'string', default: '100' },
    warmup: { type: 'string', default: '10' },
    connections: { type: 'string', default: '200' },
    bursts: { type: 'string', default: '10' },
    only: { type: 'string' },
    scratch: { type: 'string', default: path.join(os.tmpdir(), 'model-stock-bench-serve') },
  },
});
const merges = Number(values.merges);
const warmup = Math.min(Number(values.warmup), merges - 1);
const connections = Number(values.connections);
const bursts = Number(values.bursts);
const scratch = values.scratch!;

interface Folders {
  readonly models: string;
  readonly out: string;
  readonly state: string;
}

const mergeBody = (out: string, backend?: string): Record<string, unknown> => ({
  kind: 'merge',
  options: {
    base: 'example/base',
    models: ['example/ft1', 'example/ft2'],
    out,
    ...(backend ? { backend } : {}),
  },
});

/** A fresh out and state folder beside the cached fixture. */
async function folders(name: string): Promise<Folders> {
  const models = path.join(scratch, 'models');
  await ensureFixture({ ...PRESETS.example, dir: path.join(models, 'example') });
  const out = path.join(scratch, `${name}-out`);
  const state = path.join(scratch, `${name}-state`);
  for (const d of [out, state]) fs.rmSync(d, { recursive: true, force: true });
  fs.mkdirSync(out, { recursive: true });
  return { models, out, state };
}

function machine(): string {
  const cpu = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? os.arch();
  const load = os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
  return `${cpu}, ${os.cpus().length} CPUs, Node ${process.version}; load average ${load}`;
}

/** The backend and ISA a finished job ran on (from its report). */
async function backendOf(port: number, id: string): Promise<string> {
  const r = (await request(port, 'GET', `/api/jobs/${id}/report`)).json;
  return r?.backend === undefined ? '?' : `${r.backend.name} ${r.backend.isa}, ${r.backend.threads} threads`;
}

// ---------------------------------------------------------------------------------------------- soak

async function soak(): Promise<boolean> {
  const f = await folders('soak');
  const server = await startServeChild({ ...f, concurrency: 1 });
  const rows: string[][] = [];
  const seen: ChildStats[] = [];
  const seconds: number[] = [];
  let backend = '?';
  try {
    for (let i = 0; i < merges; i++) {
      const start = performance.now();
      const created = await request(server.port, 'POST', '/api/jobs', { body: mergeBody(`soak-${i}`) });
      if (created.status !== 201) throw new Error(`merge ${i}: ${created.status} ${created.text}`);
      const job = await waitForJob(server.port, created.json.id, undefined, 600_000);
      if (job.state !== 'succeeded') throw new Error(`merge ${i}: ${job.state} ${JSON.stringify(job.error)}`);
      seconds.push((performance.now() - start) / 1000);
      if (i === 0) backend = await backendOf(server.port, created.json.id);
      const left = stagingLeft(f.out);
      if (left.length > 0) throw new Error(`merge ${i}: staging left: ${left.join(', ')}`);
      fs.rmSync(path.join(f.out, `soak-${i}`), { recursive: true });
      const s = await settled(server, seen[warmup]);
      if (s.inputMaps > 0) throw new Error(`merge ${i}: ${s.inputMaps} mappings of inputs left`);
      seen.push(s);
      if (i < 5 || (i + 1) % 10 === 0 || i === merges - 1) rows.push(soakRow(i + 1, s, seconds.at(-1)!));
    }
  } finally {
    await server.stop();
  }
  console.log(`Soak: ${merges} merges of the example fixture (3 × 54 MB bf16) in one server process`);
  console.log(`  ${machine()}; ${backend}`);
  console.log(
    `  merge time (submit → succeeded): median ${fixed(median(seconds))} s, ${fixed(Math.min(...seconds))}–${fixed(Math.max(...seconds))} s\n`,
  );
  console.log(
    formatTable(
      [
        'after merge',
        'fds',
        'maps',
        'file maps',
        'RSS MiB',
        'anon MiB',
        'file MiB',
        'heap MiB',
        'code MiB',
        'external MiB',
        's',
      ],
      rows,
    ),
  );
  return soakVerdict(seen);
}

/** Stats once the last response's connection has closed on the server's side too. */
async function settled(server: ServeChild, level: ChildStats | undefined): Promise<ChildStats> {
  let s = await server.stats();
  for (let i = 0; i < 50 && level !== undefined && s.fds > level.fds; i++) {
    await new Promise((r) => setTimeout(r, 20));
    s = await server.stats();
  }
  return s;
}

function soakRow(n: number, s: ChildStats, seconds: number): string[] {
  const mib = (b: number) => fixed(b / MiB, 1);
  return [
    String(n),
    String(s.fds),
    String(s.maps),
    String(s.fileMaps),
    mib(s.rss),
    mib(s.rssAnon),
    mib(s.rssFile),
    mib(s.heapUsed),
    mib(s.codeBytes),
    mib(s.external),
    fixed(seconds),
  ];
}

/** Growth per step of `ys` by least squares: a leak is a slope, noise is not. */
function leastSquaresSlope(ys: readonly number[]): number {
  const mx = (ys.length - 1) / 2;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  let num = 0;
  let den = 0;
  ys.forEach((y, x) => {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  });
  return den === 0 ? 0 : num / den;
}

function soakVerdict(seen: readonly ChildStats[]): boolean {
  const level = seen[warmup - 1]!;
  const after = seen.slice(warmup);
  const last = seen.at(-1)!;
  const max = (f: (s: ChildStats) => number) => Math.max(...after.map(f));
  const slope = leastSquaresSlope(after.map((s) => s.rss));
  const checks: [string, boolean, string][] = [
    ['descriptors at their level', max((s) => s.fds) <= level.fds, `${level.fds} → max ${max((s) => s.fds)}`],
    [
      'file mappings at their level',
      max((s) => s.fileMaps) <= level.fileMaps,
      `${level.fileMaps} → max ${max((s) => s.fileMaps)}`,
    ],
    [
      `all mappings within ${MAPS_SLACK}`,
      max((s) => s.maps) <= level.maps + MAPS_SLACK,
      `${level.maps} → max ${max((s) => s.maps)}`,
    ],
    [
      'RSS within 15%',
      max((s) => s.rss) <= level.rss * 1.15,
      `${fixed(level.rss / MiB, 1)} → max ${fixed(max((s) => s.rss) / MiB, 1)}, last ${fixed(last.rss / MiB, 1)} MiB; ${fixed(slope / 1024, 1)} KiB per merge`,
    ],
    [
      'live heap within 2 MiB',
      max((s) => s.heapUsed) <= level.heapUsed + 2 * MiB,
      `${fixed(level.heapUsed / MiB, 2)} → max ${fixed(max((s) => s.heapUsed) / MiB, 2)} MiB (compiled code ${fixed(level.codeBytes / MiB, 2)} → ${fixed(last.codeBytes / MiB, 2)})`,
    ],
  ];
  console.log(
    `\nAgainst the level after merge ${warmup} (no input mapped and no staging folder after any merge):`,
  );
  for (const [what, ok, detail] of checks) console.log(`  ${ok ? '✓' : '✗'} ${what}: ${detail}`);
  return checks.every(([, ok]) => ok);
}

// ---------------------------------------------------------------------------------------------- load

interface Timed {
  readonly ms: number;
  readonly reused: boolean;
  readonly state?: string;
}

/** One GET on the pooled connections, timed from its send to its full response. */
function timedGet(agent: http.Agent, port: number, route: string): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: route,
        agent,
        setHost: false,
        headers: { host: `127.0.0.1:${port}`, authorization: `Bearer ${TOKEN}` },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const ms = performance.now() - start;
          if (res.statusCode !== 200) return reject(new Error(`${route}: ${res.statusCode}`));
          const state = route.startsWith('/api/jobs/')
            ? (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { state: string }).state
            : undefined;
          resolve({ ms, reused: req.reusedSocket, ...(state !== undefined ? { state } : {}) });
        });
        res.on('error', reject);
      },
    );
    req.setTimeout(30_000, () => req.destroy(new Error(`${route}: no answer in 30 s`)));
    req.on('error', reject);
    req.end();
  });
}

const percentile = (sorted: readonly number[], p: number): number =>
  sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;

interface Scenario {
  readonly name: string;
  /** The backend of the merges kept running meanwhile; undefined: no merge. */
  readonly backend?: 'native' | 'js';
}

async function load(): Promise<boolean> {
  const f = await folders('load');
  // Request logs on, as `model-stock serve` runs by default (JSON lines, here into a file).
  const server = await startServeChild({ ...f, concurrency: 1, logFile: path.join(scratch, 'load.log') });
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections, maxFreeSockets: connections });
  const rows: string[][] = [];
  let ok = true;
  try {
    // The connections, opened before anything is timed; then the server's code warmed up (compiled), as
    // in a service that has run for a while.
    await Promise.all(Array.from({ length: connections }, () => timedGet(agent, server.port, '/api/health')));
    const open = Object.values(agent.freeSockets).reduce((n, list) => n + (list?.length ?? 0), 0);
    // A finished job for the floor's GETs (a running one's view is the same but for its progress).
    const first = await request(server.port, 'POST', '/api/jobs', { body: mergeBody('load-first') });
    await waitForJob(server.port, first.json.id, undefined, 600_000);
    const backend = await backendOf(server.port, first.json.id);
    for (let i = 0; i < WARMUP_BURSTS; i++)
      await Promise.all(
        Array.from({ length: connections }, (_, k) =>
          timedGet(agent, server.port, k % 2 === 0 ? '/api/health' : `/api/jobs/${first.json.id}`),
        ),
      );
    console.log(
      `Load: ${connections} keep-alive connections (${open} open before timing), ${bursts} bursts of ${connections} requests at once per scenario`,
    );
    console.log(`  ${machine()}; merges on ${backend}\n`);
    const scenarios: Scenario[] = [
      { name: 'no merge (floor)' },
      { name: 'native merge running', backend: 'native' },
      { name: 'js merge running', backend: 'js' },
    ];
    for (const sc of scenarios) {
      const result = await scenario(server, agent, sc, first.json.id as string, f.out);
      for (const [kind, samples] of Object.entries(result.samples)) {
        const sorted = samples.map((t) => t.ms).sort((a, b) => a - b);
        const p99 = percentile(sorted, 99);
        if (sc.backend !== undefined && p99 > 50) ok = false;
        rows.push([
          sc.name,
          kind,
          String(sorted.length),
          fixed(percentile(sorted, 50)),
          fixed(percentile(sorted, 90)),
          fixed(p99),
          fixed(sorted.at(-1)),
          `${samples.filter((t) => t.reused).length}/${samples.length}`,
          `${result.valid}/${result.tried}`,
          fixed(result.serverCpuMs, 3),
        ]);
      }
    }
  } finally {
    agent.destroy();
    await server.stop();
  }
  console.log(
    formatTable(
      [
        'scenario',
        'request',
        'n',
        'p50 ms',
        'p90 ms',
        'p99 ms',
        'max ms',
        'reused conn',
        'bursts',
        'server CPU ms/req',
      ],
      rows,
    ),
  );
  console.log(`\n  target: p99 ≤ 50 ms while a merge runs: ${ok ? '✓' : '✗'}`);
  return ok;
}

/** CPU seconds `pid` has used (user + system, all its threads). */
function cpuSeconds(pid: number): number {
  const fields = fs
    .readFileSync(`/proc/${pid}/stat`, 'utf8')
    .replace(/^.*\) /s, '')
    .split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function scenario(
  server: ServeChild,
  agent: http.Agent,
  sc: Scenario,
  finishedJob: string,
  out: string,
): Promise<{ samples: Record<string, Timed[]>; valid: number; tried: number; serverCpuMs: number }> {
  const samples: Record<string, Timed[]> = { '/api/health': [], 'GET /api/jobs/:id': [] };
  const submitted: string[] = [];
  let valid = 0;
  let tried = 0;
  let serverCpu = 0;
  try {
    const submit = async (): Promise<void> => {
      const r = await request(server.port, 'POST', '/api/jobs', {
        body: mergeBody(`load-${sc.backend}-${submitted.length}`, sc.backend),
      });
      if (r.status !== 201) throw new Error(`submit: ${r.status} ${r.text}`);
      submitted.push(r.json.id);
    };
    while (valid < bursts && tried < bursts * 4) {
      let id = finishedJob;
      if (sc.backend !== undefined) {
        // Keep a merge running: one queued behind the running one at all times.
        const states = await Promise.all(
          submitted.map(
            async (j) => [j, (await request(server.port, 'GET', `/api/jobs/${j}`)).json.state] as const,
          ),
        );
        const running = states.find(([, s]) => s === 'running')?.[0];
        if (states.filter(([, s]) => s === 'queued').length === 0 || running === undefined) await submit();
        if (running === undefined) {
          await new Promise((r) => setTimeout(r, 50));
          continue;
        }
        id = running;
      }
      tried++;
      const cpuBefore = cpuSeconds(server.child.pid!);
      const burst = await Promise.all(
        Array.from({ length: connections }, (_, i) =>
          i % 2 === 0
            ? timedGet(agent, server.port, '/api/health').then((t) => ['/api/health', t] as const)
            : timedGet(agent, server.port, `/api/jobs/${id}`).then((t) => ['GET /api/jobs/:id', t] as const),
        ),
      );
      // Counted only if the merge ran from the first answer to the last.
      if (sc.backend !== undefined && burst.some(([k, t]) => k !== '/api/health' && t.state !== 'running'))
        continue;
      valid++;
      serverCpu += cpuSeconds(server.child.pid!) - cpuBefore;
      for (const [k, t] of burst) samples[k]!.push(t);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    for (const j of submitted) await request(server.port, 'POST', `/api/jobs/${j}/cancel`);
    for (const j of submitted) await waitForJob(server.port, j, undefined, 600_000);
    for (const name of fs.readdirSync(out))
      if (name.startsWith('load-') && name !== 'load-first')
        fs.rmSync(path.join(out, name), { recursive: true });
  }
  return { samples, valid, tried, serverCpuMs: (1000 * serverCpu) / (valid * connections) };
}

async function main(): Promise<void> {
  let ok = true;
  if (values.only !== 'load') ok = (await soak()) && ok;
  if (values.only === undefined) console.log('');
  if (values.only !== 'soak') ok = (await load()) && ok;
  fs.rmSync(path.join(scratch, 'soak-out'), { recursive: true, force: true });
  fs.rmSync(path.join(scratch, 'load-out'), { recursive: true, force: true });
  fs.rmSync(path.join(scratch, 'load.log'), { force: true });
  if (!ok) process.exitCode = 1;
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
