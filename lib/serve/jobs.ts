/**
 * The job queue: submit (committed before the 201), run up to `concurrency` at once through the public
 * API (mergeModelStock / inspectModelStock, each with its own AbortSignal), cancel, forget, and stop
 * (running jobs cancelled and marked `interrupted`; queued ones stay queued for the next start).
 * A restart marks the jobs a dead process was running `interrupted`, sweeps their staging folders and
 * runs the queued ones.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { inspectModelStock } from '../inspect';
import { mergeModelStock } from '../merge';
import { REPORT_FILE } from '../output/atomic';
import { reportJsonPieces } from '../output/report';
import { OWNER_FILE, sweepStaleStaging } from '../output/staleStaging';
import { reportPicture } from '../report/svg';
import type { InspectReport, MergeProgress } from '../types';
import { runSliced, type Sliced } from '../util/sliced';
import { describeError, HttpError } from './errors';
import { JobFeed, ProgressThrottle } from './events';
import { prepareJob, type JobRequest } from './request';
import type { Roots } from './roots';
import { isFinal, type JobError, type JobEvent, type JobRow, type JobStore, type Progress } from './store';

/** Progress events at most this often per job. */
export const PROGRESS_INTERVAL_MS = 250;
/** Progress and warnings persisted at most this often. */
export const FLUSH_INTERVAL_MS = 1000;

/**
 * Named moments of a job's life, for tests that kill the process exactly there (crash safety) and
 * for tracing. `probe` must not throw.
 */
export type ProbePoint =
  | 'submit:checked' // the request passed every check; not yet committed
  | 'submit:committed' // committed; the 201 not yet sent
  | 'job:dequeued' // about to be marked running
  | 'job:running' // marked running; the library not yet called
  | 'job:progress' // the library reported progress (mid-run)
  | 'job:flushed' // progress and warnings persisted
  | 'job:settled' // the library returned or threw; the outcome not yet committed
  | 'job:finished' // the outcome committed
  | 'cancel:committed'; // a queued job's cancellation committed

export interface JobLog {
  info(o: object, msg: string): void;
  warn(o: object, msg: string): void;
  error(o: object, msg: string): void;
}

export interface JobsOptions {
  readonly store: JobStore;
  readonly roots: Roots;
  readonly concurrency: number;
  /** Queued jobs at most (running ones are not counted). */
  readonly queueLimit: number;
  /** Each job's memory budget for tensor buffers (the library's `memory`). */
  readonly memory?: number;
  readonly log: JobLog;
  readonly probe?: (point: ProbePoint, jobId: string) => void;
}

interface Running {
  readonly controller: AbortController;
  /** Why it was aborted: a client's cancel, or the server stopping. */
  reason: 'cancel' | 'shutdown' | undefined;
  /** The latest progress the library reported (views show it; events are throttled). */
  progress: Progress | undefined;
  done: Promise<void>;
}

const now = (): string => new Date().toISOString();

const progressOf = (p: MergeProgress): Progress => ({
  bytesDone: p.bytesDone,
  bytesTotal: p.bytesTotal,
  tensorsDone: p.tensorsDone,
  tensorsTotal: p.tensorsTotal,
});

/** The report's JSON text (as written into OUT), made a slice at a time. */
function* reportText(report: InspectReport): Sliced<string> {
  const pieces: string[] = [];
  for (const piece of reportJsonPieces(report)) {
    pieces.push(piece);
    yield;
  }
  return pieces.join('');
}

/**
 * Staging folders of `target` (`.NAME.partial-X`) without an owner record, made since `startedAt`: a
 * merge killed between creating the folder and recording its owner, or between removing the record and
 * renaming the folder into place. The library's sweep leaves them (it cannot tell whose they are); the
 * server can: OUT's name is reserved for the interrupted job, the store's lock proves no other server
 * runs it, and the folder was made while the job ran.
 */
async function sweepRecordless(target: string, startedAt: string | undefined): Promise<string[]> {
  if (startedAt === undefined) return [];
  const since = Date.parse(startedAt) - 1000;
  const parent = path.dirname(target);
  const prefix = `.${path.basename(target)}.partial-`;
  const removed: string[] = [];
  for (const name of await fs.promises.readdir(parent).catch(() => [] as string[])) {
    // `….old` is an earlier output set aside by --overwrite: never ours to remove.
    if (!name.startsWith(prefix) || name.includes('.', prefix.length)) continue;
    const dir = path.join(parent, name);
    try {
      const st = await fs.promises.lstat(dir);
      const made = st.birthtimeMs > 0 ? st.birthtimeMs : st.ctimeMs;
      if (!st.isDirectory() || st.uid !== process.getuid?.() || made < since) continue;
      if ((await fs.promises.lstat(path.join(dir, OWNER_FILE)).catch(() => undefined)) !== undefined)
        continue;
      await fs.promises.rm(dir, { recursive: true, force: true });
      removed.push(dir);
    } catch {
      // gone meanwhile: nothing to do
    }
  }
  return removed;
}

export class Jobs {
  /** Unfinished jobs' event feeds. */
  private readonly feeds = new Map<string, JobFeed>();
  private readonly queue: string[] = [];
  private readonly running = new Map<string, Running>();
  private stopping = false;
  private flushTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: JobsOptions) {}

  /** Recovers what a previous process left, then starts the queued jobs. */
  async start(): Promise<void> {
    const { store, roots } = this.o;
    for (const row of store.inState('running')) {
      const target = row.out === undefined ? undefined : path.join(roots.out.real, row.out);
      const completed =
        target !== undefined && fs.existsSync(path.join(target, REPORT_FILE))
          ? `; ${row.out} exists: the merge may have completed just before the stop (see its ${REPORT_FILE})`
          : '';
      const error = {
        code: 'CANCELLED',
        message: `the server stopped while this job ran; resubmit it${completed}`,
      };
      new JobFeed(row.seq, row.lastEvent).commit('state', { state: 'interrupted', error }, (events) =>
        store.transition(row.seq, { state: 'interrupted', finishedAt: now(), error }, events),
      );
      // The staging folder the dead process left beside OUT: its owner record proves it dead, or (killed
      // while the record was being written, or once the commit had removed it) it has none.
      if (target !== undefined) {
        const removed = [
          ...(await sweepStaleStaging(target)).map((r) => r.dir),
          ...(await sweepRecordless(target, row.startedAt)),
        ];
        for (const dir of removed)
          this.o.log.info({ job: row.id, dir }, 'removed the staging folder of an interrupted job');
      }
      this.o.log.warn({ job: row.id }, 'job interrupted by the previous stop');
    }
    for (const row of store.inState('queued')) {
      this.queue.push(row.id);
      this.feeds.set(row.id, new JobFeed(row.seq, row.lastEvent));
    }
    this.flushTimer = setInterval(() => this.flush(), FLUSH_INTERVAL_MS);
    this.flushTimer.unref();
    this.pump();
  }

  /** Checks `request` against the API and the roots, commits it, and queues it. */
  async submit(request: JobRequest): Promise<JobRow> {
    this.refuseWhenStopping();
    this.refuseWhenFull();
    const prepared = await prepareJob(request, this.o.roots);
    const out = prepared.kind === 'merge' ? path.basename(prepared.options.out!) : undefined;
    if (out !== undefined) {
      const other = this.o.store.pendingWithOut(out);
      if (other !== undefined)
        throw new HttpError(
          409,
          'BAD_OUTPUT_PATH',
          `job ${other.id} already writes out ${JSON.stringify(out)}`,
        );
    }
    // Checked again: other requests ran while this one was checked.
    this.refuseWhenStopping();
    this.refuseWhenFull();
    const id = crypto.randomUUID();
    this.o.probe?.('submit:checked', id);
    this.o.store.insert({ id, kind: request.kind, request, out, createdAt: now() });
    this.o.probe?.('submit:committed', id);
    const row = this.o.store.get(id)!;
    this.queue.push(id);
    this.feeds.set(id, new JobFeed(row.seq, row.lastEvent));
    this.o.log.info({ job: id, kind: request.kind }, 'job queued');
    this.pump();
    return this.o.store.get(id)!;
  }

  get(id: string): JobRow | undefined {
    return this.o.store.get(id);
  }

  /** Newest first; `before`: the id the page starts after. */
  list(limit: number, before: string | undefined): { jobs: JobRow[]; more: boolean } {
    return this.o.store.list(limit, before);
  }

  /** A finished job's report JSON text and picture. */
  report(row: JobRow): { json: string; picture: string | undefined } | undefined {
    return row.hasReport ? this.o.store.report(row.seq) : undefined;
  }

  /** The latest progress of a running job (the stored one lags by up to a second). */
  liveProgress(id: string): Progress | undefined {
    return this.running.get(id)?.progress;
  }

  /** Every warning of a job, the ones not yet persisted included. */
  warnings(row: JobRow): string[] {
    const pending = this.feeds.get(row.id)?.pendingAfter(row.lastEvent) ?? [];
    return [
      ...this.o.store.warnings(row.seq),
      ...pending.filter((e) => e.type === 'warning').map((e) => (e.data as { message: string }).message),
    ];
  }

  warningCount(row: JobRow): number {
    const pending = this.feeds.get(row.id)?.pendingAfter(row.lastEvent) ?? [];
    return this.o.store.warningCount(row.seq) + pending.filter((e) => e.type === 'warning').length;
  }

  /**
   * The events after `after` for a client that (re)connects, and the feed to listen to for the rest
   * (undefined once the job is finished: the replay ends with its final state).
   */
  replay(row: JobRow, after: number): { events: JobEvent[]; feed: JobFeed | undefined } {
    const feed = this.feeds.get(row.id);
    const events = this.o.store.events(row.seq, after);
    if (feed !== undefined) events.push(...feed.pendingAfter(Math.max(after, events.at(-1)?.id ?? 0)));
    else if (events.length === 0) {
      // A finished job, and the client has seen ids up to or past its end. Either it saw the final
      // state, or — a server killed with kill -9 sends progress ids it never stored, and the restart's
      // `interrupted` takes the next stored id — it saw ids this job's end now reuses. Either way it
      // gets the final state again, so its stream ends instead of resuming forever.
      const final = this.o.store.lastState(row.seq);
      if (final !== undefined) events.push(final);
    }
    return { events, feed };
  }

  /** A queued job is cancelled at once; a running one through its signal. */
  cancel(id: string): JobRow {
    const row = this.found(id);
    const running = this.running.get(id);
    if (running !== undefined) {
      running.reason ??= 'cancel';
      running.controller.abort(new Error('cancelled by a client'));
      return row;
    }
    if (row.state !== 'queued') throw new HttpError(409, 'CONFLICT', `job ${id} is already ${row.state}`);
    const error = { code: 'CANCELLED', message: 'cancelled by a client before it started' };
    this.feeds
      .get(id)!
      .commit('state', { state: 'cancelled', error }, (events) =>
        this.o.store.transition(row.seq, { state: 'cancelled', finishedAt: now(), error }, events),
      );
    this.o.probe?.('cancel:committed', id);
    this.queue.splice(this.queue.indexOf(id), 1);
    this.feeds.delete(id);
    this.o.log.info({ job: id }, 'job cancelled');
    return this.o.store.get(id)!;
  }

  /** Forgets a finished job: its record, events and report. Its output stays where it is. */
  forget(id: string): void {
    const row = this.found(id);
    if (!isFinal(row.state))
      throw new HttpError(409, 'CONFLICT', `job ${id} is ${row.state}: cancel it first, then forget it`);
    this.o.store.delete(row.seq);
  }

  /**
   * Stops: no job starts any more, running ones are cancelled (their staging removed by the library)
   * and marked `interrupted`; queued ones stay queued in the store.
   */
  async stop(reason: string): Promise<void> {
    this.stopping = true;
    if (this.flushTimer !== undefined) clearInterval(this.flushTimer);
    for (const r of this.running.values()) {
      r.reason ??= 'shutdown';
      r.controller.abort(new Error(reason));
    }
    await Promise.all([...this.running.values()].map((r) => r.done));
  }

  private found(id: string): JobRow {
    const row = this.o.store.get(id);
    if (row === undefined) throw new HttpError(404, 'NOT_FOUND', `no job ${JSON.stringify(id)}`);
    return row;
  }

  private refuseWhenStopping(): void {
    if (this.stopping) throw new HttpError(503, 'SHUTTING_DOWN', 'the server is stopping');
  }

  private refuseWhenFull(): void {
    if (this.queue.length >= this.o.queueLimit) {
      throw new HttpError(
        429,
        'QUEUE_FULL',
        `${this.queue.length} jobs are already waiting (the server takes at most ${this.o.queueLimit}); try again later`,
      );
    }
  }

  private pump(): void {
    while (!this.stopping && this.running.size < this.o.concurrency && this.queue.length > 0) {
      this.startJob(this.queue.shift()!);
    }
  }

  private startJob(id: string): void {
    const { store } = this.o;
    const row = store.get(id)!;
    const feed = this.feeds.get(id)!;
    this.o.probe?.('job:dequeued', id);
    feed.commit('state', { state: 'running' }, (events) =>
      store.transition(row.seq, { state: 'running', startedAt: now() }, events),
    );
    this.o.probe?.('job:running', id);
    this.o.log.info({ job: id }, 'job started');
    const running: Running = {
      controller: new AbortController(),
      reason: undefined,
      progress: undefined,
      done: Promise.resolve(),
    };
    this.running.set(id, running);
    running.done = this.execute(row, feed, running)
      .catch((e: unknown) => this.o.log.error({ job: id, err: e }, 'could not record the end of a job'))
      .finally(() => {
        this.running.delete(id);
        this.feeds.delete(id);
        this.pump();
      });
  }

  private async execute(row: JobRow, feed: JobFeed, running: Running): Promise<void> {
    const { store, roots } = this.o;
    const signal = running.controller.signal;
    const throttle = new ProgressThrottle(PROGRESS_INTERVAL_MS, (p) => feed.emit('progress', p));
    const warn = (message: string): void => feed.emit('warning', { message: roots.scrub(message) });
    let outcome: { report: InspectReport } | { error: unknown };
    try {
      // Checked again now: a link swapped in since the submit is refused here.
      const prepared = await prepareJob(row.request, roots);
      for (const w of prepared.warnings) warn(`config: ${w}`);
      const hooks = {
        signal,
        memory: this.o.memory,
        onWarning: warn,
        hub: { onWarning: warn },
        onProgress: (p: MergeProgress) => {
          this.o.probe?.('job:progress', row.id);
          running.progress = progressOf(p);
          throttle.update(running.progress);
        },
      };
      const report =
        prepared.kind === 'merge'
          ? await mergeModelStock({ ...prepared.options, out: prepared.options.out!, ...hooks })
          : await inspectModelStock({ ...prepared.options, ...hooks });
      outcome = { report };
    } catch (e) {
      outcome = { error: e };
    }
    this.o.probe?.('job:settled', row.id);

    if ('report' in outcome) {
      await throttle.drain();
      const pictureWarnings: string[] = [];
      const picture = await reportPicture(outcome.report, (w) => pictureWarnings.push(w));
      for (const w of pictureWarnings) warn(w);
      const json = await runSliced(reportText(outcome.report));
      const progress = running.progress;
      feed.commit('state', { state: 'succeeded' }, (events) =>
        store.transition(
          row.seq,
          { state: 'succeeded', finishedAt: now(), progress, report: { json, picture } },
          events,
        ),
      );
      this.o.log.info({ job: row.id }, 'job succeeded');
    } else {
      throttle.stop();
      const { state, error } = this.failure(outcome.error, running);
      feed.commit('state', { state, error }, (events) =>
        store.transition(
          row.seq,
          { state, finishedAt: now(), error, ...(running.progress ? { progress: running.progress } : {}) },
          events,
        ),
      );
      const log = state === 'failed' ? this.o.log.warn : this.o.log.info;
      log.call(this.o.log, { job: row.id, code: error.code }, `job ${state}`);
      if (error.code === 'INTERNAL_ERROR') this.o.log.error({ job: row.id, err: outcome.error }, 'job fault');
    }
    this.o.probe?.('job:finished', row.id);
  }

  private failure(
    e: unknown,
    running: Running,
  ): { state: 'failed' | 'cancelled' | 'interrupted'; error: JobError } {
    const { code, message } = describeError(e, (m) => this.o.roots.scrub(m));
    if (code === 'CANCELLED' && running.reason === 'cancel')
      return { state: 'cancelled', error: { code, message: 'cancelled by a client' } };
    if (code === 'CANCELLED' && running.reason === 'shutdown')
      return {
        state: 'interrupted',
        error: { code, message: 'the server stopped while this job ran; resubmit it' },
      };
    return { state: 'failed', error: { code, message } };
  }

  /** Each running job's pending progress and warnings, in one transaction each. */
  private flush(): void {
    for (const [id, feed] of this.feeds) {
      if (!this.running.has(id)) continue;
      const progress = feed.lastPendingProgress();
      const events = feed.takePending();
      if (events.length === 0) continue;
      try {
        this.o.store.flush(feed.seq, events, progress);
        this.o.probe?.('job:flushed', id);
      } catch (e) {
        this.o.log.error({ job: id, err: e }, 'could not persist progress');
      }
    }
  }
}
