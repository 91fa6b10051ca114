/**
 * The HTTP API's JSON shapes (docs/serve.md), in a module that imports nothing: the server builds them
 * (views.ts, models.ts, store.ts) and the web page reads them (page/api.ts), from the same types.
 */

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'interrupted';

export interface Progress {
  readonly bytesDone: number;
  readonly bytesTotal: number;
  readonly tensorsDone: number;
  readonly tensorsTotal: number;
}

export interface JobError {
  readonly code: string;
  readonly message: string;
}

/** POST /api/jobs's body as a client sees it (request.ts has the exact schema). */
export interface SubmittedJob {
  readonly kind: 'merge' | 'inspect';
  readonly config?: string;
  readonly out?: string;
  readonly options?: { readonly base?: unknown; readonly models?: unknown; readonly [key: string]: unknown };
}

/** An entry of GET /api/jobs. */
export interface JobSummary {
  readonly id: string;
  readonly kind: 'merge' | 'inspect';
  readonly state: JobState;
  readonly createdAt: string;
  readonly startedAt: string | null;
  readonly finishedAt: string | null;
  readonly progress: Progress;
  readonly error?: JobError;
  /** The body it was submitted with. */
  readonly request: SubmittedJob;
  readonly warningCount: number;
  /** Whether /report and /picture.svg have something (a succeeded job). */
  readonly hasReport: boolean;
}

/** GET /api/jobs: newest first; `next` is the `before` of the next (older) page, absent on the last. */
export interface JobPage {
  readonly jobs: readonly JobSummary[];
  readonly next?: string;
}

export type ModelFormat = 'safetensors' | 'pytorch' | 'lora';

/** An entry of GET /api/models. */
export interface ListedModel {
  /** What to send as base/models: relative to the roots, or absolute when an earlier root shadows it. */
  readonly ref: string;
  /** Index of its --models root. */
  readonly root: number;
  /** Relative to that root, with `/`. */
  readonly path: string;
  readonly format: ModelFormat;
  /** Weight files and their bytes. */
  readonly files: number;
  readonly bytes: number;
}
