/**
 * The page's client of the HTTP API (docs/serve.md): every call carries `Authorization: Bearer`, and
 * every refusal becomes an ApiError with the server's code and message. The JSON's types are the
 * server's own (../wire.ts).
 */

import type { JobSummary } from '../wire.js';

export type { JobError, JobPage, JobState, JobSummary, ListedModel, Progress } from '../wire.js';
export type JobRequest = JobSummary['request'];

export const FINAL_STATES: ReadonlySet<string> = new Set(['succeeded', 'failed', 'cancelled', 'interrupted']);

/** A refusal: the server's `{error: {code, message}}`, or what went wrong before any answer. */
export class ApiError extends Error {
  constructor(
    /** The HTTP status; 0 when the server could not be reached. */
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export class Api {
  constructor(
    private token: string | undefined,
    /** Told of every 401: the page asks for the token. */
    private readonly onUnauthorized: (e: ApiError) => void = () => undefined,
  ) {}

  get hasToken(): boolean {
    return this.token !== undefined;
  }

  setToken(token: string | undefined): void {
    this.token = token;
  }

  /** A JSON call; the parsed body, or undefined for a 204. */
  async json<T>(method: string, route: string, body?: unknown): Promise<T> {
    const res = await this.send(route, {
      method,
      ...(body !== undefined
        ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }
        : {}),
    });
    return (res.status === 204 ? undefined : await res.json()) as T;
  }

  /** A file the API serves (the picture, the report), as a Blob. */
  async blob(route: string): Promise<Blob> {
    return (await this.send(route, {})).blob();
  }

  /** A job's event stream, resumed after `lastEventId` (0: from the start). */
  events(jobId: string, lastEventId: number, signal: AbortSignal): Promise<Response> {
    return this.send(`/api/jobs/${encodeURIComponent(jobId)}/events`, {
      signal,
      headers: lastEventId > 0 ? { 'last-event-id': String(lastEventId) } : {},
    });
  }

  private async send(route: string, init: RequestInit): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.token !== undefined) headers.set('authorization', `Bearer ${this.token}`);
    let res: Response;
    try {
      // No cookie is ever set or sent: the token is the only credential.
      res = await fetch(route, { ...init, headers, credentials: 'omit', cache: 'no-store' });
    } catch (e) {
      if (init.signal?.aborted === true) throw e;
      throw new ApiError(0, 'NETWORK', `the server could not be reached (${(e as Error).message})`);
    }
    if (!res.ok) {
      const e = await refusal(res);
      if (e.status === 401) this.onUnauthorized(e);
      throw e;
    }
    return res;
  }
}

async function refusal(res: Response): Promise<ApiError> {
  const text = await res.text().catch(() => '');
  try {
    const { error } = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    if (typeof error?.code === 'string' && typeof error.message === 'string')
      return new ApiError(res.status, error.code, error.message);
  } catch {
    // not the API's error body (a proxy's page, say): described below
  }
  return new ApiError(res.status, `HTTP_${res.status}`, `${res.status} ${res.statusText}`.trim());
}

/** What a failure says on the page: `CODE: message`. */
export function describe(e: unknown): { code: string; message: string } {
  if (e instanceof ApiError) return { code: e.code, message: e.message };
  if (e instanceof Error) return { code: e.name === 'Error' ? 'PAGE_ERROR' : e.name, message: e.message };
  return { code: 'PAGE_ERROR', message: String(e) };
}
