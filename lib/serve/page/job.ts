/**
 * The job panel: one job followed live through its event stream — state, progress bar, cancel, the
 * error with its code, the warnings grouped by kind as the terminal prints them (the same code:
 * lib/report/warnings.ts), and once it has succeeded, its picture of t and θ per layer.
 */
import { formatWarningGroup, groupWarnings } from '../../report/warnings.js';
import {
  ApiError,
  describe,
  FINAL_STATES,
  type Api,
  type JobError,
  type JobRequest,
  type JobState,
  type Progress,
} from './api.js';
import { byId, fill, formatBytes, formatTime, h } from './dom.js';
import { followJob, type StreamEvent } from './stream.js';

export interface JobPanelHooks {
  /** The job changed state (the list shows it). */
  readonly onStateChange: (id: string, state: JobState) => void;
  /** The job was forgotten (DELETE). */
  readonly onForgotten: (id: string) => void;
}

/** What the panel knows of a job before its events arrive (a list entry, or a 201). */
export interface JobHeader {
  readonly id: string;
  readonly kind?: 'merge' | 'inspect';
  readonly request?: JobRequest;
  readonly createdAt?: string;
}

/** Warnings listed one by one at most (the report keeps them all). */
const MAX_LISTED = 500;

export class JobPanel {
  private readonly body = byId('job-body');
  private readonly stateEl = byId('job-state');
  private readonly bar = byId<HTMLProgressElement>('job-progress');
  private readonly barLabel = byId('job-progress-label');
  private readonly cancel = byId<HTMLButtonElement>('job-cancel');
  private readonly forget = byId<HTMLButtonElement>('job-forget');
  private readonly connection = byId('job-connection');
  private readonly error = byId('job-error');
  private readonly figure = byId('job-figure');
  private readonly picture = byId<HTMLImageElement>('job-picture');

  private job: JobHeader | undefined;
  private state: JobState | undefined;
  private warnings: string[] = [];
  private follow: AbortController | undefined;
  private pictureUrl: string | undefined;
  private warningsTimer: number | undefined;

  constructor(
    private readonly api: Api,
    private readonly hooks: JobPanelHooks,
  ) {
    this.cancel.addEventListener('click', () => void this.act('POST', 'cancel'));
    this.forget.addEventListener('click', () => void this.act('DELETE', ''));
    byId('job-zoom').addEventListener('click', (e) => {
      const button = e.currentTarget as HTMLButtonElement;
      const full = this.figure.classList.toggle('full');
      button.setAttribute('aria-pressed', String(full));
    });
    byId('job-report').addEventListener(
      'click',
      () => void this.download('report', 'model_stock_report.json'),
    );
    byId('job-svg').addEventListener(
      'click',
      () => void this.download('picture.svg', 'model_stock_report.svg'),
    );
  }

  get current(): string | undefined {
    return this.job?.id;
  }

  /** Shows `job` and follows its events (replayed from the first) until it ends. */
  open(job: JobHeader): void {
    this.follow?.abort();
    this.clearPicture();
    this.job = job;
    this.state = undefined;
    this.warnings = [];
    byId('job-empty').hidden = true;
    this.body.hidden = false;
    fill(byId('job-kind'), job.kind === 'inspect' ? 'Inspection' : job.kind === 'merge' ? 'Merge' : 'Job');
    fill(byId('job-id'), job.id);
    fill(byId('job-what'), job.request === undefined ? '' : describeRequest(job.request));
    fill(byId('job-created'), job.createdAt === undefined ? '' : `created ${formatTime(job.createdAt)}`);
    fill(this.error);
    fill(this.connection);
    this.showProgress(undefined);
    this.showState(undefined);
    this.renderWarnings();
    const follow = (this.follow = new AbortController());
    void followJob(this.api, job.id, {
      signal: follow.signal,
      onEvent: (e) => this.event(e),
      onConnection: (c) =>
        fill(this.connection, c === 'reconnecting' ? 'Connection lost; reconnecting…' : ''),
    }).catch((e: unknown) => {
      if (follow.signal.aborted) return;
      this.showError(e, 'Following this job stopped');
    });
  }

  /** Updates the header from a fresher list entry of the shown job. */
  describe(job: JobHeader): void {
    if (job.id !== this.job?.id) return;
    this.job = { ...this.job, ...job };
    if (job.kind !== undefined) fill(byId('job-kind'), job.kind === 'inspect' ? 'Inspection' : 'Merge');
    if (job.request !== undefined) fill(byId('job-what'), describeRequest(job.request));
    if (job.createdAt !== undefined) fill(byId('job-created'), `created ${formatTime(job.createdAt)}`);
  }

  /** Handles one event; true when it is the job's final state. */
  private event(e: StreamEvent): boolean {
    if (e.type === 'progress') this.showProgress(e.data as Progress);
    else if (e.type === 'warning') {
      this.warnings.push((e.data as { message: string }).message);
      this.scheduleWarnings();
    } else if (e.type === 'state') {
      const { state, error } = e.data as { state: JobState; error?: JobError };
      this.showState(state, error);
      this.renderWarnings();
      this.hooks.onStateChange(this.job!.id, state);
      return FINAL_STATES.has(state);
    }
    return false;
  }

  private showState(state: JobState | undefined, error?: JobError): void {
    this.state = state;
    this.stateEl.className = `state state-${state ?? 'unknown'}`;
    this.stateEl.dataset.state = state ?? '';
    fill(this.stateEl, state ?? 'loading…');
    const final = state !== undefined && FINAL_STATES.has(state);
    this.cancel.hidden = final;
    this.cancel.disabled = state === undefined;
    this.forget.hidden = !final;
    if (error !== undefined) fill(this.error, h('code', { class: 'code' }, error.code), ' ', error.message);
    if (state === 'succeeded') {
      this.bar.value = this.bar.max;
      void this.showPicture();
    }
  }

  private showProgress(p: Progress | undefined): void {
    if (p === undefined || p.bytesTotal === 0) {
      this.bar.max = 1;
      this.bar.value = 0;
      fill(this.barLabel, this.state === 'queued' ? 'waiting in the queue' : '');
      return;
    }
    this.bar.max = p.bytesTotal;
    this.bar.value = p.bytesDone;
    const percent = Math.floor((100 * p.bytesDone) / p.bytesTotal);
    fill(
      this.barLabel,
      `${percent}% · ${p.tensorsDone} of ${p.tensorsTotal} tensors · ` +
        `${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)}`,
    );
  }

  /** Warnings arrive one event each, maybe thousands: drawn at most every 200 ms. */
  private scheduleWarnings(): void {
    if (this.warningsTimer !== undefined) return;
    this.warningsTimer = window.setTimeout(() => {
      this.warningsTimer = undefined;
      this.renderWarnings();
    }, 200);
  }

  private renderWarnings(): void {
    const groups = groupWarnings(this.warnings);
    byId('job-warnings-box').hidden = groups.length === 0;
    fill(
      byId('job-warnings-title'),
      `Warnings (${this.warnings.length}${groups.length < this.warnings.length ? ` in ${groups.length} kind${groups.length === 1 ? '' : 's'}` : ''})`,
    );
    fill(byId('job-warnings'), ...groups.map((g) => h('li', {}, formatWarningGroup(g))));
    const listed = this.warnings.slice(0, MAX_LISTED).map((w) => h('li', {}, w));
    const more = this.warnings.length - listed.length;
    fill(
      byId('job-warnings-all'),
      ...listed,
      more > 0 ? h('li', { class: 'muted' }, `… ${more} more in the report`) : null,
    );
  }

  /** The picture is fetched with the token (an <img src> cannot send it) and shown as a blob: URL. */
  private async showPicture(): Promise<void> {
    const id = this.job!.id;
    try {
      const svg = await this.api.blob(`/api/jobs/${encodeURIComponent(id)}/picture.svg`);
      if (this.job?.id !== id) return;
      this.clearPicture();
      this.pictureUrl = URL.createObjectURL(new Blob([svg], { type: 'image/svg+xml' }));
      this.picture.src = this.pictureUrl;
      this.figure.hidden = false;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return; // no picture (a fault drawing it is a warning)
      this.showError(e, 'The picture could not be loaded');
    }
  }

  private clearPicture(): void {
    this.figure.hidden = true;
    this.figure.classList.remove('full');
    byId('job-zoom').setAttribute('aria-pressed', 'false');
    this.picture.removeAttribute('src');
    if (this.pictureUrl !== undefined) URL.revokeObjectURL(this.pictureUrl);
    this.pictureUrl = undefined;
  }

  private async act(method: 'POST' | 'DELETE', action: string): Promise<void> {
    const id = this.job?.id;
    if (id === undefined) return;
    const button = action === 'cancel' ? this.cancel : this.forget;
    button.disabled = true;
    try {
      await this.api.json(method, `/api/jobs/${encodeURIComponent(id)}${action === '' ? '' : `/${action}`}`);
      if (method === 'DELETE') this.close(id);
    } catch (e) {
      this.showError(e, action === 'cancel' ? 'Could not cancel' : 'Could not forget the job');
    } finally {
      button.disabled = false;
    }
  }

  private close(id: string): void {
    this.follow?.abort();
    this.clearPicture();
    this.job = undefined;
    this.body.hidden = true;
    byId('job-empty').hidden = false;
    this.hooks.onForgotten(id);
  }

  /** A file of the job, fetched with the token and handed to the browser as a download. */
  private async download(file: string, name: string): Promise<void> {
    const id = this.job?.id;
    if (id === undefined) return;
    try {
      const blob = await this.api.blob(`/api/jobs/${encodeURIComponent(id)}/${file}`);
      const url = URL.createObjectURL(blob);
      const a = h('a', { href: url, download: name });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (e) {
      this.showError(e, `Could not download ${name}`);
    }
  }

  private showError(e: unknown, context: string): void {
    const { code, message } = describe(e);
    fill(this.error, `${context}: `, h('code', { class: 'code' }, code), ' ', message);
  }
}

/** `base + ft-a, ft-b → out`, or the YAML's base. */
export function describeRequest(r: JobRequest): string {
  const o = r.options;
  const out = o?.out ?? r.out;
  const to = out !== undefined ? ` → ${String(out)}` : '';
  if (o !== undefined) {
    const models = Array.isArray(o.models) ? o.models.map(String).join(', ') : '';
    return `${String(o.base ?? '?')} + ${models}${to}`;
  }
  const base = /^base_model:\s*(.+)$/m.exec(r.config ?? '')?.[1]?.trim();
  return `mergekit YAML${base !== undefined ? ` (base ${base})` : ''}${to}`;
}
