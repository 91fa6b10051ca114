/**
 * The service's refusals. Every error response is `{error: {code, message}}`: the server's own codes
 * below, or the library's (BAD_CONFIG, BAD_OUTPUT_PATH, …) with the status that fits. Messages never
 * carry a stack trace, nor a path outside the roots.
 */
import { escapeControl, isModelStockError, type ErrorCode } from '../errors';

export type ServeErrorCode =
  | 'UNAUTHORIZED' // 401: no `Authorization: Bearer`, or the wrong token
  | 'BAD_HOST' // 403: the Host header names no accepted host (DNS rebinding)
  | 'BAD_ORIGIN' // 403: a cross-origin Origin header
  | 'OUTSIDE_ROOTS' // 403: a model or `out` not inside a root (through links), or a file a model folder links out to
  | 'NOT_FOUND' // 404: no such route, job, report or picture
  | 'BAD_REQUEST' // 400 (415 for a body that is not JSON): a request the schema or the API's rules refuse
  | 'CONFLICT' // 409: the job's state forbids it (cancel a finished job, forget an unfinished one)
  | 'BODY_TOO_LARGE' // 413: a request body over 1 MiB
  | 'QUEUE_FULL' // 429: --queue jobs are already waiting
  | 'SHUTTING_DOWN' // 503: the server is stopping (SIGINT/SIGTERM)
  | 'INTERNAL_ERROR'; // 500: a fault of the server itself (logged with its stack; the client gets none)

export type AnyErrorCode = ServeErrorCode | ErrorCode;

/** A refusal with its HTTP status. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: AnyErrorCode,
    message: string,
  ) {
    super(escapeControl(message));
    this.name = 'HttpError';
  }
}

export interface ErrorBody {
  readonly error: { readonly code: AnyErrorCode; readonly message: string };
}

export const errorBody = (code: AnyErrorCode, message: string): ErrorBody => ({ error: { code, message } });

/** The status a library error gets when it refuses a request at submit time. */
const LIBRARY_STATUS: Partial<Record<ErrorCode, number>> = {
  BAD_OUTPUT_PATH: 409,
};

/** What the client is told about `e`: its code and message, with the status that fits. */
export function describeError(e: unknown, scrub: (message: string) => string): HttpError {
  if (e instanceof HttpError) return new HttpError(e.status, e.code, scrub(e.message));
  if (isModelStockError(e)) return new HttpError(LIBRARY_STATUS[e.code] ?? 400, e.code, scrub(e.message));
  return new HttpError(500, 'INTERNAL_ERROR', 'internal error (see the server log)');
}

/** A setting `serve` cannot work with (a missing root, a non-loopback host without a token): exit 1. */
export class ServeSetupError extends Error {}
