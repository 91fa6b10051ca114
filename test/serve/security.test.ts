import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { acceptedHosts, isLoopbackHost, redactUrl } from '../../lib/serve/security';
import type { Server } from '../../lib/serve/server';
import {
  mergeBody,
  request,
  serveFolders,
  sqliteOrSkip,
  startServer,
  TOKEN,
  waitForJob,
} from '../helpers/serve';
import { useTmpDir } from '../helpers/tmp';

/** Sends raw bytes and returns the raw response (for requests node:http will not make). */
function rawRequest(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.end(text));
    let out = '';
    socket.setEncoding('utf8').on('data', (d: string) => (out += d));
    socket.on('close', () => resolve(out));
    socket.on('error', reject);
  });
}

describe('model-stock serve: the guard (unit)', () => {
  it('knows loopback hosts', () => {
    for (const h of ['127.0.0.1', '127.8.9.1', '::1', '[::1]', 'localhost', 'LOCALHOST'])
      assert.equal(isLoopbackHost(h), true, h);
    for (const h of ['0.0.0.0', '::', '192.168.1.2', 'example.com', '::ffff:10.0.0.1'])
      assert.equal(isLoopbackHost(h), false, h);
  });

  it('accepts the loopback names with the port, the bound address, and --allowed-host names', () => {
    assert.deepEqual([...acceptedHosts('127.0.0.1', 8700, [])].sort(), [
      '127.0.0.1:8700',
      '[::1]:8700',
      'localhost:8700',
    ]);
    assert.deepEqual(
      [...acceptedHosts('0.0.0.0', 80, ['Merge.Example.com'], () => ['host-a', '10.0.0.5'])].sort(),
      [
        '10.0.0.5:80',
        '127.0.0.1:80',
        '[::1]:80',
        'host-a:80',
        'localhost:80',
        'merge.example.com',
        'merge.example.com:80',
      ],
    );
    assert.deepEqual([...acceptedHosts('10.1.2.3', 80, ['proxy:8443'])].sort(), [
      '10.1.2.3:80',
      'proxy:8443',
    ]);
  });

  it('redacts the token from logged URLs', () => {
    assert.equal(redactUrl('/?token=abc'), '/?token=[redacted]');
    assert.equal(redactUrl('/x?a=1&TOKEN=abc&b=2'), '/x?a=1&TOKEN=[redacted]&b=2');
    assert.equal(redactUrl('/api/jobs'), '/api/jobs');
  });
});

describe('model-stock serve: locked down by default', function () {
  this.timeout(60_000);
  const tmp = useTmpDir('model-stock-serve-sec-');
  let f: Awaited<ReturnType<typeof serveFolders>>;
  let server: Server;
  let port: number;
  const log: string[] = [];
  /** A folder outside every root, with something secret in it. */
  let secret: string;

  before(async function () {
    await sqliteOrSkip(this);
    f = await serveFolders(tmp.dir);
    secret = path.join(tmp.dir, 'private');
    fs.mkdirSync(secret);
    fs.writeFileSync(path.join(secret, 'id_rsa'), 'PRIVATE KEY');
    fs.cpSync(f.base, path.join(secret, 'model'), { recursive: true });
    const stream = new Writable({
      write(chunk: Buffer, _enc, done) {
        log.push(chunk.toString('utf8'));
        done();
      },
    });
    server = await startServer(f, { log: { level: 'trace', stream } });
    port = server.port;
  });
  after(async () => server?.close());

  describe('the token', () => {
    it('no token or a wrong one → 401 UNAUTHORIZED, with the body and WWW-Authenticate', async () => {
      for (const token of [null, 'wrong', `${TOKEN}x`, TOKEN.slice(0, -1), ''] as const) {
        const r = await request(port, 'GET', '/api/jobs', { token });
        assert.equal(r.status, 401, String(token));
        assert.equal(r.json.error.code, 'UNAUTHORIZED');
        assert.equal(r.headers['www-authenticate'], 'Bearer');
      }
      const basic = await request(port, 'GET', '/api/jobs', {
        token: null,
        headers: { authorization: `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}` },
      });
      assert.equal(basic.status, 401);
      assert.equal((await request(port, 'GET', '/api/jobs')).status, 200);
    });

    it('every /api route but health needs it, the token checked before the body is read', async () => {
      for (const [method, route] of [
        ['GET', '/api/models'],
        ['POST', '/api/jobs'],
        ['GET', '/api/jobs/x'],
        ['GET', '/api/jobs/x/events'],
        ['POST', '/api/jobs/x/cancel'],
        ['DELETE', '/api/jobs/x'],
        ['GET', '/api/jobs/x/report'],
        ['GET', '/api/jobs/x/picture.svg'],
        ['GET', '/api/nothing'],
      ] as const) {
        const r = await request(port, method, route, { token: null });
        assert.equal(r.status, 401, `${method} ${route}`);
      }
      const big = await request(port, 'POST', '/api/jobs', {
        token: null,
        raw: 'x'.repeat(2 << 20),
        headers: { 'content-type': 'application/json' },
      });
      assert.equal(big.status, 401);
    });

    it('--no-token (loopback only) lets requests through without it', async () => {
      const open = await startServer({ ...f, state: path.join(tmp.dir, 'state-open') }, { token: undefined });
      try {
        assert.equal((await request(open.port, 'GET', '/api/jobs', { token: null })).status, 200);
        assert.doesNotMatch(open.openUrl, /token=/);
      } finally {
        await open.close();
      }
      await assert.rejects(
        startServer(
          { ...f, state: path.join(tmp.dir, 'state-open2') },
          { token: undefined, host: '0.0.0.0' },
        ),
        /--no-token is allowed only on a loopback host/,
      );
    });
  });

  describe('Host and Origin (DNS rebinding, cross-site requests)', () => {
    it('a Host naming another server → 403 BAD_HOST on every route', async () => {
      for (const host of ['evil.example', `evil.example:${port}`, `127.0.0.1:${port + 1}`, '127.0.0.1']) {
        for (const route of ['/api/health', '/api/jobs', '/', '/app.js']) {
          const r = await request(port, 'GET', route, { headers: { host } });
          assert.equal(r.status, 403, `${host} ${route}`);
          assert.equal(r.json.error.code, 'BAD_HOST');
        }
      }
      const none = await rawRequest(port, `GET /api/health HTTP/1.1\r\nConnection: close\r\n\r\n`);
      assert.match(none, /^HTTP\/1\.1 403/);
      assert.match(none, /"code":"BAD_HOST"/);
    });

    it('the loopback names are accepted, in any case', async () => {
      for (const host of [`localhost:${port}`, `[::1]:${port}`, `LocalHost:${port}`]) {
        const r = await request(port, 'GET', '/api/health', { headers: { host } });
        assert.equal(r.status, 200, host);
      }
    });

    it('a cross-origin Origin → 403 BAD_ORIGIN; the server’s own is accepted', async () => {
      for (const origin of [
        'http://evil.example',
        `https://127.0.0.1:${port}`,
        `http://127.0.0.1:${port + 1}`,
        'null',
        'file://',
      ]) {
        const r = await request(port, 'POST', '/api/jobs', { body: mergeBody('x'), headers: { origin } });
        assert.equal(r.status, 403, origin);
        assert.equal(r.json.error.code, 'BAD_ORIGIN', origin);
      }
      for (const origin of [`http://127.0.0.1:${port}`, `http://localhost:${port}`]) {
        const r = await request(port, 'GET', '/api/jobs', { headers: { origin } });
        assert.equal(r.status, 200, origin);
      }
    });

    it('--allowed-host adds a reverse proxy’s name and its https:// origin', async () => {
      const s = await startServer(
        { ...f, state: path.join(tmp.dir, 'state-proxy') },
        { allowedHosts: ['merge.example.com'] },
      );
      try {
        const headers = { host: 'merge.example.com', origin: 'https://merge.example.com' };
        assert.equal((await request(s.port, 'GET', '/api/jobs', { headers })).status, 200);
        const other = { host: 'other.example.com' };
        assert.equal((await request(s.port, 'GET', '/api/jobs', { headers: other })).status, 403);
      } finally {
        await s.close();
      }
    });

    it('a malformed request gets the error body too', async () => {
      const r = await rawRequest(port, 'GET /api/health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n');
      assert.match(r, /^HTTP\/1\.1 400/);
      assert.match(r, /"code":"BAD_REQUEST"/);
    });
  });

  describe('paths stay inside the roots', () => {
    const refused = async (options: Record<string, unknown>, what: string): Promise<void> => {
      const r = await request(port, 'POST', '/api/jobs', { body: { kind: 'merge', options } });
      assert.equal(r.status, 403, `${what}: ${r.text}`);
      assert.equal(r.json.error.code, 'OUTSIDE_ROOTS', what);
      assert.ok(!r.json.error.message.includes(secret), `${what}: the message names ${secret}`);
      assert.ok(
        !r.json.error.message.includes(tmp.dir),
        `${what}: the message names a path outside the roots`,
      );
    };
    const merge = (base: string, out = 'x'): Record<string, unknown> => ({
      base,
      models: ['fx/ft1', 'fx/ft2'],
      out,
    });

    it('../, absolute paths outside the roots, and links pointing out → 403 OUTSIDE_ROOTS', async () => {
      await refused(merge('../private/model'), '../');
      await refused(merge('fx/../../private/model'), 'fx/../../');
      await refused(merge(path.join(secret, 'model')), 'an absolute path outside');
      await refused(merge(`${f.models}/../private/model`), 'an absolute path that climbs out');
      fs.symlinkSync(path.join(secret, 'model'), path.join(f.models, 'link-out'));
      await refused(merge('link-out'), 'a link inside a root pointing out');
      await refused(merge('does-not-exist'), 'a reference under no root');
      await refused(merge('org/name'), 'a Hub ID without --hub');
    });

    it('a model folder whose file links out (a tokenizer.json → ~/.ssh/id_rsa) → 403', async () => {
      const model = path.join(f.models, 'leaky');
      fs.cpSync(f.base, model, { recursive: true });
      fs.rmSync(path.join(model, 'tokenizer.json'), { force: true });
      fs.symlinkSync(path.join(secret, 'id_rsa'), path.join(model, 'tokenizer.json'));
      await refused(merge('leaky'), 'a file linking out');
      await refused({ ...merge('fx/base'), models: ['fx/ft1', 'leaky'] }, 'as a fine-tune too');
      // A single-file reference: the config.json beside it is read for slices.
      const single = path.join(f.models, 'single');
      fs.mkdirSync(single);
      fs.copyFileSync(path.join(f.base, 'model.safetensors'), path.join(single, 'w.safetensors'));
      fs.symlinkSync(path.join(secret, 'id_rsa'), path.join(single, 'config.json'));
      await refused(merge('single/w.safetensors'), 'config.json beside a file');
    });

    it('links that stay inside the roots, and absolute paths inside them, are fine', async () => {
      fs.symlinkSync(f.base, path.join(f.models, 'link-in'));
      const r = await request(port, 'POST', '/api/jobs', {
        body: { kind: 'inspect', options: { base: 'link-in', models: [f.ft[0], 'fx/ft2'] } },
      });
      assert.equal(r.status, 201, r.text);
      assert.equal((await waitForJob(port, r.json.id)).state, 'succeeded');
    });

    it('out must be one name inside --out', async () => {
      await refused(merge('fx/base', '../escaped'), 'out ../');
      await refused(merge('fx/base', 'a/b'), 'out a/b');
      await refused(merge('fx/base', '..'), 'out ..');
      await refused(merge('fx/base', path.join(secret, 'o')), 'an absolute out');
      for (const out of ['.hidden', '.', 'bad\u0001name']) {
        const r = await request(port, 'POST', '/api/jobs', {
          body: { kind: 'merge', options: merge('fx/base', out) },
        });
        assert.equal(r.status, 400, JSON.stringify(out));
      }
      assert.ok(!fs.existsSync(path.join(tmp.dir, 'escaped')));
    });

    it('a link swapped in after the submit is refused when the job starts: nothing is read through it', async () => {
      const slow = await startServer({ ...f, state: path.join(tmp.dir, 'state-swap') }, { memory: 384 });
      try {
        const model = path.join(f.models, 'swapped');
        fs.cpSync(f.base, model, { recursive: true });
        fs.writeFileSync(path.join(model, 'tokenizer.json'), '{}');
        const first = await request(slow.port, 'POST', '/api/jobs', { body: mergeBody('swap-first') });
        const r = await request(slow.port, 'POST', '/api/jobs', {
          body: { kind: 'merge', options: { ...merge('swapped', 'swap-out') } },
        });
        assert.equal(r.status, 201, r.text);
        fs.rmSync(path.join(model, 'tokenizer.json'));
        fs.symlinkSync(path.join(secret, 'id_rsa'), path.join(model, 'tokenizer.json'));
        await request(slow.port, 'POST', `/api/jobs/${first.json.id}/cancel`);
        const job = await waitForJob(slow.port, r.json.id);
        assert.equal(job.state, 'failed');
        assert.equal(job.error.code, 'OUTSIDE_ROOTS');
        assert.ok(!fs.existsSync(path.join(f.out, 'swap-out')));
      } finally {
        await slow.close();
      }
    });

    it('GET /api/models lists nothing outside the roots, and no hidden folder', async () => {
      fs.cpSync(f.base, path.join(f.models, '.hidden-model'), { recursive: true });
      const r = await request(port, 'GET', '/api/models');
      const paths = r.json.models.map((m: { path: string }) => m.path);
      assert.ok(!paths.includes('link-out'), paths.join(', '));
      assert.ok(!paths.some((p: string) => p.startsWith('.')), paths.join(', '));
      assert.ok(paths.includes('link-in'));
      assert.ok(!JSON.stringify(r.json).includes(secret));
    });

    it('with --hub, an org/name reference is a Hub ID; the cache path is not shown', async () => {
      const cache = path.join(tmp.dir, 'hf-cache');
      const saved = { offline: process.env.HF_HUB_OFFLINE, cache: process.env.HF_HUB_CACHE };
      process.env.HF_HUB_OFFLINE = '1';
      process.env.HF_HUB_CACHE = cache;
      const s = await startServer({ ...f, state: path.join(tmp.dir, 'state-hub') }, { hub: true });
      try {
        const r = await request(s.port, 'POST', '/api/jobs', {
          body: { kind: 'inspect', options: { base: 'org/base-model', models: ['fx/ft1', 'fx/ft2'] } },
        });
        assert.equal(r.status, 201, r.text);
        const job = await waitForJob(s.port, r.json.id);
        assert.equal(job.state, 'failed');
        assert.equal(job.error.code, 'MODEL_NOT_CACHED');
        assert.ok(!job.error.message.includes(cache), job.error.message);
        assert.match(job.error.message, /<Hugging Face cache>/);
      } finally {
        await s.close();
        for (const [k, v] of [
          ['HF_HUB_OFFLINE', saved.offline],
          ['HF_HUB_CACHE', saved.cache],
        ] as const) {
          if (v === undefined) delete process.env[k];
          else process.env[k] = v;
        }
      }
    });
  });

  it('a 2 MiB body → 413 BODY_TOO_LARGE', async () => {
    const config = `merge_method: model_stock\n# ${'x'.repeat(2 << 20)}\n`;
    const r = await request(port, 'POST', '/api/jobs', { body: { kind: 'inspect', config } });
    assert.equal(r.status, 413);
    assert.equal(r.json.error.code, 'BODY_TOO_LARGE');
  });

  it('a full queue → 429 QUEUE_FULL (running jobs not counted)', async () => {
    const s = await startServer(
      { ...f, state: path.join(tmp.dir, 'state-queue') },
      { queue: 2, memory: 384 },
    );
    try {
      const ids: string[] = [];
      for (const out of ['q1', 'q2', 'q3']) {
        const r = await request(s.port, 'POST', '/api/jobs', { body: mergeBody(out) });
        assert.equal(r.status, 201, r.text);
        ids.push(r.json.id);
      }
      const full = await request(s.port, 'POST', '/api/jobs', { body: mergeBody('q4') });
      assert.equal(full.status, 429);
      assert.equal(full.json.error.code, 'QUEUE_FULL');
      for (const id of ids) await request(s.port, 'POST', `/api/jobs/${id}/cancel`);
      for (const id of ids) await waitForJob(s.port, id);
    } finally {
      await s.close();
    }
  });

  it('every response carries nosniff and a CSP; none allows scripts but the page’s own', async () => {
    for (const [route, token] of [
      ['/api/health', null],
      ['/api/jobs', undefined],
      ['/api/jobs', null],
      ['/api/nothing', undefined],
      ['/', null],
    ] as const) {
      const r = await request(port, 'GET', route, { token });
      assert.equal(r.headers['x-content-type-options'], 'nosniff', route);
      const csp = String(r.headers['content-security-policy']);
      assert.match(csp, /default-src 'none'/, route);
      assert.doesNotMatch(csp, /unsafe-inline'.*script|script-src[^;]*unsafe/, route);
      assert.equal(r.headers['referrer-policy'], 'no-referrer', route);
      assert.equal(r.headers['access-control-allow-origin'], undefined, route);
    }
  });

  it('the token never reaches the log', async () => {
    await request(port, 'GET', `/?token=${TOKEN}`, { token: null });
    await request(port, 'GET', `/api/jobs?token=${TOKEN}`);
    await request(port, 'GET', '/api/jobs', { token: `${TOKEN}-wrong` });
    const text = log.join('');
    assert.ok(text.includes('"url":"/?token=[redacted]"'), 'requests are logged');
    assert.ok(!text.includes(TOKEN), 'the token is in the log');
  });
});
