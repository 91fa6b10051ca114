/**
 * What every request passes before a route sees it: the Host header names this server (a page on
 * another site that rebinds its DNS name to 127.0.0.1 sends its own name), an Origin header, when
 * present, is this server's (no cross-site POSTs), and `/api/*` but health carries the token.
 * Jupyter Server does the same for the same reasons (jupyter_server/base/handlers.py).
 */
import * as crypto from 'node:crypto';
import * as net from 'node:net';
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

/**
 * The Host header values this server answers: on a loopback bind `127.0.0.1:P`, `localhost:P`,
 * `[::1]:P` (and the bound address itself); otherwise the bound address when it is a specific one; and
 * every `--allowed-host` name — with the port, or without one (a reverse proxy on the default port).
 * A name given with a port matches only that port.
 */
export function acceptedHosts(bound: string, port: number, allowed: readonly string[]): Set<string> {
  const hosts = new Set<string>();
  if (isLoopbackHost(bound)) for (const h of ['127.0.0.1', 'localhost', '[::1]']) hosts.add(`${h}:${port}`);
  const unspecified = bound === '0.0.0.0' || bound === '::' || bound === '[::]';
  if (!unspecified) hosts.add(`${hostForUrl(bound.replace(/^\[(.*)\]$/, '$1'))}:${port}`);
  for (const a of allowed) {
    const name = a.trim().toLowerCase();
    if (name === '') continue;
    if (/:\d+$/.test(name) && !net.isIPv6(name)) hosts.add(name);
    else {
      const h = hostForUrl(name.replace(/^\[(.*)\]$/, '$1'));
      hosts.add(h);
      hosts.add(`${h}:${port}`);
    }
  }
  return hosts;
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
    for (const a of o.allowedHosts) {
      for (const h of acceptedHosts('0.0.0.0', o.port, [a])) this.origins.add(`https://${h}`);
    }
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
  /** The page: its own scripts and styles only (no inline script); pictures fetched and inserted as blobs. */
  page:
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; " +
    "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
} as const;

export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  // The page's URL holds the token until the page removes it: never sent on as a Referer.
  'referrer-policy': 'no-referrer',
  'cross-origin-resource-policy': 'same-origin',
  'cross-origin-opener-policy': 'same-origin',
};
