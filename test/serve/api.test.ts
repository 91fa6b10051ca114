import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { REPORT_FILE } from '../../lib/output/atomic';
import { PLOT_FILE } from '../../lib/report/svg';
import { CSP } from '../../lib/serve/security';
import type { Server } from '../../lib/serve/server';
import {
  mergeBody,
  readEvents,
  request,
  serveFolders,
  sqliteOrSkip,
  stagingLeft,
  startServer,
  waitForJob,
  type SseEvent,
} from '../helpers/serve';
import { useTmpDir } from '../helpers/tmp';
import { generateFixture, PRESETS } from '../../lib/fixtures/generate';

/**
 * Memory budget that makes a merge of the `slow` fixture take a few seconds: thousands of windows of
 * ~4 KiB of output (the least a block-aligned output window holds).
 */
const SLOW = 384;

/** A merge of the `slow` fixture (tensors of ~10–400 KB, generated in `before`). */
const slowBody = (out: string): Record<string, unknown> => ({
  kind: 'merge',
  options: { base: 'slow/base', models: ['slow/ft1', 'slow/ft2'], out },
});

/** Ids strictly increasing; the stream's last event a final state. */
function assertWellFormed(events: readonly SseEvent[], finalState: string): void {
  assert.ok(events.length >= 2, JSON.stringify(events));
  for (let i = 1; i < events.length; i++) assert.ok(events[i]!.id > events[i - 1]!.id, 'ids increase');
  const last = events.at(-1)!;
  assert.equal(last.event, 'state');
  assert.equal(last.data.state, finalState);
}

describe('model-stock serve: the HTTP API', function () {
  this.timeout(120_000);
  const tmp = useTmpDir('model-stock-serve-');
  let f: Awaited<ReturnType<typeof serveFolders>>;
  let server: Server;
  let port: number;

  const slowFolders = () => ({ ...f, models: path.join(tmp.dir, 'slow-models') });

  before(async function () {
    await sqliteOrSkip(this);
    f = await serveFolders(tmp.dir);
    // Served by the slow servers only (their own models folder: the listing tests see `fx` alone).
    await generateFixture({
      ...PRESETS.tiny,
      hidden: 256,
      intermediate: 704,
      dir: path.join(tmp.dir, 'slow-models', 'slow'),
    });
    server = await startServer(f);
    port = server.port;
  });
  after(async () => server?.close());

  it('GET /api/health answers without a token', async () => {
    const r = await request(port, 'GET', '/api/health', { token: null });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json, { ok: true });
    assert.equal(r.headers['x-content-type-options'], 'nosniff');
    assert.match(String(r.headers['content-security-policy']), /default-src 'none'/);
  });

  it('GET /api/models lists the checkpoint folders with the reference that names each', async () => {
    const r = await request(port, 'GET', '/api/models');
    assert.equal(r.status, 200);
    const refs = r.json.models.map((m: { ref: string }) => m.ref).sort();
    assert.deepEqual(refs, ['fx/base', 'fx/ft1', 'fx/ft2']);
    const base = r.json.models.find((m: { ref: string }) => m.ref === 'fx/base');
    assert.equal(base.format, 'safetensors');
    assert.equal(base.root, 0);
    assert.equal(base.bytes, fs.statSync(path.join(f.base, 'model.safetensors')).size);
    assert.equal(r.json.truncated, false);
  });

  it('a merge: 201 once committed, then succeeded, with its report, picture, events and output', async () => {
    const created = await request(port, 'POST', '/api/jobs', { body: mergeBody('merged-a') });
    assert.equal(created.status, 201, created.text);
    assert.match(created.json.id, /^[0-9a-f-]{36}$/);
    assert.ok(['queued', 'running'].includes(created.json.state));
    const job = await waitForJob(port, created.json.id);
    assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
    for (const k of ['id', 'kind', 'state', 'createdAt', 'startedAt', 'finishedAt', 'progress', 'warnings'])
      assert.ok(k in job, k);
    assert.equal(job.kind, 'merge');
    assert.ok(Date.parse(job.createdAt) <= Date.parse(job.startedAt));
    assert.ok(Date.parse(job.startedAt) <= Date.parse(job.finishedAt));
    assert.equal(job.progress.bytesDone, job.progress.bytesTotal);
    assert.equal(job.progress.tensorsDone, job.progress.tensorsTotal);
    assert.ok(job.progress.tensorsTotal > 0);
    assert.equal(job.error, undefined);
    assert.deepEqual(job.request, mergeBody('merged-a'));

    // The report is the one written into OUT.
    const out = path.join(f.out, 'merged-a');
    const written = JSON.parse(fs.readFileSync(path.join(out, REPORT_FILE), 'utf8'));
    assert.deepEqual(job.report, written);
    const report = await request(port, 'GET', `/api/jobs/${job.id}/report`);
    assert.equal(report.status, 200);
    assert.match(String(report.headers['content-type']), /^application\/json/);
    assert.deepEqual(report.json, written);

    const picture = await request(port, 'GET', `/api/jobs/${job.id}/picture.svg`);
    assert.equal(picture.status, 200);
    assert.equal(picture.headers['content-type'], 'image/svg+xml');
    assert.match(String(picture.headers['content-security-policy']), /script-src 'none'/);
    assert.equal(picture.text, fs.readFileSync(path.join(out, PLOT_FILE), 'utf8'));

    const { status, headers, events } = await readEvents(port, job.id);
    assert.equal(status, 200);
    assert.match(String(headers['content-type']), /^text\/event-stream/);
    assertWellFormed(events, 'succeeded');
    assert.equal(events[0]!.id, 1);
    assert.deepEqual(events[0]!.data, { state: 'queued' });
    assert.deepEqual(events[1]!.data, { state: 'running' });
    const progress = events.filter((e) => e.event === 'progress');
    assert.ok(progress.length >= 1);
    assert.deepEqual(progress.at(-1)!.data, job.progress, 'the last progress is the final one');
    assert.deepEqual(stagingLeft(f.out), []);
  });

  it('SSE resumes after Last-Event-ID, replaying what the client missed', async () => {
    const created = await request(port, 'POST', '/api/jobs', { body: mergeBody('merged-resume') });
    await waitForJob(port, created.json.id);
    const all = (await readEvents(port, created.json.id)).events;
    const resumed = await readEvents(port, created.json.id, { lastEventId: 2 });
    assert.deepEqual(
      resumed.events.map((e) => [e.id, e.event, e.data]),
      all.filter((e) => e.id > 2).map((e) => [e.id, e.event, e.data]),
    );
    // Resumed at or past a finished job's end (a killed server may have sent ids it never stored, which
    // the restart's `interrupted` reuses): the final state again, so the client's stream ends.
    const final = all.at(-1)!;
    for (const after of [final.id, final.id + 5]) {
      const past = await readEvents(port, created.json.id, { lastEventId: after });
      assert.deepEqual(
        past.events.map((e) => [e.id, e.event, e.data]),
        [[final.id, 'state', { state: 'succeeded' }]],
        `after ${after}`,
      );
    }
    const bad = await request(port, 'GET', `/api/jobs/${created.json.id}/events`, {
      headers: { 'last-event-id': 'x1' },
    });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.code, 'BAD_REQUEST');
  });

  describe('a slow merge (small memory budget), followed live', () => {
    let slow: Server;
    before(async () => {
      slow = await startServer(
        { ...slowFolders(), state: path.join(tmp.dir, 'state-slow') },
        { memory: SLOW },
      );
    });
    after(async () => slow?.close());

    it('progress at most every 250 ms, in order; a client that leaves and comes back misses nothing durable', async () => {
      const created = await request(slow.port, 'POST', '/api/jobs', { body: slowBody('slow-live') });
      assert.equal(created.status, 201);
      const first = await readEvents(slow.port, created.json.id, {
        stopAfter: (e) => e.event === 'progress',
      });
      const lastSeen = first.events.at(-1)!;
      assert.equal(lastSeen.event, 'progress');
      const started = performance.now();
      const rest = await readEvents(slow.port, created.json.id, { lastEventId: lastSeen.id });
      const seconds = (performance.now() - started) / 1000;
      assertWellFormed(rest.events, 'succeeded');
      assert.ok(rest.events[0]!.id > lastSeen.id, 'resumed after the last id seen');
      const progress = rest.events.filter((e) => e.event === 'progress');
      assert.ok(progress.length >= 2, `a slow merge reports progress (${progress.length} events)`);
      assert.ok(
        progress.length <= seconds * 4 + 2,
        `${progress.length} progress events in ${seconds.toFixed(2)} s: more than one per 250 ms`,
      );
      for (let i = 1; i < progress.length; i++)
        assert.ok(progress[i]!.data.bytesDone >= progress[i - 1]!.data.bytesDone, 'progress never goes back');
    });

    it('cancels a queued job at once and a running one through its signal: no output, no staging', async () => {
      const a = await request(slow.port, 'POST', '/api/jobs', { body: slowBody('slow-a') });
      const b = await request(slow.port, 'POST', '/api/jobs', { body: slowBody('slow-b') });
      assert.equal(b.json.state, 'queued');
      await waitForJob(slow.port, a.json.id, (s) => s === 'running');
      // A's staging folder exists once it has progressed.
      await readEvents(slow.port, a.json.id, { stopAfter: (e) => e.event === 'progress' });

      const cb = await request(slow.port, 'POST', `/api/jobs/${b.json.id}/cancel`);
      assert.equal(cb.status, 202);
      assert.deepEqual(cb.json, { id: b.json.id, state: 'cancelled' });
      const bEvents = await readEvents(slow.port, b.json.id);
      assertWellFormed(bEvents.events, 'cancelled');
      assert.equal(bEvents.events.at(-1)!.data.error.code, 'CANCELLED');

      const ca = await request(slow.port, 'POST', `/api/jobs/${a.json.id}/cancel`);
      assert.equal(ca.status, 202);
      assert.equal(ca.json.id, a.json.id);
      const t0 = performance.now();
      const aJob = await waitForJob(slow.port, a.json.id);
      assert.equal(aJob.state, 'cancelled');
      assert.equal(aJob.error.code, 'CANCELLED');
      assert.ok(performance.now() - t0 < 5000, 'a cancel lands quickly');
      assert.ok(!fs.existsSync(path.join(f.out, 'slow-a')));
      assert.ok(!fs.existsSync(path.join(f.out, 'slow-b')));
      assert.deepEqual(stagingLeft(f.out), []);

      const again = await request(slow.port, 'POST', `/api/jobs/${a.json.id}/cancel`);
      assert.equal(again.status, 409);
      assert.equal(again.json.error.code, 'CONFLICT');
    });

    it('an out created while the job waited fails it with the library code; two jobs cannot share an out', async () => {
      const a = await request(slow.port, 'POST', '/api/jobs', { body: slowBody('slow-first') });
      const b = await request(slow.port, 'POST', '/api/jobs', { body: slowBody('taken-later') });
      assert.equal(b.status, 201);
      const dup = await request(slow.port, 'POST', '/api/jobs', { body: slowBody('taken-later') });
      assert.equal(dup.status, 409);
      assert.equal(dup.json.error.code, 'BAD_OUTPUT_PATH');
      fs.mkdirSync(path.join(f.out, 'taken-later'));
      fs.writeFileSync(path.join(f.out, 'taken-later', 'keep.txt'), 'the user’s');
      await request(slow.port, 'POST', `/api/jobs/${a.json.id}/cancel`);
      const job = await waitForJob(slow.port, b.json.id);
      assert.equal(job.state, 'failed');
      assert.equal(job.error.code, 'BAD_OUTPUT_PATH');
      assert.equal(fs.readFileSync(path.join(f.out, 'taken-later', 'keep.txt'), 'utf8'), 'the user’s');
    });

    it('DELETE forgets a finished job, never its output; an unfinished one is a 409', async () => {
      const a = await request(slow.port, 'POST', '/api/jobs', { body: slowBody('slow-delete') });
      const early = await request(slow.port, 'DELETE', `/api/jobs/${a.json.id}`);
      assert.equal(early.status, 409);
      assert.equal(early.json.error.code, 'CONFLICT');
      await request(slow.port, 'POST', `/api/jobs/${a.json.id}/cancel`);
      await waitForJob(slow.port, a.json.id);
      const cancelled = await request(slow.port, 'DELETE', `/api/jobs/${a.json.id}`);
      assert.equal(cancelled.status, 204);
      const done = await request(port, 'POST', '/api/jobs', { body: mergeBody('kept') });
      await waitForJob(port, done.json.id);
      const del = await request(port, 'DELETE', `/api/jobs/${done.json.id}`);
      assert.equal(del.status, 204);
      assert.equal((await request(port, 'GET', `/api/jobs/${done.json.id}`)).status, 404);
      assert.equal((await request(port, 'GET', `/api/jobs/${done.json.id}/events`)).status, 404);
      assert.ok(fs.existsSync(path.join(f.out, 'kept', REPORT_FILE)), 'the output stays');
    });
  });

  it('an inspection from a mergekit YAML: report and picture, nothing written', async () => {
    const config =
      'merge_method: model_stock\nbase_model: fx/base\nmodels:\n  - model: fx/ft1\n  - model: fx/ft2\n';
    const before = fs.readdirSync(f.out).sort();
    const created = await request(port, 'POST', '/api/jobs', { body: { kind: 'inspect', config } });
    assert.equal(created.status, 201, created.text);
    const job = await waitForJob(port, created.json.id);
    assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
    assert.equal(job.kind, 'inspect');
    assert.ok(job.report.tensors.length > 0);
    assert.equal(job.report.out, undefined);
    assert.equal((await request(port, 'GET', `/api/jobs/${job.id}/picture.svg`)).status, 200);
    assert.deepEqual(fs.readdirSync(f.out).sort(), before);
  });

  it('a merge from a mergekit YAML with out beside it: the output config names the models as written', async () => {
    const config =
      'merge_method: model_stock\nbase_model: fx/base\nmodels:\n  - model: fx/ft1\n    parameters: {weight: 1}\n  - model: fx/ft2\ndtype: float32\n';
    const created = await request(port, 'POST', '/api/jobs', {
      body: { kind: 'merge', config, out: 'from-yaml' },
    });
    assert.equal(created.status, 201, created.text);
    const job = await waitForJob(port, created.json.id);
    assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
    assert.ok(
      job.warnings.some((w: string) => w.startsWith('config: ') && w.includes('weight')),
      job.warnings.join('\n'),
    );
    assert.equal(job.warningLines.length, new Set(job.warningLines).size);
    const yml = fs.readFileSync(path.join(f.out, 'from-yaml', 'model_stock_config.yml'), 'utf8');
    assert.match(yml, /base_model: fx\/base/);
    assert.match(yml, /out_dtype: float32/);
    assert.ok(job.report.tensors.some((t: { outDtype?: string }) => t.outDtype === 'F32'));
  });

  it('GET /api/jobs: newest first, paginated with limit and before', async () => {
    const all = await request(port, 'GET', '/api/jobs?limit=500');
    assert.equal(all.status, 200);
    const ids = all.json.jobs.map((j: { id: string }) => j.id);
    assert.ok(ids.length >= 3);
    const created = all.json.jobs.map((j: { createdAt: string }) => Date.parse(j.createdAt));
    for (let i = 1; i < created.length; i++) assert.ok(created[i - 1] >= created[i], 'newest first');
    assert.equal(all.json.next, undefined);
    assert.equal(all.json.jobs[0].report, undefined, 'the list has no reports');
    assert.equal(typeof all.json.jobs[0].warningCount, 'number');

    const first = await request(port, 'GET', '/api/jobs?limit=1');
    assert.deepEqual(
      first.json.jobs.map((j: { id: string }) => j.id),
      ids.slice(0, 1),
    );
    assert.equal(first.json.next, ids[0]);
    const second = await request(port, 'GET', `/api/jobs?limit=2&before=${first.json.next}`);
    assert.deepEqual(
      second.json.jobs.map((j: { id: string }) => j.id),
      ids.slice(1, 3),
    );
    for (const q of ['limit=0', 'limit=501', 'limit=x', 'surprise=1']) {
      const r = await request(port, 'GET', `/api/jobs?${q}`);
      assert.equal(r.status, 400, q);
      assert.equal(r.json.error.code, 'BAD_REQUEST', q);
    }
    const unknown = await request(port, 'GET', '/api/jobs?before=no-such-job');
    assert.equal(unknown.status, 404);
  });

  it('a job the library fails: failed, with the library code and the file named inside the roots', async () => {
    const broken = path.join(f.models, 'broken');
    fs.mkdirSync(broken, { recursive: true });
    fs.writeFileSync(path.join(broken, 'model.safetensors'), Buffer.from([1, 2, 3]));
    const created = await request(port, 'POST', '/api/jobs', {
      body: { kind: 'inspect', options: { base: 'fx/base', models: ['fx/ft1', 'broken'] } },
    });
    assert.equal(created.status, 201);
    const job = await waitForJob(port, created.json.id);
    assert.equal(job.state, 'failed');
    assert.equal(job.error.code, 'HEADER_TOO_SMALL');
    assert.ok(job.error.message.includes(path.join(broken, 'model.safetensors')), job.error.message);
    const events = (await readEvents(port, job.id)).events;
    assertWellFormed(events, 'failed');
    assert.deepEqual(events.at(-1)!.data.error, job.error);
    assert.equal((await request(port, 'GET', `/api/jobs/${job.id}/report`)).status, 404);
    assert.equal((await request(port, 'GET', `/api/jobs/${job.id}/picture.svg`)).status, 404);
  });

  it('relative references resolve against the roots in order; /api/models names a shadowed folder absolutely', async () => {
    const second = path.join(tmp.dir, 'models-2');
    fs.cpSync(path.join(f.models, 'fx'), path.join(second, 'fx'), { recursive: true });
    fs.cpSync(f.base, path.join(second, 'only-here', 'base'), { recursive: true });
    fs.cpSync(f.base, path.join(second, 'a', 'b', 'c', 'deep'), { recursive: true });
    fs.cpSync(f.base, path.join(second, 'a', 'b', 'depth3'), { recursive: true });
    const s = await startServer(
      { ...f, state: path.join(tmp.dir, 'state-roots') },
      { models: [f.models, second] },
    );
    try {
      const models = (await request(s.port, 'GET', '/api/models')).json.models as {
        ref: string;
        root: number;
        path: string;
      }[];
      const shadowed = models.find((m) => m.root === 1 && m.path === 'fx/base')!;
      assert.equal(shadowed.ref, fs.realpathSync(path.join(second, 'fx', 'base')));
      assert.equal(models.find((m) => m.root === 0 && m.path === 'fx/base')!.ref, 'fx/base');
      assert.equal(models.find((m) => m.path === 'only-here/base')!.ref, 'only-here/base');
      assert.ok(
        models.some((m) => m.path === 'a/b/depth3'),
        'depth 3 is listed',
      );
      assert.ok(!models.some((m) => m.path === 'a/b/c/deep'), 'depth 4 is not');

      const body = (base: string) => ({
        kind: 'inspect',
        options: { base, models: ['fx/ft1', 'only-here/base'] },
      });
      const first = await waitForJob(
        s.port,
        (await request(s.port, 'POST', '/api/jobs', { body: body('fx/base') })).json.id,
      );
      assert.equal(first.report.base, fs.realpathSync(f.base), 'the first root wins');
      const abs = await request(s.port, 'POST', '/api/jobs', { body: body(shadowed.ref) });
      const job = await waitForJob(s.port, abs.json.id);
      assert.equal(job.state, 'succeeded');
      assert.equal(job.report.base, shadowed.ref, 'an absolute path names the second root’s');
    } finally {
      await s.close();
    }
  });

  it('while stopping: 503 SHUTTING_DOWN, the running job interrupted, no staging left', async () => {
    const s = await startServer(
      { ...slowFolders(), state: path.join(tmp.dir, 'state-stop') },
      { memory: SLOW },
    );
    const created = await request(s.port, 'POST', '/api/jobs', { body: slowBody('stopping') });
    await readEvents(s.port, created.json.id, { stopAfter: (e) => e.event === 'progress' });
    let stopped = false;
    const closing = s.close('stopping for the test').then(() => (stopped = true));
    const statuses: number[] = [];
    while (!stopped) {
      const r = await request(s.port, 'GET', '/api/jobs').catch(() => undefined);
      if (r === undefined) break; // the listener has closed
      statuses.push(r.status);
      assert.equal(r.json.error.code, 'SHUTTING_DOWN');
    }
    await closing;
    assert.ok(statuses.length >= 1 && statuses.every((x) => x === 503), statuses.join(', '));
    assert.deepEqual(stagingLeft(f.out), []);
    assert.ok(!fs.existsSync(path.join(f.out, 'stopping')));
    const again = await startServer({ ...slowFolders(), state: path.join(tmp.dir, 'state-stop') });
    try {
      const job = await waitForJob(again.port, created.json.id);
      assert.equal(job.state, 'interrupted');
      assert.equal(job.error.code, 'CANCELLED');
    } finally {
      await again.close();
    }
  });

  describe('refusals: every one has the {error: {code, message}} body', () => {
    const cases: [string, unknown, number, string][] = [
      ['an unknown options key', mergeBody('x', { report: 'r.json' }), 400, 'BAD_REQUEST'],
      ['overwrite', mergeBody('x', { overwrite: true }), 400, 'BAD_REQUEST'],
      ['an unknown top-level key', { ...mergeBody('x'), extra: 1 }, 400, 'BAD_REQUEST'],
      ['a wrong type', mergeBody('x', { filterWise: 'yes' }), 400, 'BAD_REQUEST'],
      ['no kind', { options: mergeBody('x').options }, 400, 'BAD_REQUEST'],
      ['an unknown kind', { ...mergeBody('x'), kind: 'train' }, 400, 'BAD_REQUEST'],
      ['config and options', { ...mergeBody('x'), config: 'merge_method: model_stock' }, 400, 'BAD_REQUEST'],
      ['neither config nor options', { kind: 'merge' }, 400, 'BAD_REQUEST'],
      ['out beside options', { ...mergeBody('x'), out: 'y' }, 400, 'BAD_REQUEST'],
      [
        'a merge without out',
        { kind: 'merge', options: { base: 'fx/base', models: ['fx/ft1', 'fx/ft2'] } },
        400,
        'BAD_REQUEST',
      ],
      ['an inspection with out', { ...mergeBody('x'), kind: 'inspect' }, 400, 'BAD_REQUEST'],
      [
        'shardSize for an inspection',
        { kind: 'inspect', options: { base: 'fx/base', models: ['fx/ft1', 'fx/ft2'], shardSize: 5 } },
        400,
        'BAD_REQUEST',
      ],
      ['a bad shardSize', mergeBody('x', { shardSize: 'lots' }), 400, 'BAD_REQUEST'],
      ['a bad outDtype', mergeBody('x', { outDtype: 'int8' }), 400, 'BAD_CONFIG'],
      ['a bad outFormat', mergeBody('x', { outFormat: 'gguf' }), 400, 'BAD_REQUEST'],
      [
        'outFormat for an inspection',
        { kind: 'inspect', options: { base: 'fx/base', models: ['fx/ft1', 'fx/ft2'], outFormat: 'peft' } },
        400,
        'BAD_REQUEST',
      ],
      ['one fine-tune', mergeBody('x', { models: ['fx/ft1'] }), 400, 'TOO_FEW_MODELS'],
      [
        'a YAML that is not model_stock',
        { kind: 'merge', config: 'merge_method: ties\n', out: 'x' },
        400,
        'BAD_CONFIG',
      ],
      ['a YAML that does not parse', { kind: 'inspect', config: 'a: [1,\n' }, 400, 'BAD_CONFIG'],
    ];
    for (const [what, body, status, code] of cases) {
      it(`${what} → ${status} ${code}`, async () => {
        const r = await request(port, 'POST', '/api/jobs', { body });
        assert.equal(r.status, status, r.text);
        assert.equal(r.json.error.code, code, r.text);
        assert.equal(typeof r.json.error.message, 'string');
        assert.ok(!/\n\s+at /.test(r.json.error.message), 'no stack trace');
      });
    }

    it('bodies that are not JSON objects', async () => {
      const notJson = await request(port, 'POST', '/api/jobs', {
        raw: '{"kind":',
        headers: { 'content-type': 'application/json' },
      });
      assert.equal(notJson.status, 400);
      assert.equal(notJson.json.error.code, 'BAD_REQUEST');
      const text = await request(port, 'POST', '/api/jobs', {
        raw: 'kind=merge',
        headers: { 'content-type': 'text/plain' },
      });
      assert.equal(text.status, 415);
      assert.equal(text.json.error.code, 'BAD_REQUEST');
      const proto = await request(port, 'POST', '/api/jobs', {
        raw: '{"kind":"merge","__proto__":{"x":1}}',
        headers: { 'content-type': 'application/json' },
      });
      assert.equal(proto.status, 400);
    });

    it('an out that exists → 409 BAD_OUTPUT_PATH', async () => {
      fs.mkdirSync(path.join(f.out, 'exists-already'), { recursive: true });
      const r = await request(port, 'POST', '/api/jobs', { body: mergeBody('exists-already') });
      assert.equal(r.status, 409);
      assert.equal(r.json.error.code, 'BAD_OUTPUT_PATH');
    });

    it('unknown jobs and routes → 404 NOT_FOUND', async () => {
      for (const [method, route] of [
        ['GET', '/api/jobs/nope'],
        ['GET', '/api/jobs/nope/events'],
        ['GET', '/api/jobs/nope/report'],
        ['GET', '/api/jobs/nope/picture.svg'],
        ['POST', '/api/jobs/nope/cancel'],
        ['DELETE', '/api/jobs/nope'],
        ['GET', '/api/nothing'],
        ['PUT', '/api/jobs'],
      ] as const) {
        const r = await request(port, method, route);
        assert.equal(r.status, 404, `${method} ${route}`);
        assert.equal(r.json.error.code, 'NOT_FOUND', `${method} ${route}`);
      }
    });
  });

  describe('the page', () => {
    it('/ serves the built page with its CSP: scripts only from files, no inline script or style', async () => {
      const r = await request(port, 'GET', '/', { token: null });
      assert.equal(r.status, 200);
      assert.match(String(r.headers['content-type']), /^text\/html/);
      assert.equal(r.headers['content-security-policy'], CSP.page);
      assert.doesNotMatch(String(r.headers['content-security-policy']), /unsafe-inline|unsafe-eval/);
      assert.match(r.text, /<script type="module" src="serve\/page\/app\.js"><\/script>/);
      assert.doesNotMatch(r.text, /<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=/i);
      // The modules it loads, the shared warning grouping among them, are served as JavaScript.
      for (const file of ['/serve/page/app.js', '/report/warnings.js', '/style.css', '/favicon.svg']) {
        const f = await request(port, 'GET', file, { token: null });
        assert.equal(f.status, 200, file);
        assert.equal(f.headers['content-security-policy'], CSP.page, file);
      }
    });

    it("serves only plain files inside the page's folder: no link, nothing hidden, no folder", async () => {
      const pageDir = path.join(tmp.dir, 'page');
      fs.mkdirSync(path.join(pageDir, 'sub', 'deeper'), { recursive: true });
      fs.writeFileSync(path.join(pageDir, 'index.html'), '<!doctype html><script src="app.js"></script>');
      fs.writeFileSync(path.join(pageDir, 'app.js'), 'console.log(1)');
      fs.writeFileSync(path.join(pageDir, 'sub', 'mod.js'), 'export {}');
      fs.writeFileSync(path.join(pageDir, 'sub', 'deeper', 'mod.js'), 'export {}');
      fs.writeFileSync(path.join(pageDir, '.secret.js'), 'hidden');
      fs.writeFileSync(path.join(pageDir, 'notes.txt'), 'unknown type');
      fs.writeFileSync(path.join(tmp.dir, 'outside.js'), 'outside');
      fs.mkdirSync(path.join(tmp.dir, 'outside-dir'));
      fs.writeFileSync(path.join(tmp.dir, 'outside-dir', 'x.js'), 'outside');
      fs.symlinkSync(path.join(tmp.dir, 'outside.js'), path.join(pageDir, 'link.js'));
      fs.symlinkSync(path.join(tmp.dir, 'outside-dir'), path.join(pageDir, 'linked'));
      fs.symlinkSync(path.join(pageDir, 'app.js'), path.join(pageDir, 'sub', 'inner-link.js'));
      const s = await startServer({ ...f, state: path.join(tmp.dir, 'state-page') }, { pageDir });
      try {
        const index = await request(s.port, 'GET', '/', { token: null });
        assert.equal(index.text, '<!doctype html><script src="app.js"></script>');
        for (const p of ['/app.js', '/sub/mod.js', '/sub/deeper/mod.js']) {
          const r = await request(s.port, 'GET', p, { token: null });
          assert.equal(r.status, 200, p);
          assert.match(String(r.headers['content-type']), /^text\/javascript/, p);
        }
        for (const p of [
          '/.secret.js',
          '/notes.txt',
          '/link.js',
          '/linked/x.js',
          '/sub/inner-link.js',
          '/sub',
          '/sub/',
          '/..%2foutside.js',
          '/sub/..%2f..%2foutside.js',
          '/sub/%2e%2e/app.js',
          '/a/b/c/d/e.js',
          '/nope.js',
        ]) {
          const r = await request(s.port, 'GET', p, { token: null });
          assert.equal(r.status, 404, p);
          assert.equal(r.json.error.code, 'NOT_FOUND', p);
        }
      } finally {
        await s.close();
      }
    });

    it('until the page is built, / is a short note pointing at the API', async () => {
      const s = await startServer(
        { ...f, state: path.join(tmp.dir, 'state-no-page') },
        { pageDir: path.join(tmp.dir, 'no-page') },
      );
      try {
        const r = await request(s.port, 'GET', '/', { token: null });
        assert.equal(r.status, 200);
        assert.match(r.text, /The web page is not built into this package/);
        assert.doesNotMatch(r.text, /<script/);
      } finally {
        await s.close();
      }
    });
  });
});
