/**
 * What every request passes before a route sees it: the Host header names this server (a page on
 * another site that rebinds its DNS name to 127.0.0.1 sends its own name), an Origin header, when
 * present, is this server's (no cross-site POSTs), and `/api/*` but health carries the token.
 * Jupyter Server does the same for the same reasons (jupyter_server/base/handlers.py).
 */
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import * as os from 'node:os';
import { HttpError } from './errors';

/** Whether binding `host` keeps the port on this machine. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (h === 'localhost') return true;
  if (net.isIPv4(h)) return h.startsWith('127.');
  if (net.isIPv6(h)) return h === '::1' || /^::ffff:127\./.test(h);
  return false;
}

/** A host as it appears in a Host header or a URL: IPv6 literals in brackets, lower case. */
export function hostForUrl(host: string): string {
  const h = host.toLowerCase();
  return net.isIPv6(h) ? `[${h}]` : h;
}

/** This machine's interface addresses and host name: the names a wildcard bind (0.0.0.0, ::) answers to. */
export function localNames(family: 'IPv4' | 'any'): string[] {
  const names = [os.hostname().toLowerCase()];
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? [])
      if (family === 'any' || a.family === 'IPv4') names.push(a.address.split('%')[0]!);
  }
  return names;
}

/**
 * The Host header values this server answers: on a loopback bind `127.0.0.1:P`, `localhost:P`,
 * `[::1]:P`; the bound address itself; on a wildcard bind (0.0.0.0, ::) this machine's addresses and
 * name; and every `--allowed-host` name — with the port, or without one (a reverse proxy on the
 * default port). A name given with a port matches only that port.
 */
export function acceptedHosts(
  bound: string,
  port: number,
  allowed: readonly string[],
  local: (family: 'IPv4' | 'any') => string[] = localNames,
): Set<string> {
  const hosts = new Set<string>();
  const b = bound.replace(/^\[(.*)\]$/, '$1');
  const wildcard = b === '0.0.0.0' || b === '::';
  if (isLoopbackHost(b) || wildcard)
    for (const h of ['127.0.0.1', 'localhost', '[::1]']) hosts.add(`${h}:${port}`);
  const own = wildcard ? local(b === '::' ? 'any' : 'IPv4') : [b];
  for (const h of own) hosts.add(`${hostForUrl(h)}:${port}`);
  for (const h of allowedHostNames(allowed, port)) hosts.add(h);
  return hosts;
}

/** `--allowed-host` values as Host headers: `name:port` as given, a bare name with and without the port. */
function allowedHostNames(allowed: readonly string[], port: number): string[] {
  return allowed.flatMap((a) => {
    const name = a.trim().toLowerCase();
    if (name === '') return [];
    if (/:\d+$/.test(name) && !net.isIPv6(name)) return [name];
    const h = hostForUrl(name.replace(/^\[(.*)\]$/, '$1'));
    return [h, `${h}:${port}`];
  });
}

export class RequestGuard {
  private readonly hosts: Set<string>;
  private readonly origins: Set<string>;
  private readonly tokenDigest: Buffer | undefined;

  constructor(o: {
    readonly bound: string;
    readonly port: number;
    readonly allowedHosts: readonly string[];
    /** undefined: no token (`--no-token`, loopback only). */
    readonly token: string | undefined;
  }) {
    this.hosts = acceptedHosts(o.bound, o.port, o.allowedHosts);
    // A page served by an accepted host; https:// too for --allowed-host names behind a TLS proxy.
    this.origins = new Set([...this.hosts].map((h) => `http://${h}`));
    for (const h of allowedHostNames(o.allowedHosts, o.port)) this.origins.add(`https://${h}`);
    this.tokenDigest = o.token === undefined ? undefined : digest(o.token);
  }

  checkHost(host: string | undefined): void {
    if (host === undefined || !this.hosts.has(host.toLowerCase())) {
      throw new HttpError(
        403,
        'BAD_HOST',
        'the Host header does not name this server (start it with --allowed-host NAME to accept NAME)',
      );
    }
  }

  checkOrigin(origin: string | undefined): void {
    if (origin !== undefined && !this.origins.has(origin.toLowerCase())) {
      throw new HttpError(403, 'BAD_ORIGIN', 'cross-origin requests are refused');
    }
  }

  /** Compared in constant time: digests of equal length, whatever was sent. */
  checkToken(authorization: string | undefined): void {
    if (this.tokenDigest === undefined) return;
    const m = /^Bearer +(\S+) *$/i.exec(authorization ?? '');
    const given = digest(m?.[1] ?? '');
    if (m === null || !crypto.timingSafeEqual(given, this.tokenDigest)) {
      throw new HttpError(401, 'UNAUTHORIZED', 'send the token as "Authorization: Bearer TOKEN"');
    }
  }
}

const digest = (s: string): Buffer => crypto.createHash('sha256').update(s, 'utf8').digest();

/** A random token for the URL: 32 bytes, base64url. */
export const randomToken = (): string => crypto.randomBytes(32).toString('base64url');

/** The query parameter the printed URL carries the token in (the page moves it to its memory). */
export const TOKEN_PARAM = 'token';

/** `url` with any token query parameter's value replaced: logs never hold the token. */
export function redactUrl(url: string): string {
  return url.replace(/([?&]token=)[^&#]*/gi, '$1[redacted]');
}

/** Headers every response carries; `csp` depends on what is served. */
export const CSP = {
  /** JSON and SSE: nothing in them may run or load anything. */
  api: "default-src 'none'; frame-ancestors 'none'; sandbox",
  /** The report's picture: drawn with attributes, no script may run even when opened directly. */
  picture:
    "default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; sandbox",
  /**
   * The page: its own scripts and styles only (no inline script or style), pictures fetched and shown as
   * blob: URLs, requests to this server only; no DOM sink takes a string (Trusted Types, none allowed).
   */
  page:
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; " +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; " +
    "require-trusted-types-for 'script'; trusted-types 'none'",
} as const;

export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  // The page's URL holds the token until the page removes it: never sent on as a Referer.
  'referrer-policy': 'no-referrer',
  'cross-origin-resource-policy': 'same-origin',
  'cross-origin-opener-policy': 'same-origin',
};
