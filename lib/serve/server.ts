/**
 * `model-stock serve`: a merge service on fastify, one more client of the library's public API. This
 * file wires the parts: the roots (roots.ts), the durable store (store.ts), the queue (jobs.ts), the
 * guard every request passes (security.ts), the routes (routes.ts) and the page (page.ts).
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import fastify, { type FastifyError, type FastifyReply } from 'fastify';
import { isModelStockError } from '../errors';
import { describeError, errorBody, HttpError, ServeSetupError } from './errors';
import { Jobs, type ProbePoint } from './jobs';
import { PAGE_DIR } from './page';
import { Roots } from './roots';
import { registerRoutes } from './routes';
import {
  CSP,
  hostForUrl,
  isLoopbackHost,
  localNames,
  redactUrl,
  RequestGuard,
  SECURITY_HEADERS,
  TOKEN_PARAM,
} from './security';
import { EventStreams } from './sse';
import { JobStore } from './store';
import { BODY_LIMIT, DEFAULT_CONCURRENCY, DEFAULT_QUEUE, KERNEL_NICE } from './defaults';
import { loadNativeAddon } from '../engine/native/loader';

export interface ServeOptions {
  /** Address to bind; default 127.0.0.1. */
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port: number;
  /** Model roots, in the order relative references are resolved against. */
  readonly models: readonly string[];
  /** The folder merges write their `out` into. */
  readonly out: string;
  /** The folder of the job store (locked while the server runs). */
  readonly state: string;
  /** The bearer token; undefined only on a loopback host (`--no-token`). */
  readonly token: string | undefined;
  /** Host header names accepted beside the bound address (a reverse proxy's). */
  readonly allowedHosts?: readonly string[];
  readonly concurrency?: number;
  readonly queue?: number;
  /** Accept Hugging Face Hub IDs for references not found under the roots. */
  readonly hub?: boolean;
  /** Each job's memory budget for tensor buffers (bytes). */
  readonly memory?: number;
  /** Structured request logs (pino): level and destination (default: info, stderr). */
  readonly log?: { readonly level?: string; readonly stream?: NodeJS.WritableStream };
  /** The page's files (default: the built package's). */
  readonly pageDir?: string;
  /** A better_sqlite3.node to load instead of the package's (MODEL_STOCK_SQLITE_BINDING). */
  readonly sqliteBinding?: string;
  /**
   * The nice value (0–19) the native backend's kernel threads run at, process-wide, while the server
   * runs (default 10): under load the event loop is scheduled before them, so requests are answered
   * while a merge runs at the speed of whatever CPU is left. With several servers in one process, the
   * first one running sets it.
   */
  readonly kernelNice?: number;
  /** Called at named moments of each job (tests kill the process there). */
  readonly probe?: (point: ProbePoint, jobId: string) => void;
}

export interface Server {
  /** http://HOST:PORT/ */
  readonly url: string;
  /** The URL to open: the token in its query, as Jupyter prints it. */
  readonly openUrl: string;
  readonly port: number;
  /** "METHOD /path" of every route (HEAD excluded), for the docs check. */
  readonly routes: readonly string[];
  /** Stops accepting, cancels running jobs (→ interrupted), ends streams, closes the store. */
  close(reason?: string): Promise<void>;
}

export async function createServer(o: ServeOptions): Promise<Server> {
  const host = o.host ?? '127.0.0.1';
  if (o.token === undefined && !isLoopbackHost(host))
    throw new ServeSetupError(`--no-token is allowed only on a loopback host, not ${host}`);
  let roots: Roots;
  try {
    roots = await Roots.open(o.models, o.out, o.hub ?? false);
  } catch (e) {
    throw new ServeSetupError((e as Error).message);
  }
  const store = await JobStore.open(o.state, { nativeBinding: o.sqliteBinding });

  const app = fastify({
    bodyLimit: BODY_LIMIT,
    forceCloseConnections: true,
    // No automatic HEAD twins: a HEAD on the event stream would hold its connection for nothing.
    exposeHeadRoutes: false,
    // A request without Host reaches the guard (403 BAD_HOST with the error body), not Node's bare 400.
    http: { requireHostHeader: false },
    clientErrorHandler: refuseMalformed,
    frameworkErrors: (err, _req, reply) => {
      const r = reply as unknown as FastifyReply;
      void r.code(400).send(errorBody('BAD_REQUEST', err.message));
    },
    // The schema refuses unknown keys: never strip or coerce them into something accepted.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false } },
    logger: {
      level: o.log?.level ?? 'info',
      stream: o.log?.stream ?? process.stderr,
      serializers: {
        // The page's URL carries the token once (?token=): logs get it redacted; headers are never logged.
        req: (req: { method: string; url: string; ip?: string }) => ({
          method: req.method,
          url: redactUrl(req.url),
          remoteAddress: req.ip,
        }),
      },
    },
  });
  // JSON only: a text/plain body (what a cross-site form can send without a preflight) is a 415.
  app.removeContentTypeParser('text/plain');
  const jobs = new Jobs({
    store,
    roots,
    concurrency: o.concurrency ?? DEFAULT_CONCURRENCY,
    queueLimit: o.queue ?? DEFAULT_QUEUE,
    memory: o.memory,
    log: app.log,
    probe: o.probe,
  });
  const streams = new EventStreams();
  const routes: string[] = [];
  let guard: RequestGuard | undefined = undefined; // set once listening (the Host check needs the port)
  let closing = false;

  app.addHook('onRoute', (r) => {
    for (const m of [r.method].flat()) if (m !== 'HEAD') routes.push(`${m} ${r.url}`);
  });
  app.addHook('onRequest', async (req, reply) => {
    reply.header('cache-control', 'no-store');
    if (closing || guard === undefined) throw new HttpError(503, 'SHUTTING_DOWN', 'the server is stopping');
    guard.checkHost(req.headers.host);
    guard.checkOrigin(req.headers.origin);
    const route = req.url.split('?')[0]!;
    if (route.startsWith('/api/') && route !== '/api/health') guard.checkToken(req.headers.authorization);
  });
  app.addHook('onSend', async (_req, reply, payload) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) reply.header(k, v);
    if (!reply.hasHeader('content-security-policy')) reply.header('content-security-policy', CSP.api);
    return payload;
  });
  app.setErrorHandler((err: FastifyError, req, reply) => {
    const e = asHttpError(err, roots);
    if (e.status >= 500) req.log.error({ err }, 'request failed');
    if (e.status === 401) reply.header('www-authenticate', 'Bearer');
    void reply.code(e.status).send(errorBody(e.code, e.message));
  });
  app.setNotFoundHandler((req, reply) => {
    void reply
      .code(404)
      .send(errorBody('NOT_FOUND', `no route ${req.method} ${redactUrl(req.url.split('?')[0]!)}`));
  });
  registerRoutes(app, { jobs, roots, streams, pageDir: o.pageDir ?? PAGE_DIR });

  try {
    await jobs.start();
    await app.listen({ host, port: o.port });
  } catch (e) {
    await jobs.stop('the server failed to start');
    await app.close();
    store.close();
    throw e;
  }
  const releaseNice = holdKernelNice(o.kernelNice ?? KERNEL_NICE);
  const port = (app.server.address() as AddressInfo).port;
  guard = new RequestGuard({ bound: host, port, allowedHosts: o.allowedHosts ?? [], token: o.token });
  const url = `http://${hostForUrl(urlHost(host, o.allowedHosts ?? []))}:${port}/`;

  let closed: Promise<void> | undefined;
  return {
    url,
    openUrl: o.token === undefined ? url : `${url}?${TOKEN_PARAM}=${encodeURIComponent(o.token)}`,
    port,
    routes,
    close: (reason = 'the server is stopping') =>
      (closed ??= (async () => {
        closing = true;
        await jobs.stop(reason);
        streams.closeAll();
        await app.close();
        store.close();
        releaseNice();
      })()),
  };
}

/** The servers of this process holding the kernels' nice raised, and the nice from before the first. */
const kernelNice = { holders: 0, before: 0 };

/**
 * Raises the native kernels' nice (process-wide) while this server runs: the first server running sets
 * it, the last one closing puts back what was there (best effort: lowering a nice needs CAP_SYS_NICE),
 * so closing one of two servers does not drop the other's priority. Returns the release.
 */
function holdKernelNice(nice: number): () => void {
  const addon = loadNativeAddon().addon;
  if (addon === undefined) return () => undefined;
  if (kernelNice.holders++ === 0) kernelNice.before = addon.setPoolNice(nice);
  return () => {
    if (--kernelNice.holders === 0) addon.setPoolNice(kernelNice.before);
  };
}

/** The host to print in the URL: the bound one, or for a wildcard bind the proxy's name or this machine's. */
function urlHost(bound: string, allowed: readonly string[]): string {
  if (bound !== '0.0.0.0' && bound !== '::') return bound;
  return allowed[0]?.replace(/:\d+$/, '') ?? localNames('IPv4').find((h) => h !== 'localhost') ?? bound;
}

/** A request Node cannot parse: the error body too, then the connection closes. */
function refuseMalformed(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, code, message] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'BAD_REQUEST', 'request headers too large']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'BAD_REQUEST', 'request timed out']
        : [400, 'BAD_REQUEST', 'malformed HTTP request'];
  const body = JSON.stringify(errorBody(code as 'BAD_REQUEST', message));
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nX-Content-Type-Options: nosniff\r\n` +
        `Content-Security-Policy: ${CSP.api}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

function asHttpError(err: FastifyError, roots: Roots): HttpError {
  if (err instanceof HttpError || isModelStockError(err)) return describeError(err, (m) => roots.scrub(m));
  if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE')
    return new HttpError(413, 'BODY_TOO_LARGE', `request bodies are limited to ${BODY_LIMIT} bytes`);
  if (err.validation !== undefined) {
    const v = err.validation[0];
    const extra = (v?.params as { additionalProperty?: string } | undefined)?.additionalProperty;
    const where = `${err.validationContext ?? 'request'}${v?.instancePath ?? ''}`;
    return new HttpError(
      400,
      'BAD_REQUEST',
      `${where} ${v?.message ?? 'is invalid'}${extra !== undefined ? `: ${JSON.stringify(extra)}` : ''}`,
    );
  }
  const status = err.statusCode ?? 500;
  if (status >= 400 && status < 500) return new HttpError(status, 'BAD_REQUEST', err.message);
  return describeError(err, (m) => roots.scrub(m));
}
