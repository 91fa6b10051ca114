/**
 * The jobs' durable record: one SQLite file in the --state folder. Jobs, their requests, states,
 * events (progress, warnings, states — replayed to late SSE clients) and final reports survive a
 * restart and `kill -9` at any moment.
 *
 * - WAL journal: a commit is an append, a crash mid-commit leaves the previous state.
 * - synchronous=FULL for what a client is promised (a job's insert before its 201, every state change,
 *   the final report): committed means on disk, power loss included. Progress and warnings are flushed
 *   at most once a second with synchronous=NORMAL — durable against a killed process (the WAL is
 *   written before the commit returns), and on power loss only the last second of them is lost, never
 *   a state. So the fsyncs a running merge causes stay a few per job, not one per event.
 * - locking_mode=EXCLUSIVE: this connection holds the file's lock from the first write until it
 *   closes (the kernel drops it when the process dies), so a second server on the same --state fails
 *   at once. It also keeps the WAL index in memory: no -shm file.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { JobKind, JobRequest } from './request';
import type { JobError, JobState, Progress } from './wire';
import { openSqlite, type SqliteDatabase, type SqliteStatement } from './sqlite';

export type { JobError, JobState, Progress };

export const JOB_STATES: readonly JobState[] = [
  'queued',
  'running',
  'succeeded',
  'failed',
  'cancelled',
  'interrupted',
];
const FINAL: ReadonlySet<JobState> = new Set(['succeeded', 'failed', 'cancelled', 'interrupted']);
export const isFinal = (s: JobState): boolean => FINAL.has(s);

export const NO_PROGRESS: Progress = { bytesDone: 0, bytesTotal: 0, tensorsDone: 0, tensorsTotal: 0 };

export type EventType = 'progress' | 'warning' | 'state';

/** One Server-Sent Event of a job: ids count from 1 per job. */
export interface JobEvent {
  readonly id: number;
  readonly type: EventType;
  /** progress: Progress; warning: {message}; state: {state, error?}. */
  readonly data: unknown;
}

export interface JobRow {
  readonly seq: number;
  readonly id: string;
  readonly kind: JobKind;
  readonly state: JobState;
  readonly request: JobRequest;
  /** A merge's output name (inside --out). */
  readonly out: string | undefined;
  readonly createdAt: string;
  readonly startedAt: string | undefined;
  readonly finishedAt: string | undefined;
  readonly progress: Progress;
  readonly error: JobError | undefined;
  /** The id of the job's last persisted event. */
  readonly lastEvent: number;
  readonly hasReport: boolean;
}

export const DB_FILE = 'jobs.sqlite';
const PID_FILE = 'serve.pid';
const SCHEMA_VERSION = 1;

export class StateLockedError extends Error {}

interface RawJob {
  seq: number;
  id: string;
  kind: JobKind;
  state: JobState;
  request: string;
  out: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  progress: string | null;
  error: string | null;
  last_event: number;
  has_report: number;
}

const JOB_COLUMNS =
  'seq, id, kind, state, request, out, created_at, started_at, finished_at, progress, error, last_event, ' +
  'EXISTS (SELECT 1 FROM reports r WHERE r.job_seq = jobs.seq) AS has_report';

function toRow(r: RawJob): JobRow {
  return {
    seq: r.seq,
    id: r.id,
    kind: r.kind,
    state: r.state,
    request: JSON.parse(r.request) as JobRequest,
    out: r.out ?? undefined,
    createdAt: r.created_at,
    startedAt: r.started_at ?? undefined,
    finishedAt: r.finished_at ?? undefined,
    progress: r.progress === null ? NO_PROGRESS : (JSON.parse(r.progress) as Progress),
    error: r.error === null ? undefined : (JSON.parse(r.error) as JobError),
    lastEvent: r.last_event,
    hasReport: r.has_report === 1,
  };
}

/** A change of a job's state, committed with the events that announce it. */
export interface Transition {
  readonly state: JobState;
  readonly startedAt?: string;
  readonly finishedAt?: string;
  readonly error?: JobError;
  readonly progress?: Progress;
  /** The final report's JSON text and its picture. */
  readonly report?: { readonly json: string; readonly picture: string | undefined };
}

export class JobStore {
  /** Statements compiled once: a request reads a few rows, and compiling SQL each time cost more. */
  private readonly statements = new Map<string, SqliteStatement>();

  private constructor(
    private readonly db: SqliteDatabase,
    readonly dir: string,
  ) {}

  private sql(text: string): SqliteStatement {
    let statement = this.statements.get(text);
    if (statement === undefined) this.statements.set(text, (statement = this.db.prepare<unknown[]>(text)));
    return statement;
  }

  static async open(dir: string, options: { readonly nativeBinding?: string } = {}): Promise<JobStore> {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = path.join(dir, DB_FILE);
    const db = await openSqlite(file, { nativeBinding: options.nativeBinding, timeout: 0 });
    try {
      db.pragma('locking_mode = EXCLUSIVE');
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      // Takes the exclusive lock now, and keeps it: a second server fails here.
      db.exec('BEGIN EXCLUSIVE');
      const version = db.pragma('user_version', { simple: true }) as number;
      if (version > SCHEMA_VERSION) {
        db.exec('ROLLBACK');
        throw new Error(`${file} was written by a newer model-stock (schema ${version}); use that version`);
      }
      db.exec(SCHEMA);
      db.pragma(`user_version = ${SCHEMA_VERSION}`);
      db.exec('COMMIT');
    } catch (e) {
      db.close();
      if ((e as { code?: string }).code === 'SQLITE_BUSY') {
        const pid = readPid(dir);
        throw new StateLockedError(
          `the state folder ${dir} is in use by another model-stock serve${pid === undefined ? '' : ` (pid ${pid})`}; ` +
            'stop it, or give this one another --state',
        );
      }
      throw e;
    }
    // Informational only (the lock is the database's): names the holder in the message above.
    fs.writeFileSync(path.join(dir, PID_FILE), `${process.pid}\n`);
    return new JobStore(db, dir);
  }

  close(): void {
    if (!this.db.open) return;
    this.db.close();
    fs.rmSync(path.join(this.dir, PID_FILE), { force: true });
  }

  /** A new queued job and its first event (`state: queued`), committed durably. */
  insert(job: {
    readonly id: string;
    readonly kind: JobKind;
    readonly request: JobRequest;
    readonly out: string | undefined;
    readonly createdAt: string;
  }): void {
    this.durable(() => {
      const { lastInsertRowid } = this.sql(
        "INSERT INTO jobs (id, kind, state, request, out, created_at, last_event) VALUES (?, ?, 'queued', ?, ?, ?, 0)",
      ).run(job.id, job.kind, JSON.stringify(job.request), job.out ?? null, job.createdAt);
      this.appendEvents(Number(lastInsertRowid), [{ id: 1, type: 'state', data: { state: 'queued' } }]);
    });
  }

  get(id: string): JobRow | undefined {
    const r = this.sql(`SELECT ${JOB_COLUMNS} FROM jobs WHERE id = ?`).get(id) as RawJob | undefined;
    return r === undefined ? undefined : toRow(r);
  }

  /** Newest first; `before`: a job id, the page starts after it. */
  list(limit: number, before: string | undefined): { jobs: JobRow[]; more: boolean } {
    const rows = (
      before === undefined
        ? this.sql(`SELECT ${JOB_COLUMNS} FROM jobs ORDER BY seq DESC LIMIT ?`).all(limit + 1)
        : this.sql(
            `SELECT ${JOB_COLUMNS} FROM jobs WHERE seq < (SELECT seq FROM jobs WHERE id = ?) ORDER BY seq DESC LIMIT ?`,
          ).all(before, limit + 1)
    ) as RawJob[];
    return { jobs: rows.slice(0, limit).map(toRow), more: rows.length > limit };
  }

  /** Jobs in `state`, oldest first. */
  inState(state: JobState): JobRow[] {
    return (
      this.sql(`SELECT ${JOB_COLUMNS} FROM jobs WHERE state = ? ORDER BY seq`).all(state) as RawJob[]
    ).map(toRow);
  }

  /** A merge job not yet finished that writes `out`. */
  pendingWithOut(out: string): JobRow | undefined {
    const r = this.sql(
      `SELECT ${JOB_COLUMNS} FROM jobs WHERE out = ? AND state IN ('queued', 'running') LIMIT 1`,
    ).get(out) as RawJob | undefined;
    return r === undefined ? undefined : toRow(r);
  }

  /** Persisted events with ids above `after`, in order. */
  events(seq: number, after: number): JobEvent[] {
    return (
      this.sql('SELECT id, type, data FROM events WHERE job_seq = ? AND id > ? ORDER BY id').all(
        seq,
        after,
      ) as { id: number; type: EventType; data: string }[]
    ).map((e) => ({ id: e.id, type: e.type, data: JSON.parse(e.data) as unknown }));
  }

  /** The job's last `state` event (a finished job's final state). */
  lastState(seq: number): JobEvent | undefined {
    const e = this.sql(
      "SELECT id, type, data FROM events WHERE job_seq = ? AND type = 'state' ORDER BY id DESC LIMIT 1",
    ).get(seq) as { id: number; type: EventType; data: string } | undefined;
    return e === undefined ? undefined : { id: e.id, type: e.type, data: JSON.parse(e.data) as unknown };
  }

  warnings(seq: number): string[] {
    return (
      this.sql("SELECT data FROM events WHERE job_seq = ? AND type = 'warning' ORDER BY id").all(seq) as {
        data: string;
      }[]
    ).map((e) => (JSON.parse(e.data) as { message: string }).message);
  }

  warningCount(seq: number): number {
    const r = this.sql("SELECT COUNT(*) AS n FROM events WHERE job_seq = ? AND type = 'warning'").get(
      seq,
    ) as { n: number };
    return r.n;
  }

  report(seq: number): { json: string; picture: string | undefined } | undefined {
    const r = this.sql('SELECT json, picture FROM reports WHERE job_seq = ?').get(seq) as
      { json: string; picture: string | null } | undefined;
    return r === undefined ? undefined : { json: r.json, picture: r.picture ?? undefined };
  }

  /** Progress and warnings of a running job (at most once a second): not fsynced, see above. */
  flush(seq: number, events: readonly JobEvent[], progress: Progress | undefined): void {
    this.db.pragma('synchronous = NORMAL');
    try {
      this.db.transaction(() => {
        this.appendEvents(seq, events);
        if (progress !== undefined)
          this.sql('UPDATE jobs SET progress = ? WHERE seq = ?').run(JSON.stringify(progress), seq);
      })();
    } finally {
      this.db.pragma('synchronous = FULL');
    }
  }

  /** A state change with its events (and a final report), durable before it returns. */
  transition(seq: number, t: Transition, events: readonly JobEvent[]): void {
    this.durable(() => {
      this.appendEvents(seq, events);
      this.sql(
        `UPDATE jobs SET state = ?, started_at = COALESCE(?, started_at), finished_at = COALESCE(?, finished_at),
             error = COALESCE(?, error), progress = COALESCE(?, progress) WHERE seq = ?`,
      ).run(
        t.state,
        t.startedAt ?? null,
        t.finishedAt ?? null,
        t.error === undefined ? null : JSON.stringify(t.error),
        t.progress === undefined ? null : JSON.stringify(t.progress),
        seq,
      );
      if (t.report !== undefined)
        this.sql('INSERT INTO reports (job_seq, json, picture) VALUES (?, ?, ?)').run(
          seq,
          t.report.json,
          t.report.picture ?? null,
        );
    });
  }

  /** Forgets a job: its row, events and report (never its output). */
  delete(seq: number): void {
    this.durable(() => {
      this.sql('DELETE FROM events WHERE job_seq = ?').run(seq);
      this.sql('DELETE FROM reports WHERE job_seq = ?').run(seq);
      this.sql('DELETE FROM jobs WHERE seq = ?').run(seq);
    });
  }

  /** `PRAGMA integrity_check`'s verdict: "ok" for a sound file. */
  integrity(): string {
    return String(this.db.pragma('integrity_check', { simple: true }));
  }

  private appendEvents(seq: number, events: readonly JobEvent[]): void {
    if (events.length === 0) return;
    const insert = this.sql('INSERT INTO events (job_seq, id, type, data) VALUES (?, ?, ?, ?)');
    for (const e of events) insert.run(seq, e.id, e.type, JSON.stringify(e.data));
    this.sql('UPDATE jobs SET last_event = MAX(last_event, ?) WHERE seq = ?').run(
      events[events.length - 1]!.id,
      seq,
    );
  }

  private durable(work: () => void): void {
    this.db.transaction(work).exclusive();
  }
}

function readPid(dir: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(path.join(dir, PID_FILE), 'utf8').trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL,
  state TEXT NOT NULL,
  request TEXT NOT NULL,
  out TEXT,
  created_at TEXT NOT NULL,
  started_at TEXT,
  finished_at TEXT,
  progress TEXT,
  error TEXT,
  last_event INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_by_out ON jobs (out) WHERE out IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
  job_seq INTEGER NOT NULL,
  id INTEGER NOT NULL,
  type TEXT NOT NULL,
  data TEXT NOT NULL,
  PRIMARY KEY (job_seq, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reports (
  job_seq INTEGER PRIMARY KEY,
  json TEXT NOT NULL,
  picture TEXT
);
`;
