import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { generateFixture, PRESETS } from '../../lib/fixtures/generate';
import { groupedWarningLines } from '../../lib/report/warnings';
import { CSP } from '../../lib/serve/security';
import type { Server } from '../../lib/serve/server';
import { browserProcesses, closeBrowser, launchOrSkip } from '../helpers/browser';
import { writeModel } from '../helpers/models';
import { mulberry32, randomTensor } from '../helpers/random';
import { request, sqliteOrSkip, stagingLeft, startServer, TOKEN, waitForJob } from '../helpers/serve';
import { startServeChild, type ServeChild } from '../helpers/serveChild';
import { useTmpDir } from '../helpers/tmp';

/**
 * The page, driven in headless Chromium against a real server in this process: the token leaves the
 * address bar, a merge of the example fixture moves the bar and shows its picture, warnings are grouped
 * as the terminal groups them, a queued and a running job are cancelled, a bad YAML shows its code,
 * the list pages, the keyboard works, and the page stays readable at 1280 px and at 390 px. Every test
 * also checks that the page broke no rule of its CSP and threw nothing.
 *
 * Screenshots go to MODEL_STOCK_SCREENSHOTS when set (docs/serve-page.png is one), else to the suite's
 * temporary folder.
 */

/**
 * The page's globals as the functions run in it see them. The tests compile with Node's types, not the
 * DOM's (the page itself compiles with the DOM's: tsconfig.page.json); Playwright's checks are the types.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the browser's window, untyped here
type Win = any;

/** Where the page's own problems are collected, per page. */
interface Watched {
  readonly page: Page;
  /** CSP violations the page reported (securitypolicyviolation events). */
  readonly violations: () => Promise<string[]>;
  /** Uncaught exceptions in the page. */
  readonly errors: string[];
  /** /api/* requests: path and the Authorization header sent. */
  readonly api: { path: string; authorization: string | undefined }[];
}

describe('the service page in headless Chromium', function () {
  this.timeout(240_000);
  let context: BrowserContext | undefined;
  let server: Server | undefined;
  let profile = '';
  // Registered before the temporary folder's own `after`: the browser and the server stop first.
  after(async () => {
    const killed = await closeBrowser(context, profile);
    await server?.close();
    assert.deepEqual(killed, [], 'browser processes were still running after the browser closed');
  });
  const tmp = useTmpDir('model-stock-page-');
  let out = '';
  let shots = '';
  const watched: Watched[] = [];

  before(async function () {
    await sqliteOrSkip(this);
    profile = path.join(tmp.dir, 'chromium-profile');
    context = await launchOrSkip(this, profile);
    const models = path.join(tmp.dir, 'models');
    out = path.join(tmp.dir, 'out');
    fs.mkdirSync(out, { recursive: true });
    await generateFixture({ ...PRESETS.example, dir: path.join(models, 'example') });
    await writeWarningModels(path.join(models, 'warn'));
    shots = process.env.MODEL_STOCK_SCREENSHOTS ?? path.join(tmp.dir, 'screenshots');
    fs.mkdirSync(shots, { recursive: true });
    server = await startServer({ models, out, state: path.join(tmp.dir, 'state') });
  });

  afterEach(async () => {
    for (const w of watched.splice(0)) {
      assert.deepEqual(await w.violations(), [], 'the page broke its CSP');
      assert.deepEqual(w.errors, [], 'the page threw');
      await w.page.close();
    }
  });

  /** A new tab on `url` (default: the URL the server prints, token included), watched. */
  async function open(url = server!.openUrl, ready = true): Promise<Watched> {
    const page = await context!.newPage();
    const w: Watched = {
      page,
      errors: [],
      api: [],
      violations: () =>
        page.evaluate(() => ((globalThis as Win).cspViolations as string[] | undefined) ?? []),
    };
    await page.addInitScript(() => {
      const list: string[] = [];
      const win = globalThis as Win;
      win.cspViolations = list;
      win.document.addEventListener('securitypolicyviolation', (e: Win) =>
        list.push(`${e.violatedDirective} ${e.blockedURI}`),
      );
    });
    page.on('pageerror', (e) => w.errors.push(String(e)));
    page.on('request', (r) => {
      const p = new URL(r.url()).pathname;
      if (p.startsWith('/api/'))
        void r.allHeaders().then((h) => w.api.push({ path: p, authorization: h.authorization }));
    });
    watched.push(w);
    const res = await page.goto(url);
    assert.equal(res?.status(), 200);
    if (ready) await page.locator('#base option').first().waitFor({ state: 'attached' });
    return w;
  }

  const state = (page: Page) => page.locator('#job-state');
  const waitState = (page: Page, s: string, timeout = 120_000) =>
    page.locator(`#job-state[data-state="${s}"]`).waitFor({ timeout });

  async function pick(page: Page, base: string, models: string[], out: string): Promise<void> {
    await page.locator('#base').selectOption(base);
    for (const m of models) await page.locator(`input[name=model][value="${m}"]`).check();
    await page.locator('#out').fill(out);
  }

  it('takes the token from its URL, removes it from the address bar, and sends it as Bearer on every call', async () => {
    const { page, api } = await open();
    const index = await request(server!.port, 'GET', '/', { token: null });
    assert.equal(index.headers['content-security-policy'], CSP.page);
    assert.doesNotMatch(index.text, /<script(?![^>]*\bsrc=)/, 'an inline script');
    assert.equal(new URL(page.url()).search, '', page.url());
    assert.ok(!page.url().includes(TOKEN));
    assert.equal(
      await page.evaluate(() => (globalThis as Win).sessionStorage.getItem('model-stock-serve-token')),
      TOKEN,
    );
    assert.equal(await page.evaluate(() => (globalThis as Win).document.cookie), '');
    assert.deepEqual(await context!.cookies(), []);
    await page.locator('#jobs-range, #jobs-empty').first().waitFor({ state: 'attached' });
    const calls = api.filter((c) => c.path !== '/api/health');
    assert.ok(calls.some((c) => c.path === '/api/models') && calls.some((c) => c.path === '/api/jobs'));
    for (const c of calls) assert.equal(c.authorization, `Bearer ${TOKEN}`, c.path);
    // The models the server lists, as the form offers them.
    const offered = await page.locator('#base option').evaluateAll((o) => o.map((x) => x.value as string));
    assert.deepEqual(offered.sort(), [
      'example/base',
      'example/ft1',
      'example/ft2',
      'warn/base',
      'warn/ft-a',
      'warn/ft-b',
    ]);
    assert.equal(await page.locator('#base').inputValue(), 'example/base');
  });

  it('without a token it asks for one, says why, and works once it is given', async () => {
    const { page } = await open(server!.url, false);
    await page.locator('#auth').waitFor({ state: 'visible' });
    assert.match(await page.locator('#auth-message').innerText(), /UNAUTHORIZED/);
    await page.locator('#auth-token').fill(TOKEN);
    await page.keyboard.press('Enter');
    await page.locator('#auth').waitFor({ state: 'hidden' });
    await page.locator('#base option[value="example/base"]').waitFor({ state: 'attached' });
    assert.equal(await page.locator('#form-error').innerText(), '');
  });

  it('merges the example fixture: the bar moves, the picture of t and θ appears, the list shows it', async () => {
    const { page } = await open();
    await pick(page, 'example/base', ['example/ft1', 'example/ft2'], 'page-merge');
    // The js backend: a merge long enough for several progress events (at most one per 250 ms).
    await page.locator('details summary').first().click();
    await page.locator('#backend').selectOption('js');
    await page.evaluate(() => {
      const win = globalThis as Win;
      const bar = win.document.getElementById('job-progress');
      const seen: [number, number][] = [];
      win.bar = seen;
      new win.MutationObserver(() => seen.push([bar.value, bar.max])).observe(bar, { attributes: true });
    });
    await page.locator('#submit').click();
    await waitState(page, 'succeeded');
    const bar = await page.evaluate(() => (globalThis as Win).bar as [number, number][]);
    const total = Math.max(...bar.map(([, max]) => max));
    assert.ok(total > 1e8, `the bar's maximum is the merge's bytes: ${JSON.stringify(bar)}`);
    const between = bar.filter(([v, max]) => max === total && v > 0 && v < total);
    assert.ok(between.length >= 1, `the bar showed no value between empty and full: ${JSON.stringify(bar)}`);
    const values = bar.filter(([, max]) => max === total).map(([v]) => v);
    assert.deepEqual(
      values,
      [...values].sort((a, b) => a - b),
      'the bar went backwards',
    );
    assert.equal(await page.locator('#job-progress').evaluate((b) => b.position as number), 1);
    assert.match(await page.locator('#job-progress-label').innerText(), /^100% · 75 of 75 tensors/);

    await page.locator('#job-figure').waitFor({ state: 'visible' });
    const picture = await page.locator('#job-picture').evaluate((img) => ({
      src: img.src as string,
      width: img.naturalWidth as number,
    }));
    assert.match(picture.src, /^blob:/);
    assert.ok(picture.width > 300, `the picture did not render: ${JSON.stringify(picture)}`);
    assert.ok(fs.existsSync(path.join(out, 'page-merge', 'model_stock_report.json')));
    assert.deepEqual(stagingLeft(out), []);

    const id = await page.locator('#job-id').innerText();
    const row = page.locator(`#jobs-body tr[data-id="${id}"]`);
    await page.locator(`#jobs-body tr[data-id="${id}"][data-state="succeeded"]`).waitFor();
    assert.equal(await row.getAttribute('aria-current'), 'true');
    assert.match(await row.innerText(), /example\/base \+ example\/ft1, example\/ft2 → page-merge/);
    assert.equal(new URL(page.url()).hash, `#job=${id}`);

    await page.screenshot({ path: path.join(shots, 'page-1280.png'), fullPage: true });
    // Two columns side by side at 1280 px: the form and the job.
    const form = (await page.locator('#job-form').boundingBox())!;
    const job = (await page.locator('#job-body').boundingBox())!;
    assert.ok(job.x > form.x + form.width, `${JSON.stringify(form)} ${JSON.stringify(job)}`);

    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: path.join(shots, 'page-390.png'), fullPage: true });
    await page.locator('#job-body').screenshot({ path: path.join(shots, 'page-390-job.png') });
    // Nothing wider than a phone's screen: no sideways scrolling of the page.
    assert.ok(
      (await page.evaluate(() => (globalThis as Win).document.documentElement.scrollWidth as number)) <= 390,
    );
    const narrowJob = (await page.locator('#job-body').boundingBox())!;
    assert.ok(narrowJob.x < 40 && narrowJob.width > 300, JSON.stringify(narrowJob));
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  it('shows the warnings grouped by kind, as the terminal prints them', async () => {
    const { page } = await open();
    await pick(page, 'warn/base', ['warn/ft-a', 'warn/ft-b'], 'page-warnings');
    await page.locator('#submit').click();
    await waitState(page, 'succeeded');
    const id = await page.locator('#job-id').innerText();
    const view = (await request(server!.port, 'GET', `/api/jobs/${id}`)).json;
    assert.equal(view.warnings.length, 5, JSON.stringify(view.warnings));
    await page.locator('#job-warnings-box').waitFor({ state: 'visible' });
    const lines = await page.locator('#job-warnings > li').allInnerTexts();
    assert.deepEqual(lines, groupedWarningLines(view.warnings));
    assert.deepEqual(lines, view.warningLines);
    assert.ok(lines.length < view.warnings.length, 'nothing was grouped');
    assert.ok(
      lines.some((l) => / \(4 tensors: extra\.0\.weight, extra\.1\.weight, extra\.2\.weight, …\)$/.test(l)),
      lines.join('\n'),
    );
    assert.equal(await page.locator('#job-warnings-all > li').count(), view.warnings.length);
    assert.match(
      await page.locator('#job-warnings-title').innerText(),
      new RegExp(`^Warnings \\(${view.warnings.length} in ${lines.length} kinds?\\)$`),
    );
  });

  it('cancels a running job and a queued one: both end `cancelled`, nothing left in --out', async () => {
    const { page } = await open();
    await page.locator('details summary').first().click();
    await page.locator('#backend').selectOption('js');
    const submit = async (out: string, state: string): Promise<string> => {
      const before =
        (await page
          .locator('#job-id')
          .innerText()
          .catch(() => '')) || 'none';
      await pick(page, 'example/base', ['example/ft1', 'example/ft2'], out);
      await page.locator('#submit').click();
      await page.locator(`#job-id:not(:text-is("${before}"))`).waitFor();
      await waitState(page, state);
      return page.locator('#job-id').innerText();
    };
    const running = await submit('page-running', 'running');
    await page.locator('#job-cancel').click();
    await waitState(page, 'cancelled');
    assert.match(await page.locator('#job-error').innerText(), /^CANCELLED cancelled by a client$/);

    // Concurrency 1: while one job runs, the next waits in the queue (unless the first has ended by
    // the time the click lands, on a loaded machine: then it is cancelled running).
    const first = await submit('page-first', 'running');
    const queued = await submit('page-queued', 'queued');
    await page.locator('#job-cancel').click();
    await waitState(page, 'cancelled');
    assert.match(
      await page.locator('#job-error').innerText(),
      /^CANCELLED cancelled by a client( before it started)?$/,
    );
    await waitForJob(server!.port, first);

    for (const id of [running, queued]) assert.equal((await waitForJob(server!.port, id)).state, 'cancelled');
    await page.locator(`#jobs-body tr[data-id="${running}"][data-state="cancelled"]`).waitFor();
    assert.ok(
      !fs.existsSync(path.join(out, 'page-running')) && !fs.existsSync(path.join(out, 'page-queued')),
    );
    assert.deepEqual(stagingLeft(out), []);
    assert.equal(await state(page).getAttribute('class'), 'state state-cancelled');
  });

  it('a bad YAML shows its error code; a good one runs (an inspection: its picture, no output)', async () => {
    const { page } = await open();
    await page.locator('input[name=source][value=yaml]').check();
    assert.ok(await page.locator('#config').isVisible());
    assert.ok(!(await page.locator('#base').isVisible()));
    await page
      .locator('#config')
      .fill(
        'merge_method: linear\nbase_model: example/base\nmodels:\n  - model: example/ft1\n  - model: example/ft2\n',
      );
    await page.locator('#submit').click();
    await page.locator('#form-error .code').waitFor();
    assert.equal(await page.locator('#form-error .code').innerText(), 'BAD_CONFIG');
    assert.match(
      await page.locator('#form-error').innerText(),
      /merge_method must be model_stock, got "linear"/,
    );

    await page.locator('#config').fill('models: [');
    await page.locator('#submit').click();
    await page.locator('#form-error:has-text("not valid YAML")').waitFor();
    assert.equal(await page.locator('#form-error .code').innerText(), 'BAD_CONFIG');

    await page.locator('input[name=kind][value=inspect]').check();
    assert.ok(!(await page.locator('#out').isVisible()));
    assert.equal(await page.locator('#submit').innerText(), 'Start inspection');
    await page
      .locator('#config')
      .fill(
        'merge_method: model_stock\nbase_model: example/base\nmodels:\n  - model: example/ft1\n  - model: example/ft2\n',
      );
    await page.locator('#submit').click();
    await waitState(page, 'succeeded');
    assert.equal(await page.locator('#form-error').innerText(), '');
    assert.equal(await page.locator('#job-kind').innerText(), 'Inspection');
    await page.locator('#job-figure').waitFor({ state: 'visible' });
    assert.ok(await page.locator('#job-picture').evaluate((img) => img.naturalWidth > 300));
  });

  it('resumes the event stream with Last-Event-ID after the server dies; the restarted one says `interrupted`', async () => {
    // A server in a child process, killed with SIGKILL mid-merge and restarted on the same port and state.
    const config = { models: path.join(tmp.dir, 'models'), out, state: path.join(tmp.dir, 'state-restart') };
    let child: ServeChild | undefined = await startServeChild(config);
    try {
      const port = child.port;
      const events: { lastEventId: string | undefined }[] = [];
      const { page } = await open(`http://127.0.0.1:${port}/?token=${TOKEN}`);
      page.on('request', (r) => {
        if (r.url().endsWith('/events'))
          void r.allHeaders().then((h) => events.push({ lastEventId: h['last-event-id'] }));
      });
      await page.locator('details summary').first().click();
      await page.locator('#backend').selectOption('js');
      await pick(page, 'example/base', ['example/ft1', 'example/ft2'], 'page-restart');
      await page.locator('#submit').click();
      await waitState(page, 'running');
      await page.locator('#job-progress-label:has-text("%")').waitFor();
      child.child.kill('SIGKILL');
      await child.exited;
      child = undefined;
      await page.locator('#job-connection:has-text("reconnecting")').waitFor();
      child = await startServeChild({ ...config, port });
      await waitState(page, 'interrupted');
      assert.match(
        await page.locator('#job-error').innerText(),
        /^CANCELLED the server stopped while this job ran/,
      );
      assert.equal(await page.locator('#job-connection').innerText(), '');
      // The first request read from the start; the one that got the final state resumed after what it had.
      assert.equal(events[0]?.lastEventId, undefined);
      const resumed = events.at(-1)?.lastEventId;
      assert.ok(resumed !== undefined && Number(resumed) >= 3, JSON.stringify(events));
      assert.ok(!fs.existsSync(path.join(out, 'page-restart')));
      assert.deepEqual(stagingLeft(out), []);
    } finally {
      await child?.stop();
    }
  });

  it('an unknown job in the address says NOT_FOUND instead of a blank panel', async () => {
    const { page } = await open(`${server!.openUrl}#job=no-such-job`);
    await page.locator('#job-error .code').waitFor();
    assert.equal(await page.locator('#job-error .code').innerText(), 'NOT_FOUND');
  });

  it('pages through the jobs, newest first', async () => {
    // Inspections of the small models, submitted through the API, to fill more than one page.
    const ids: string[] = [];
    for (let i = 0; i < 11; i++) {
      const r = await request(server!.port, 'POST', '/api/jobs', {
        body: { kind: 'inspect', options: { base: 'warn/base', models: ['warn/ft-a', 'warn/ft-b'] } },
      });
      assert.equal(r.status, 201, r.text);
      ids.push(r.json.id);
    }
    for (const id of ids) await waitForJob(server!.port, id);
    const all = (await request(server!.port, 'GET', '/api/jobs?limit=500')).json.jobs.map(
      (j: { id: string }) => j.id,
    );
    const { page } = await open();
    const listed = () =>
      page.locator('#jobs-body tr').evaluateAll((rows) => rows.map((r) => r.dataset.id as string));
    await page.locator(`#jobs-body tr[data-id="${all[0]}"]`).waitFor();
    assert.deepEqual(await listed(), all.slice(0, 10));
    assert.ok(await page.locator('#jobs-newer').isDisabled());
    assert.equal(await page.locator('#jobs-range').innerText(), '1–10');
    await page.locator('#jobs-older').click();
    await page.locator(`#jobs-body tr[data-id="${all[10]}"]`).waitFor();
    assert.deepEqual(await listed(), all.slice(10, 20));
    assert.match(
      await page.locator('#jobs-range').innerText(),
      all.length > 20 ? /^11–20$/ : /^11–\d+ \(oldest\)$/,
    );
    await page.locator('#jobs-newer').click();
    await page.locator(`#jobs-body tr[data-id="${all[0]}"]`).waitFor();
    assert.deepEqual(await listed(), all.slice(0, 10));
  });

  it('works from the keyboard, every control labelled', async () => {
    const { page } = await open();
    const unlabelled = await page.evaluate(() =>
      [...(globalThis as Win).document.querySelectorAll('input, select, textarea, button, progress')]
        .filter((el: Win) => {
          const labels = el.labels;
          const named = el.getAttribute('aria-label') ?? el.getAttribute('aria-labelledby');
          return (
            (labels === null || labels.length === 0) && named === null && (el.textContent ?? '').trim() === ''
          );
        })
        .map((el: Win) => el.outerHTML as string),
    );
    assert.deepEqual(unlabelled, []);
    // Tab from the top reaches the first control, the kind; arrows choose inspect; Enter submits.
    await page.locator('body').click({ position: { x: 5, y: 5 } });
    await page.keyboard.press('Tab');
    assert.equal(
      await page.evaluate(() => (globalThis as Win).document.activeElement.value as string),
      'merge',
    );
    await page.keyboard.press('ArrowDown');
    assert.ok(await page.locator('input[name=kind][value=inspect]').isChecked());
    await page.locator('#base').focus();
    await page.keyboard.press('Tab');
    assert.equal(
      await page.evaluate(() => (globalThis as Win).document.activeElement?.getAttribute('name') as string),
      'model',
    );
    await page.keyboard.press('Space');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Space');
    assert.equal(await tabTo(page, 'submit'), 'submit');
    await page.keyboard.press('Enter');
    await waitState(page, 'succeeded');
    assert.equal(await page.locator('#job-kind').innerText(), 'Inspection');
    // Forget it from the keyboard: Tab from the form reaches the job's buttons.
    assert.equal(await tabTo(page, 'job-forget'), 'job-forget');
    await page.keyboard.press('Enter');
    await page.locator('#job-empty').waitFor({ state: 'visible' });
  });

  it('runs the browser under its own profile folder (so `after` can prove it ended)', () => {
    assert.ok(browserProcesses(profile).length > 0);
  });
});

/** Presses Tab until the element with `id` has the focus (at most 20 times); the focused element's id. */
async function tabTo(page: Page, id: string): Promise<string> {
  const focused = () => page.evaluate(() => (globalThis as Win).document.activeElement?.id as string);
  for (let i = 0; i < 20 && (await focused()) !== id; i++) await page.keyboard.press('Tab');
  return focused();
}

/**
 * A base and two fine-tunes that share two tensors; four more tensors only the base has, each copied
 * with the same warning (one kind, four tensors), and one only the base and one fine-tune have (a kind
 * of its own).
 */
async function writeWarningModels(dir: string): Promise<void> {
  const rng = mulberry32(21);
  const tensor = (name: string, values: ArrayLike<number>, shape: number[]) => ({
    name,
    dtype: 'F32' as const,
    shape,
    values,
  });
  const shared = ['model.layers.0.mlp.up_proj.weight', 'model.layers.1.mlp.up_proj.weight'].map((name) => ({
    name,
    base: randomTensor(256, rng),
    // A task vector both fine-tunes share, plus their own: cosines well above 0, no other warning.
    common: randomTensor(256, rng),
  }));
  const only = [0, 1, 2, 3].map((i) => tensor(`extra.${i}.weight`, randomTensor(16, rng), [4, 4]));
  const norm = (): ReturnType<typeof tensor> => tensor('model.norm.weight', randomTensor(16, rng), [16]);
  await writeModel(path.join(dir, 'base'), [
    ...shared.map((t) => tensor(t.name, t.base, [16, 16])),
    ...only,
    norm(),
  ]);
  for (const ft of ['ft-a', 'ft-b']) {
    const tuned = shared.map((t) =>
      tensor(
        t.name,
        t.base.map((v, i) => v + 0.1 * (t.common[i]! + rng() - 0.5)),
        [16, 16],
      ),
    );
    await writeModel(path.join(dir, ft), ft === 'ft-a' ? [...tuned, norm()] : tuned);
  }
}
