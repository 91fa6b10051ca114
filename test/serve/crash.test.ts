import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { generateFixture, PRESETS } from '../../lib/fixtures/generate';
import { REPORT_FILE } from '../../lib/output/atomic';
import { OWNER_FILE } from '../../lib/output/staleStaging';
import type { ProbePoint } from '../../lib/serve/jobs';
import { openSqlite } from '../../lib/serve/sqlite';
import { DB_FILE } from '../../lib/serve/store';
import { readEvents, request, serveFolders, sqliteOrSkip, stagingLeft } from '../helpers/serve';
import { startServeChild, type ServeChild } from '../helpers/serveChild';
import { useTmpDir } from '../helpers/tmp';

/**
 * kill -9 at named moments of submitting, starting, running and committing jobs, then a restart on
 * the same state: no job lost or doubled, the one that was running `interrupted`, the queued ones run,
 * no staging folder left, the database sound.
 */
/** slow: merges of a 12-layer model of wider tensors with a tiny memory budget (seconds each, several flushes). */
const POINTS: readonly [ProbePoint, number, { slow?: boolean; dropRecord?: boolean }?][] = [
  ['submit:checked', 1],
  ['submit:checked', 2],
  ['submit:checked', 4],
  ['submit:committed', 1],
  ['submit:committed', 3],
  ['submit:committed', 4],
  ['job:dequeued', 1],
  ['job:dequeued', 2],
  ['job:running', 1],
  ['job:running', 2],
  ['job:progress', 1],
  ['job:progress', 12],
  ['job:progress', 50],
  // As if killed while the commit had removed the owner record: the server sweeps it all the same.
  ['job:progress', 5, { dropRecord: true }],
  ['job:progress', 2000, { slow: true }],
  ['job:flushed', 1, { slow: true }],
  ['job:flushed', 2, { slow: true }],
  ['job:settled', 1],
  ['job:settled', 2],
  ['job:finished', 1],
  ['job:finished', 2],
  ['cancel:committed', 1],
];

interface Submitted {
  readonly out: string | undefined;
  /** The id a 201 gave; undefined when the server died before answering. */
  readonly id: string | undefined;
}

/** Four jobs — three merges and an inspection — the third cancelled while it waits. */
async function drive(s: ServeChild, fixture: string): Promise<Submitted[]> {
  const submitted: Submitted[] = [];
  const options = { base: `${fixture}/base`, models: [`${fixture}/ft1`, `${fixture}/ft2`] };
  const bodies: [string | undefined, Record<string, unknown>][] = [
    ['a', { kind: 'merge', options: { ...options, out: 'a' } }],
    ['b', { kind: 'merge', options: { ...options, out: 'b' } }],
    ['c', { kind: 'merge', options: { ...options, out: 'c' } }],
    [undefined, { kind: 'inspect', options }],
  ];
  let submitting = true;
  try {
    for (const [out, body] of bodies) {
      submitting = true;
      const r = await request(s.port, 'POST', '/api/jobs', { body });
      assert.equal(r.status, 201, r.text);
      submitted.push({ out, id: r.json.id });
      submitting = false;
      if (out === 'c') await request(s.port, 'POST', `/api/jobs/${r.json.id}/cancel`);
    }
    submitting = false;
    for (const { id } of submitted) {
      for (;;) {
        const r = await request(s.port, 'GET', `/api/jobs/${id}`);
        if (!['queued', 'running'].includes(r.json.state)) break;
        await new Promise((res) => setTimeout(res, 10));
      }
    }
  } catch (e) {
    if (!/ECONNRESET|ECONNREFUSED|socket hang up/.test(String(e))) throw e;
    // The server died mid-request: a submission cut short has no 201 (it may still have been committed).
    if (submitting) submitted.push({ out: bodies[submitted.length]?.[0], id: undefined });
  }
  return submitted;
}

describe('model-stock serve: kill -9 at any moment loses and doubles nothing', function () {
  this.timeout(300_000);
  const tmp = useTmpDir('model-stock-serve-crash-');
  let models: string;

  before(async function () {
    await sqliteOrSkip(this);
    ({ models } = await serveFolders(tmp.dir));
    // Tensors of ~10–400 KB: with the 384-byte budget the engine cuts them into windows of ~4 KiB of output
    // (the least a block-aligned output window holds), thousands in all.
    await generateFixture({
      ...PRESETS.tiny,
      hidden: 256,
      intermediate: 704,
      layers: 12,
      dir: path.join(models, 'slow'),
    });
  });

  for (const [point, n, o] of POINTS) {
    it(`SIGKILL at ${point} #${n}${o?.slow === true ? ' (slow merges)' : ''}`, async () => {
      const dir = path.join(tmp.dir, `${point.replace(':', '-')}-${n}`);
      const out = path.join(dir, 'out');
      const state = path.join(dir, 'state');
      fs.mkdirSync(out, { recursive: true });
      const memory = o?.slow === true ? 384 : undefined;

      const first = await startServeChild({ models, out, state, memory, crashAt: { point, n } });
      const submitted = await drive(first, o?.slow === true ? 'slow' : 'fx');
      const ended = await Promise.race([
        first.exited,
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 20_000)),
      ]);
      if (ended === undefined) first.child.kill('SIGKILL');
      assert.equal(ended?.signal, 'SIGKILL', `the server never reached ${point} #${n}`);
      // Killed mid-merge: its staging folder is there until the restart sweeps it.
      if (point === 'job:progress') assert.equal(stagingLeft(out).length, 1);
      if (o?.dropRecord === true) fs.rmSync(path.join(out, stagingLeft(out)[0]!, OWNER_FILE));

      const second = await startServeChild({ models, out, state });
      try {
        // Queued jobs run after the restart; nothing stays queued or running.
        let jobs: { id: string; state: string; request: { options?: { out?: string } } }[] = [];
        for (const until = Date.now() + 30_000; ;) {
          jobs = (await request(second.port, 'GET', '/api/jobs?limit=100')).json.jobs;
          if (jobs.every((j) => !['queued', 'running'].includes(j.state))) break;
          assert.ok(Date.now() < until, JSON.stringify(jobs));
          await new Promise((r) => setTimeout(r, 20));
        }
        const ids = jobs.map((j) => j.id);
        assert.equal(new Set(ids).size, ids.length, 'no job doubled');
        for (const s of submitted)
          if (s.id !== undefined) assert.ok(ids.includes(s.id), `job ${s.id} (a 201) was lost`);
        assert.ok(
          jobs.length <= submitted.length,
          `${jobs.length} jobs from ${submitted.length} submissions`,
        );
        const outs = jobs.map((j) => j.request.options?.out).filter((x) => x !== undefined);
        assert.equal(new Set(outs).size, outs.length, 'one job per out');
        assert.ok(
          jobs.filter((j) => j.state === 'interrupted').length <= 1,
          'only the running job is interrupted',
        );

        for (const j of jobs) {
          assert.ok(['succeeded', 'interrupted', 'cancelled'].includes(j.state), `${j.id}: ${j.state}`);
          const { events } = await readEvents(second.port, j.id);
          assert.equal(events[0]!.id, 1);
          assert.deepEqual(events[0]!.data, { state: 'queued' });
          for (let i = 1; i < events.length; i++) assert.ok(events[i]!.id > events[i - 1]!.id);
          const finals = events.filter(
            (e) => e.event === 'state' && !['queued', 'running'].includes(e.data.state),
          );
          assert.equal(finals.length, 1, JSON.stringify(events));
          assert.equal(events.at(-1)!.data.state, j.state);
          const o2 = j.request.options?.out;
          if (o2 === undefined) continue;
          const target = path.join(out, o2);
          if (j.state === 'succeeded') assert.ok(fs.existsSync(path.join(target, REPORT_FILE)), o2);
          // An interrupted merge left nothing, or (killed after its commit) a complete output.
          else if (fs.existsSync(target)) assert.ok(fs.existsSync(path.join(target, REPORT_FILE)), o2);
        }
        assert.deepEqual(stagingLeft(out), [], 'staging swept');
      } finally {
        const stopped = await second.stop();
        assert.equal(stopped.code, 0);
      }
      const db = await openSqlite(path.join(state, DB_FILE));
      try {
        assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
      } finally {
        db.close();
      }
    });
  }
});
