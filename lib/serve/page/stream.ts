/**
 * A job's Server-Sent Events read through fetch and a stream reader: EventSource cannot send the
 * Authorization header. The parser follows the SSE format (fields per line, `data` lines joined,
 * comments skipped, a blank line ends an event); a dropped connection is resumed with `Last-Event-ID`
 * (the id of the last event handled), so no event is handled twice and none is missed.
 */
import { ApiError, type Api } from './api.js';

export interface StreamEvent {
  readonly id: number;
  readonly type: string;
  readonly data: unknown;
}

/** Feeds text in as it arrives; calls `onEvent` for each complete event. */
export class SseParser {
  private buffer = '';
  private data: string[] = [];
  private type = '';
  private id = '';

  constructor(private readonly onEvent: (e: { id: string; type: string; data: string }) => void) {}

  push(text: string): void {
    this.buffer += text;
    for (let m = /\r\n|\r|\n/.exec(this.buffer); m !== null; m = /\r\n|\r|\n/.exec(this.buffer)) {
      // A lone \r at the end may be the first half of \r\n: wait for the next chunk.
      if (m[0] === '\r' && m.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, m.index);
      this.buffer = this.buffer.slice(m.index + m[0].length);
      this.line(line);
    }
  }

  private line(line: string): void {
    if (line === '') {
      if (this.data.length > 0)
        this.onEvent({ id: this.id, type: this.type || 'message', data: this.data.join('\n') });
      this.data = [];
      this.type = '';
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.type = value;
    else if (field === 'id' && !value.includes('\0')) this.id = value;
  }
}

export interface FollowOptions {
  readonly signal: AbortSignal;
  /** Handles one event; returns true when it was the last (the job's final state). */
  readonly onEvent: (e: StreamEvent) => boolean;
  /** Told when the connection drops and when it is back. */
  readonly onConnection?: (state: 'reconnecting' | 'connected') => void;
}

/** Attempts in a row before giving up on a server that does not answer. */
const MAX_FAILURES = 12;

/** A pause that `signal` ends early; either way it leaves no listener on the (long-lived) signal. */
const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });

/**
 * Follows `jobId`'s events until its final state (or `signal` aborts), reconnecting after a dropped
 * connection with a growing pause. A refusal (401, 404) is thrown at once: retrying cannot help.
 */
export async function followJob(api: Api, jobId: string, o: FollowOptions): Promise<void> {
  let lastId = 0;
  let failures = 0;
  let finished = false;
  while (!o.signal.aborted && !finished) {
    let heard = false;
    try {
      const res = await api.events(jobId, lastId, o.signal);
      if (failures > 0) o.onConnection?.('connected');
      const parser = new SseParser((raw) => {
        if (finished) return;
        heard = true;
        const id = Number(raw.id);
        if (Number.isInteger(id) && id > 0) lastId = id;
        finished = o.onEvent({ id, type: raw.type, data: JSON.parse(raw.data) as unknown });
      });
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
      try {
        for (let r = await reader.read(); !r.done && !finished; r = await reader.read()) parser.push(r.value);
      } finally {
        await reader.cancel().catch(() => undefined);
      }
      // Ended before the job did (the server is restarting, a proxy cut it): resumed after lastId. A
      // stream that ends with nothing new counts as a failure, so the pauses grow and the page gives up.
      if (!finished && !heard && ++failures > MAX_FAILURES)
        throw new Error('the event stream keeps ending without the job’s end; reload the page');
      if (heard) failures = 0;
    } catch (e) {
      if (o.signal.aborted) return;
      if (e instanceof ApiError && e.status >= 400 && e.status < 500) throw e;
      if (!(e instanceof ApiError || e instanceof TypeError) || ++failures > MAX_FAILURES) throw e;
    }
    if (!finished && !o.signal.aborted) {
      o.onConnection?.('reconnecting');
      await sleep(Math.min(250 * 2 ** failures, 5000), o.signal);
    }
  }
}
