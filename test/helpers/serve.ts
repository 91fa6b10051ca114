/**
 * The merge service under test: started in this process (createServer) or in a child, driven over
 * loopback with plain node:http requests (no keep-alive: every response closes its connection, so
 * descriptor counts settle), SSE read to its end.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { generateFixture, PRESETS } from '../../lib/fixtures/generate';
import { openSqlite } from '../../lib/serve/sqlite';
import { createServer, type Server, type ServeOptions } from '../../lib/serve/server';

export const TOKEN = 'test-token-0123456789abcdef';

/**
 * Skips the suite when better-sqlite3 (an optional dependency) does not load here, saying so; with
 * MODEL_STOCK_REQUIRE_SERVE=1 (CI) that fails instead.
 */
export async function sqliteOrSkip(ctx: Mocha.Context): Promise<void> {
  try {
    (await openSqlite(':memory:')).close();
  } catch (e) {
    const why = (e as Error).message;
    if (process.env.MODEL_STOCK_REQUIRE_SERVE === '1')
      throw new Error(`MODEL_STOCK_REQUIRE_SERVE=1 but better-sqlite3 does not load: ${why}`);
    console.warn(`    (serve tests skipped: ${why})`);
    ctx.skip();
  }
}

export interface Response {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly text: string;
  /** The body parsed as JSON (undefined when it is not JSON). */
  readonly json: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- tests read fields freely
}

export interface RequestOptions {
  readonly body?: unknown;
  /** Raw body bytes (sent as given, with `content-type` from headers). */
  readonly raw?: string | Buffer;
  readonly headers?: Record<string, string>;
  /** The token to send; null: no Authorization header. Default TOKEN. */
  readonly token?: string | null;
}

/** One request to `port` on 127.0.0.1, Host and token set as a well-behaved client sets them. */
export function request(
  port: number,
  method: string,
  route: string,
  o: RequestOptions = {},
): Promise<Response> {
  const body = o.raw ?? (o.body === undefined ? undefined : JSON.stringify(o.body));
  const headers: Record<string, string> = {
    host: `127.0.0.1:${port}`,
    ...(o.body !== undefined ? { 'content-type': 'application/json' } : {}),
    ...(o.token !== null ? { authorization: `Bearer ${o.token ?? TOKEN}` } : {}),
    ...o.headers,
  };
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, method, path: route, headers, agent: false, setHost: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

export interface SseEvent {
  readonly id: number;
  readonly event: string;
  readonly data: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** When it arrived (performance.now()). */
  readonly at: number;
}

/**
 * Reads a job's events until the server ends the stream (or `stopAfter` says enough: the connection
 * is then closed by the client, as a reader that leaves mid-stream does).
 */
export function readEvents(
  port: number,
  jobId: string,
  o: { lastEventId?: number; stopAfter?: (e: SseEvent) => boolean; onEvent?: (e: SseEvent) => void } = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; events: SseEvent[] }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: `/api/jobs/${jobId}/events`,
        agent: false,
        setHost: false,
        headers: {
          host: `127.0.0.1:${port}`,
          authorization: `Bearer ${TOKEN}`,
          ...(o.lastEventId !== undefined ? { 'last-event-id': String(o.lastEventId) } : {}),
        },
      },
      (res) => {
        const events: SseEvent[] = [];
        let buffer = '';
        let done = false;
        const finish = (): void => {
          if (done) return;
          done = true;
          resolve({ status: res.statusCode ?? 0, headers: res.headers, events });
        };
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffer += chunk;
          for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const fields = new Map<string, string>();
            for (const line of block.split('\n')) {
              if (line.startsWith(':')) continue;
              const colon = line.indexOf(': ');
              fields.set(line.slice(0, colon), line.slice(colon + 2));
            }
            if (!fields.has('id')) continue;
            const e: SseEvent = {
              id: Number(fields.get('id')),
              event: fields.get('event') ?? 'message',
              data: JSON.parse(fields.get('data') ?? 'null'),
              at: performance.now(),
            };
            events.push(e);
            o.onEvent?.(e);
            if (o.stopAfter?.(e) === true) {
              req.destroy();
              finish();
              return;
            }
          }
        });
        res.on('end', finish);
        res.on('close', finish);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Polls the job until `done(state)` (default: a final state); returns its view. */
export async function waitForJob(
  port: number,
  id: string,
  done: (state: string) => boolean = (s) => !['queued', 'running'].includes(s),
  timeoutMs = 60_000,
): Promise<Response['json']> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const r = await request(port, 'GET', `/api/jobs/${id}`);
    if (r.status === 200 && done(r.json.state)) return r.json;
    if (Date.now() > until) throw new Error(`job ${id} still ${r.json?.state} after ${timeoutMs} ms`);
    await new Promise((res) => setTimeout(res, 20));
  }
}

/** A models root with the tiny fixture at `fx/` (base, ft1, ft2), an out root and a state folder. */
export async function serveFolders(
  dir: string,
): Promise<{ models: string; out: string; state: string; base: string; ft: string[] }> {
  const models = path.join(dir, 'models');
  const out = path.join(dir, 'out');
  fs.mkdirSync(out, { recursive: true });
  const fx = await generateFixture({ ...PRESETS.tiny, dir: path.join(models, 'fx') });
  return { models, out, state: path.join(dir, 'state'), base: fx.base, ft: [...fx.models] };
}

/** `{kind: 'merge', options: {base: fx/base, models: [fx/ft1, fx/ft2], out}}`. */
export const mergeBody = (out: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  kind: 'merge',
  options: { base: 'fx/base', models: ['fx/ft1', 'fx/ft2'], out, ...extra },
});

/** createServer in this process with the test token, on a free loopback port, logs discarded. */
export async function startServer(
  folders: { models: string; out: string; state: string },
  o: Partial<ServeOptions> = {},
): Promise<Server> {
  return createServer({
    port: 0,
    models: [folders.models],
    out: folders.out,
    state: folders.state,
    token: TOKEN,
    log: { level: 'silent' },
    ...o,
  });
}

/** Hidden staging folders (`.NAME.partial-*`) left in `out`. */
export function stagingLeft(out: string): string[] {
  return fs.readdirSync(out).filter((n) => n.includes('.partial-'));
}
