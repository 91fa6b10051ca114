/**
 * The list of jobs, newest first, a page at a time (GET /api/jobs?limit&before): state, kind, what it
 * merges, when, how far. Kept fresh while any listed job is unfinished, and whenever the panel sees a
 * job change state.
 */
import { describe, FINAL_STATES, type Api, type JobPage, type JobSummary } from './api.js';
import { byId, fill, formatTime, h } from './dom.js';
import { describeRequest } from './job.js';

export const PAGE_SIZE = 10;
/** How often the list is refreshed while a listed job is unfinished. */
const POLL_MS = 3000;

export interface JobListHooks {
  readonly onOpen: (job: JobSummary) => void;
  /** The id of the job the panel shows (its row is marked). */
  readonly current: () => string | undefined;
}

export class JobList {
  private readonly rows = byId('jobs-body');
  private readonly newer = byId<HTMLButtonElement>('jobs-newer');
  private readonly older = byId<HTMLButtonElement>('jobs-older');
  private readonly error = byId('jobs-error');
  /** The `before` of each page shown so far; the last is the current page's (undefined: the first). */
  private readonly pages: (string | undefined)[] = [undefined];
  private next: string | undefined;
  private jobs: readonly JobSummary[] = [];
  private timer: number | undefined;
  private loading: Promise<void> | undefined;
  private again = false;

  constructor(
    private readonly api: Api,
    private readonly hooks: JobListHooks,
  ) {
    byId('jobs-refresh').addEventListener('click', () => void this.refresh());
    this.newer.addEventListener('click', () => {
      if (this.pages.length > 1) this.pages.pop();
      void this.refresh();
    });
    this.older.addEventListener('click', () => {
      if (this.next === undefined) return;
      this.pages.push(this.next);
      void this.refresh();
    });
  }

  /** The listed entry of `id`, if the current page has it. */
  find(id: string): JobSummary | undefined {
    return this.jobs.find((j) => j.id === id);
  }

  /** Shows the first page (the newest jobs). */
  async first(): Promise<void> {
    this.pages.splice(1);
    await this.refresh();
  }

  /** Loads the current page again; calls made while one loads coalesce into one more. */
  async refresh(): Promise<void> {
    if (this.loading !== undefined) {
      this.again = true;
      return this.loading;
    }
    this.loading = (async () => {
      do {
        this.again = false;
        await this.load();
      } while (this.again);
    })().finally(() => (this.loading = undefined));
    return this.loading;
  }

  /** Marks the row of the job the panel shows. */
  mark(): void {
    const current = this.hooks.current();
    for (const tr of this.rows.querySelectorAll('tr'))
      if (tr.dataset.id === current) tr.setAttribute('aria-current', 'true');
      else tr.removeAttribute('aria-current');
  }

  private async load(): Promise<void> {
    const before = this.pages.at(-1);
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (before !== undefined) query.set('before', before);
    try {
      const page = await this.api.json<JobPage>('GET', `/api/jobs?${query}`);
      fill(this.error);
      this.jobs = page.jobs;
      this.next = page.next;
      this.render();
    } catch (e) {
      const { code, message } = describe(e);
      fill(this.error, h('code', { class: 'code' }, code), ' ', message);
      // The page asked for may be gone (its `before` job forgotten): back to the newest.
      if (code === 'NOT_FOUND' && this.pages.length > 1) this.pages.splice(1);
    }
    window.clearTimeout(this.timer);
    if (this.jobs.some((j) => !FINAL_STATES.has(j.state)))
      this.timer = window.setTimeout(() => void this.refresh(), POLL_MS);
  }

  private render(): void {
    fill(this.rows, ...this.jobs.map((j) => this.row(j)));
    byId('jobs-empty').hidden = this.jobs.length > 0 || this.pages.length > 1;
    this.newer.disabled = this.pages.length <= 1;
    this.older.disabled = this.next === undefined;
    const from = (this.pages.length - 1) * PAGE_SIZE + 1;
    fill(
      byId('jobs-range'),
      this.jobs.length === 0 ? '' : `${from}–${from + this.jobs.length - 1}${this.next ? '' : ' (oldest)'}`,
    );
    this.mark();
  }

  private row(j: JobSummary): HTMLTableRowElement {
    const p = j.progress;
    const percent =
      j.state === 'succeeded'
        ? '100%'
        : p.bytesTotal > 0
          ? `${Math.floor((100 * p.bytesDone) / p.bytesTotal)}%`
          : '';
    return h(
      'tr',
      { 'data-id': j.id, 'data-state': j.state },
      h('td', {}, h('span', { class: `state state-${j.state}` }, j.state)),
      h(
        'td',
        {},
        h(
          'button',
          {
            type: 'button',
            class: 'link',
            'aria-label': `Open ${j.kind} ${j.id}`,
            onclick: () => this.hooks.onOpen(j),
          },
          `${j.kind} ${j.id.slice(0, 8)}`,
        ),
      ),
      h(
        'td',
        { class: 'what' },
        describeRequest(j.request),
        j.error !== undefined ? h('div', { class: 'muted' }, h('code', {}, j.error.code)) : null,
        j.warningCount > 0
          ? h('div', { class: 'muted' }, `${j.warningCount} warning${j.warningCount === 1 ? '' : 's'}`)
          : null,
      ),
      h('td', { class: 'opt' }, formatTime(j.createdAt)),
      h('td', { class: 'opt num' }, percent),
    );
  }
}
