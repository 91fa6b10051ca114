/**
 * GET /api/jobs/:id/events as Server-Sent Events: `id: N`, `event: progress|warning|state`,
 * `data: JSON`. A client resumes with `Last-Event-ID` (what EventSource sends on reconnect; a fetch
 * reader sets it itself); a finished job's events are replayed and the stream ends after the final
 * `state`. A comment line every 15 s keeps proxies from closing an idle stream.
 */
import type { ServerResponse } from 'node:http';
import { HttpError } from './errors';
import { CSP, SECURITY_HEADERS } from './security';
import { isFinal, type JobEvent, type JobState } from './store';
import type { JobFeed } from './events';

const KEEPALIVE_MS = 15_000;

export function parseLastEventId(header: string | string[] | undefined): number {
  if (header === undefined) return 0;
  const text = Array.isArray(header) ? header[0] : header;
  if (text === undefined || text.trim() === '') return 0;
  if (!/^\d{1,15}$/.test(text.trim()))
    throw new HttpError(400, 'BAD_REQUEST', 'Last-Event-ID must be an event id (a non-negative integer)');
  return Number(text.trim());
}

const format = (e: JobEvent): string => `id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e.data)}\n\n`;

const endsStream = (e: JobEvent): boolean =>
  e.type === 'state' && isFinal((e.data as { state: JobState }).state);

/** Open streams, so that a stopping server can end them (they would hold its close forever). */
export class EventStreams {
  private readonly open = new Set<() => void>();

  /**
   * Writes `replay`, then what `feed` publishes, until a final state (or the client leaves, or the
   * server stops).
   */
  serve(res: ServerResponse, replay: readonly JobEvent[], feed: JobFeed | undefined): void {
    res.writeHead(200, {
      ...SECURITY_HEADERS,
      'content-security-policy': CSP.api,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    let stopListening = (): void => undefined;
    let keepalive: NodeJS.Timeout | undefined = undefined;
    const end = (): void => {
      stopListening();
      if (keepalive !== undefined) clearInterval(keepalive);
      this.open.delete(end);
      if (!res.writableEnded) res.end();
    };
    for (const e of replay) {
      res.write(format(e));
      if (endsStream(e)) return end();
    }
    if (feed === undefined) return end();
    this.open.add(end);
    stopListening = feed.listen((e) => {
      res.write(format(e));
      if (endsStream(e)) end();
    });
    keepalive = setInterval(() => res.write(': keepalive\n\n'), KEEPALIVE_MS);
    keepalive.unref();
    res.once('close', end);
  }

  /** Ends every stream still open. */
  closeAll(): void {
    for (const end of [...this.open]) end();
  }
}
