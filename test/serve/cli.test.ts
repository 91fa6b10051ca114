import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { defaultStateDir, readTokenFile } from '../../lib/cli/serve';
import { CLI, runCliAsync } from '../helpers/cli';
import {
  mergeBody,
  readEvents,
  request,
  serveFolders,
  sqliteOrSkip,
  stagingLeft,
  waitForJob,
} from '../helpers/serve';
import { useTmpDir } from '../helpers/tmp';

interface CliServer {
  readonly child: ChildProcess;
  readonly port: number;
  readonly token: string | undefined;
  readonly stdout: () => string;
  readonly stderr: () => string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
}

/** `model-stock serve ARGS` in a child, once it has printed the URL to open. */
function serveCli(args: readonly string[], env: Record<string, string> = {}): Promise<CliServer> {
  const child = spawn(process.execPath, [CLI, 'serve', ...args], { env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, at: performance.now() })),
  );
  return new Promise((resolve, reject) => {
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      const m = /open (http:\/\/127\.0\.0\.1:(\d+)\/(?:\?token=(\S+))?)\n/.exec(stdout);
      if (m !== null)
        resolve({
          child,
          port: Number(m[2]),
          token: m[3] === undefined ? undefined : decodeURIComponent(m[3]),
          stdout: () => stdout,
          stderr: () => stderr,
          exited,
        });
    });
    void exited.then(({ code }) => reject(new Error(`serve exited ${code} before listening: ${stderr}`)));
  });
}

describe('model-stock serve: the command', function () {
  this.timeout(120_000);
  const tmp = useTmpDir('model-stock-serve-cli-');
  let f: Awaited<ReturnType<typeof serveFolders>>;
  let roots: string[];

  before(async function () {
    await sqliteOrSkip(this);
    f = await serveFolders(tmp.dir);
    roots = ['--models', f.models, '--out', f.out];
  });

  it('prints the URL to open with a random token; --port 0 picks a free port', async () => {
    const s = await serveCli([...roots, '--state', path.join(tmp.dir, 'st-url'), '--port', '0']);
    try {
      assert.ok(s.port > 0);
      assert.ok(s.token !== undefined && s.token.length >= 40, s.stdout());
      const ok = await request(s.port, 'GET', '/api/jobs', { token: s.token });
      assert.equal(ok.status, 200);
      assert.equal((await request(s.port, 'GET', '/api/jobs')).status, 401, 'the test token is not it');
      assert.ok(!s.stderr().includes(s.token!), 'the token is not in the log');
    } finally {
      s.child.kill('SIGINT');
      const { code } = await s.exited;
      assert.equal(code, 0);
    }
  });

  it('SIGTERM: running jobs cancelled and marked interrupted, staging removed, exit 0 within about a second', async () => {
    const state = path.join(tmp.dir, 'st-term');
    const args = [...roots, '--state', state, '--port', '0', '--memory', '384', '--no-token'];
    const s = await serveCli(args);
    const created = await request(s.port, 'POST', '/api/jobs', { body: mergeBody('term-a'), token: null });
    const queued = await request(s.port, 'POST', '/api/jobs', { body: mergeBody('term-b'), token: null });
    assert.equal(queued.json.state, 'queued');
    await readEvents(s.port, created.json.id, { stopAfter: (e) => e.event === 'progress' });
    assert.equal(stagingLeft(f.out).length, 1, 'the merge is under way');
    const sent = performance.now();
    s.child.kill('SIGTERM');
    const { code, at } = await s.exited;
    assert.equal(code, 0, s.stderr());
    assert.ok(at - sent < 3000, `exited ${(at - sent).toFixed(0)} ms after SIGTERM`);
    assert.match(s.stderr(), /SIGTERM: stopping/);
    assert.deepEqual(stagingLeft(f.out), []);

    // Restarted: the running job is interrupted, the queued one runs.
    const again = await serveCli([...roots, '--state', state, '--port', '0', '--no-token']);
    try {
      const a = await waitForJob(again.port, created.json.id);
      assert.equal(a.state, 'interrupted');
      assert.equal(a.error.code, 'CANCELLED');
      const b = await waitForJob(again.port, queued.json.id);
      assert.equal(b.state, 'succeeded', JSON.stringify(b.error));
    } finally {
      again.child.kill('SIGINT');
      assert.equal((await again.exited).code, 0);
    }
  });

  it('a second server on the same --state exits 1 saying why', async () => {
    const state = path.join(tmp.dir, 'st-lock');
    const s = await serveCli([...roots, '--state', state, '--port', '0']);
    try {
      const r = await runCliAsync(['serve', ...roots, '--state', state, '--port', '0']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`in use by another model-stock serve \\(pid ${s.child.pid}\\)`));
    } finally {
      s.child.kill('SIGTERM');
      assert.equal((await s.exited).code, 0);
    }
  });

  it('--token-file: its first line, trimmed; a short one is refused', async () => {
    const file = path.join(tmp.dir, 'token');
    fs.writeFileSync(file, '  a-token-from-a-file-1234  \nsecond line\n', { mode: 0o600 });
    assert.equal(readTokenFile(file), 'a-token-from-a-file-1234');
    const s = await serveCli([
      ...roots,
      '--state',
      path.join(tmp.dir, 'st-tf'),
      '--port',
      '0',
      '--token-file',
      file,
    ]);
    try {
      assert.equal(s.token, 'a-token-from-a-file-1234');
      assert.equal(
        (await request(s.port, 'GET', '/api/jobs', { token: 'a-token-from-a-file-1234' })).status,
        200,
      );
    } finally {
      s.child.kill('SIGTERM');
      await s.exited;
    }
    fs.writeFileSync(file, 'short\n');
    const r = await runCliAsync([
      'serve',
      ...roots,
      '--state',
      path.join(tmp.dir, 'st-tf2'),
      '--token-file',
      file,
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /at least 16 characters/);
  });

  it('bad usage exits 2: --no-token off loopback, a public --host without a token file', async () => {
    for (const args of [
      ['--host', '0.0.0.0', '--no-token'],
      ['--host', '0.0.0.0'],
      ['--no-token', '--token-file', 'x'],
      ['--port', '70000'],
      ['--queue', '0'],
    ]) {
      const r = await runCliAsync(['serve', ...roots, '--state', path.join(tmp.dir, 'st-usage'), ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    }
    const noModels = await runCliAsync(['serve', '--out', f.out]);
    assert.equal(noModels.code, 2);
  });

  it('cannot serve → exit 1 with the reason: a missing root, SQLite that does not load', async () => {
    const missing = await runCliAsync([
      'serve',
      '--models',
      path.join(tmp.dir, 'nope'),
      '--out',
      f.out,
      '--state',
      path.join(tmp.dir, 'st-missing'),
    ]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /--models .*nope/);
    const noSqlite = await runCliAsync(
      ['serve', ...roots, '--state', path.join(tmp.dir, 'st-nosql'), '--port', '0'],
      {
        MODEL_STOCK_SQLITE_BINDING: path.join(tmp.dir, 'no-such-binding.node'),
      },
    );
    assert.equal(noSqlite.code, 1);
    assert.match(noSqlite.stderr, /better-sqlite3, an optional dependency that did not load/);
    assert.match(noSqlite.stderr, /npm rebuild better-sqlite3/);
  });

  it('--state defaults to $XDG_STATE_HOME/model-stock', () => {
    assert.equal(defaultStateDir({ XDG_STATE_HOME: '/x/state' }), '/x/state/model-stock');
    assert.match(defaultStateDir({}), /\.local\/state\/model-stock$/);
  });
});
