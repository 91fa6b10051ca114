/**
 * The merge service's page (served at `/` by `model-stock serve`): a form for new jobs, the job being
 * followed, the list of jobs. Plain TypeScript compiled by tsc (tsconfig.page.json) into ES modules the
 * browser loads as they are; no framework, no build step for users.
 */
import { Api, ApiError, describe } from './api.js';
import { byId, fill, h } from './dom.js';
import { JobForm } from './form.js';
import { JobPanel } from './job.js';
import { JobList } from './list.js';
import { rememberToken, takeToken } from './token.js';

/** Whatever goes wrong is said on the page with its code: never a blank or silent page. */
function showPageError(e: unknown): void {
  const { code, message } = describe(e);
  const banner = byId('page-error');
  fill(banner, h('code', { class: 'code' }, code), ' ', message);
  banner.hidden = false;
}

window.addEventListener('error', (e) => showPageError(e.error ?? new Error(e.message)));
window.addEventListener('unhandledrejection', (e) => showPageError(e.reason));

function askForToken(e: ApiError | undefined): void {
  fill(
    byId('auth-message'),
    e === undefined
      ? 'This page needs the server’s token: open the URL model-stock serve printed (…/?token=…), or paste the token.'
      : h(
          'span',
          {},
          h('code', { class: 'code' }, e.code),
          ` ${e.message}. Paste the token the server printed.`,
        ),
  );
  byId('auth').hidden = false;
}

const api = new Api(takeToken(), askForToken);
const panel = new JobPanel(api, {
  onStateChange: () => void list.refresh(),
  onForgotten: (id) => {
    if (window.location.hash === `#job=${id}`)
      window.history.replaceState(window.history.state, '', window.location.pathname);
    void list.refresh();
  },
});
const list = new JobList(api, {
  onOpen: (job) => open(job),
  current: () => panel.current,
});
const form = new JobForm(api, {
  onSubmitted: (job) => {
    open({ id: job.id });
    // On a narrow screen the job is below the form: bring it into view.
    const title = byId('job-title');
    if (title.getBoundingClientRect().top > window.innerHeight) title.scrollIntoView({ block: 'start' });
    void list.first().then(() => {
      const entry = list.find(job.id);
      if (entry !== undefined) panel.describe(entry);
    });
  },
});

function open(job: Parameters<JobPanel['open']>[0]): void {
  panel.open(job);
  list.mark();
  // The job's address, so a reload comes back to it (the token is not in it).
  window.history.replaceState(window.history.state, '', `#job=${encodeURIComponent(job.id)}`);
}

byId('auth-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = byId<HTMLInputElement>('auth-token');
  const token = input.value.trim();
  if (token === '') return;
  input.value = '';
  api.setToken(token);
  rememberToken(token);
  byId('auth').hidden = true;
  void start();
});

async function start(): Promise<void> {
  await Promise.all([form.loadModels(), list.first()]);
  const fromHash = /^#job=(.+)$/.exec(window.location.hash)?.[1];
  if (fromHash !== undefined && panel.current === undefined) {
    const id = decodeURIComponent(fromHash);
    panel.open(list.find(id) ?? { id });
    list.mark();
  }
}

document.documentElement.classList.add('ready');
void start();
