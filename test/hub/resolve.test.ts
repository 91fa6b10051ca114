import { strict as assert } from 'node:assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { loadNativeAddon } from '../../lib/engine/native/loader';
import { ModelStockError } from '../../lib/errors';
import { loraKey, peftConfig, writePeftAdapter } from '../../lib/fixtures/lora';
import { resolveInputRef, resolveModelRef } from '../../lib/hub/resolve';
import type { DownloadProgress, HubOptions } from '../../lib/hub/settings';
import { openCheckpoint } from '../../lib/checkpoint/open';
import { addToHfCache, repoFiles } from '../helpers/hfCache';
import { startMockHub, type MockHub } from '../helpers/mockHub';
import { writeModel } from '../helpers/models';
import { useTmpDir } from '../helpers/tmp';

/** A small sharded model with the side files a Hub repository has, and duplicates a merge must not fetch. */
async function hubShapedModel(dir: string, seed: number): Promise<string> {
  const values = (n: number): number[] => Array.from({ length: n }, (_, i) => Math.sin(seed * 31 + i) * 0.1);
  await writeModel(
    dir,
    [
      { name: 'model.embed_tokens.weight', dtype: 'F32', shape: [16, 8], values: values(128) },
      { name: 'model.layers.0.mlp.up_proj.weight', dtype: 'BF16', shape: [8, 8], values: values(64) },
      { name: 'model.norm.weight', dtype: 'F32', shape: [8], values: values(8) },
    ],
    {
      shardSize: 300,
      files: {
        'config.json': JSON.stringify({ num_hidden_layers: 1, vocab_size: 16, torch_dtype: 'float32' }),
        'tokenizer.json': JSON.stringify({
          model: { vocab: Object.fromEntries([...'abcdefghijklmnop'].map((c, i) => [c, i])) },
        }),
        'tokenizer_config.json': '{}',
        'generation_config.json': '{}',
        'README.md': '# not needed\n',
        'pytorch_model.bin': 'a pickle duplicate of the weights',
        'model.gguf': 'a gguf duplicate',
      },
    },
  );
  return dir;
}

const closedPort = async (): Promise<number> => {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as net.AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
};

async function rejects(
  p: Promise<unknown>,
  code: string,
  ...patterns: (string | RegExp)[]
): Promise<ModelStockError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ModelStockError, String(e));
    assert.equal(e.code, code, e.message);
    for (const pat of patterns) {
      if (typeof pat === 'string') assert.ok(e.message.includes(pat), `"${pat}" not in: ${e.message}`);
      else assert.match(e.message, pat);
    }
    return e;
  }
  assert.fail(`expected ${code}`);
}

/** Every file under `dir` whose name matches. */
function findFiles(dir: string, re: RegExp): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) => re.test(path.basename(f)));
}

describe('hub: resolving model IDs through the Hugging Face cache', () => {
  const tmp = useTmpDir();
  let k = 0;
  const fresh = (name: string): string => path.join(tmp.dir, `${name}${k++}`);
  let src: string;
  let src2: string;

  before(async () => {
    src = await hubShapedModel(path.join(tmp.dir, 'src'), 1);
    src2 = await hubShapedModel(path.join(tmp.dir, 'src2'), 2);
  });

  describe('from the cache alone', () => {
    it('refs/<revision> → snapshots/<commit>, a commit directly, symlinks followed, no network', async () => {
      const cacheDir = fresh('cache');
      const main = await addToHfCache(cacheDir, 'org/model', src);
      const v1 = await addToHfCache(cacheDir, 'org/model', src2, { revision: 'v1' });
      const offline: HubOptions = { cacheDir, offline: true };
      assert.equal(await resolveModelRef('org/model', offline), main.snapshot);
      assert.equal(await resolveModelRef('org/model@main', offline), main.snapshot);
      assert.equal(await resolveModelRef('org/model@v1', offline), v1.snapshot);
      assert.equal(await resolveModelRef(`org/model@${v1.commit}`, offline), v1.snapshot);
      // A complete snapshot of a commit is final: not even an unreachable Hub is asked.
      const online: HubOptions = { cacheDir, endpoint: `http://127.0.0.1:${await closedPort()}` };
      assert.equal(await resolveModelRef(`org/model@${main.commit}`, online), main.snapshot);
      const cp = await openCheckpoint(main.snapshot);
      assert.equal(cp.files.length, 2, 'the sharded weights open through the symlinks');
      assert.ok(fs.lstatSync(path.join(main.snapshot, 'config.json')).isSymbolicLink());
    });

    it('offline and missing: the ID, the cache folder searched and `huggingface-cli download`', async () => {
      const cacheDir = fresh('cache');
      await rejects(
        resolveModelRef('org/absent', { cacheDir, offline: true }),
        'MODEL_NOT_CACHED',
        '"org/absent" is not a local path',
        'org/absent',
        cacheDir,
        'HF_HUB_OFFLINE',
        '`huggingface-cli download org/absent`',
      );
      await rejects(
        resolveModelRef('org/absent@v2', { cacheDir, offline: true }),
        'MODEL_NOT_CACHED',
        '`huggingface-cli download org/absent --revision v2`',
      );
      await addToHfCache(cacheDir, 'org/model', src);
      await rejects(
        resolveModelRef('org/model@v9', { cacheDir, offline: true }),
        'MODEL_NOT_CACHED',
        'refs/v9',
      );
    });

    it('an incomplete snapshot (a shard never downloaded) is not taken for the model', async () => {
      const cacheDir = fresh('cache');
      await addToHfCache(cacheDir, 'org/model', src, {
        only: (f) => f !== 'model-00002-of-00002.safetensors',
      });
      await rejects(
        resolveModelRef('org/model', { cacheDir, offline: true }),
        'MODEL_NOT_CACHED',
        'incomplete',
        'model-00002-of-00002.safetensors',
      );
    });

    it('a model+lora reference that is not a path is two references: resolveModelRef refuses it, resolveInputRef splits it', async () => {
      await rejects(
        resolveModelRef('org/base+org/adapter', { offline: true }),
        'BAD_CONFIG',
        'names a model ("org/base") and a LoRA adapter applied to it ("org/adapter")',
      );
      const rel = path.relative(process.cwd(), src);
      assert.deepEqual(await resolveInputRef(`${rel}+${rel}`, { offline: true }), {
        path: rel,
        over: { ref: rel, path: rel },
      });
      await rejects(
        resolveInputRef(`${rel}+${rel}+${rel}`, { offline: true }),
        'BAD_CONFIG',
        'more than one "+"',
      );
    });

    it('an existing folder wins over a cached Hub model of the same name', async () => {
      const cacheDir = fresh('cache');
      const rel = path.relative(process.cwd(), src);
      assert.equal(await resolveModelRef(rel, { cacheDir, offline: true }), rel);
    });
  });

  describe('downloads (loopback mock of the Hub)', () => {
    let hub: MockHub;
    before(async () => {
      hub = await startMockHub([
        { repo: 'org/model', dir: src, revisions: { v2: src2 } },
        { repo: 'org/gated', dir: src, gatedToken: 'hf_secret' },
      ]);
    });
    after(async () => hub.close());
    beforeEach(() => {
      hub.requests.length = 0;
      for (const key of Object.keys(hub.faults)) delete (hub.faults as Record<string, unknown>)[key];
    });
    const opts = (cacheDir: string, more: Partial<HubOptions> = {}): HubOptions => ({
      cacheDir,
      endpoint: hub.url,
      token: false,
      readTimeoutMs: 2000,
      connectTimeoutMs: 2000,
      ...more,
    });

    it('fetches only what a merge needs, into the layout huggingface_hub writes', async () => {
      const cacheDir = fresh('cache');
      const progress: DownloadProgress[] = [];
      const dir = await resolveModelRef('org/model', opts(cacheDir, { onProgress: (p) => progress.push(p) }));
      const commit = hub.commitOf('org/model');
      const storage = path.join(cacheDir, 'models--org--model');
      assert.equal(dir, path.join(storage, 'snapshots', commit));
      assert.equal(fs.readFileSync(path.join(storage, 'refs', 'main'), 'utf8'), commit);
      const wanted = [
        'config.json',
        'generation_config.json',
        'model-00001-of-00002.safetensors',
        'model-00002-of-00002.safetensors',
        'model.safetensors.index.json',
        'tokenizer.json',
        'tokenizer_config.json',
      ];
      assert.deepEqual(fs.readdirSync(dir).sort(), wanted, 'no README, .bin or .gguf');
      const byName = new Map(repoFiles(src).map((f) => [f.name, f]));
      for (const name of wanted) {
        const f = byName.get(name)!;
        const link = fs.readlinkSync(path.join(dir, name));
        assert.equal(link, path.join('..', '..', 'blobs', f.blob), `${name}: relative symlink to its blob`);
        assert.equal(f.blob, name.endsWith('.safetensors') ? f.sha256 : f.gitOid);
        assert.deepEqual(fs.readFileSync(path.join(dir, name)), f.bytes);
      }
      assert.deepEqual(findFiles(storage, /incomplete|\.tmp$/), [], 'no temporary file left');
      if (loadNativeAddon().addon !== undefined) {
        const locks = fs.readdirSync(path.join(cacheDir, '.locks', 'models--org--model')).sort();
        // tokenizer_config.json and generation_config.json hold the same bytes: one blob, one lock.
        assert.deepEqual(locks, [...new Set(wanted.map((n) => `${byName.get(n)!.blob}.lock`))].sort());
      }
      assert.equal((await openCheckpoint(dir)).tensors.size, 3);
      // Progress: per byte, monotonic, ending at the total of what was fetched.
      const total = wanted.reduce((a, n) => a + byName.get(n)!.bytes.byteLength, 0);
      assert.ok(progress.length >= wanted.length);
      for (let i = 1; i < progress.length; i++)
        assert.ok(progress[i]!.bytesDone >= progress[i - 1]!.bytesDone);
      assert.equal(progress.at(-1)!.bytesDone, total);
      assert.equal(progress.at(-1)!.bytesTotal, total);

      // Again: one revision request, nothing downloaded; offline: no request at all.
      hub.requests.length = 0;
      assert.equal(await resolveModelRef('org/model', opts(cacheDir)), dir);
      assert.deepEqual(
        hub.requests.map((r) => r.path),
        ['/api/models/org/model/revision/main'],
      );
      hub.requests.length = 0;
      assert.equal(await resolveModelRef('org/model', opts(cacheDir, { offline: true })), dir);
      assert.equal(hub.requests.length, 0);
    });

    it('a revision resolves to its own snapshot; the Python-written part of a cache is reused', async () => {
      const cacheDir = fresh('cache');
      // A previous Python download of the config only (AutoConfig.from_pretrained does this).
      const partial = await addToHfCache(cacheDir, 'org/model', src2, {
        revision: 'v2',
        commit: hub.commitOf('org/model', 'v2'),
        only: (f) => f === 'config.json',
      });
      const dir = await resolveModelRef('org/model@v2', opts(cacheDir));
      assert.equal(dir, partial.snapshot);
      const fetched = hub.requests
        .filter((r) => r.path.includes('/resolve/'))
        .map((r) => path.basename(r.path));
      assert.ok(!fetched.includes('config.json'), 'the cached config.json is not fetched again');
      assert.ok(fetched.includes('model-00001-of-00002.safetensors'));
      assert.equal(
        fs.readFileSync(path.join(cacheDir, 'models--org--model', 'refs', 'v2'), 'utf8'),
        partial.commit,
      );
      assert.deepEqual(
        fs.readFileSync(path.join(dir, 'model-00002-of-00002.safetensors')),
        fs.readFileSync(path.join(src2, 'model-00002-of-00002.safetensors')),
      );
    });

    it('gated: without a token a clear error naming HF_TOKEN; with HF_TOKEN the header is sent', async () => {
      const cacheDir = fresh('cache');
      await rejects(
        resolveModelRef('org/gated', opts(cacheDir)),
        'HUB_ERROR',
        'gated',
        'set HF_TOKEN',
        '"org/gated" is not a local path',
      );
      hub.requests.length = 0;
      const dir = await resolveModelRef(
        'org/gated',
        opts(cacheDir, { token: undefined, env: { HF_TOKEN: 'hf_secret' } }),
      );
      assert.ok(fs.existsSync(path.join(dir, 'model.safetensors.index.json')));
      const toHub = hub.requests.filter((r) => !r.path.startsWith('/cdn/'));
      assert.ok(toHub.length > 1);
      for (const r of toHub) assert.equal(r.authorization, 'Bearer hf_secret', r.path);
    });

    it('unknown model or revision: HUB_ERROR that says it is not a local path and where the cache is', async () => {
      const cacheDir = fresh('cache');
      await rejects(
        resolveModelRef('org/nothing', opts(cacheDir)),
        'HUB_ERROR',
        'has no model org/nothing',
        cacheDir,
        'HF_HUB_OFFLINE=1',
      );
      await rejects(resolveModelRef('org/model@nope', opts(cacheDir)), 'HUB_ERROR', 'no such revision');
    });

    it('a stalled body hits the read timeout; nothing partial stays; the next try completes', async () => {
      const cacheDir = fresh('cache');
      hub.faults.stallFile = 'model-00001-of-00002.safetensors';
      const started = Date.now();
      await rejects(
        resolveModelRef('org/model', opts(cacheDir, { readTimeoutMs: 300 })),
        'HUB_ERROR',
        'no data within 0.3 s',
      );
      assert.ok(Date.now() - started < 5000);
      const storage = path.join(cacheDir, 'models--org--model');
      assert.deepEqual(findFiles(storage, /incomplete/), []);
      assert.ok(
        !fs.existsSync(
          path.join(storage, 'snapshots', hub.commitOf('org/model'), 'model-00001-of-00002.safetensors'),
        ),
      );
      assert.ok(
        !fs.existsSync(path.join(storage, 'refs', 'main')),
        'refs/main only once the snapshot is complete',
      );
      delete hub.faults.stallFile;
      const dir = await resolveModelRef('org/model', opts(cacheDir));
      assert.equal((await openCheckpoint(dir)).tensors.size, 3);
    });

    it('a Hub that never answers hits the connect timeout', async () => {
      hub.faults.hangRevision = true;
      await rejects(
        resolveModelRef('org/model', opts(fresh('cache'), { connectTimeoutMs: 200 })),
        'HUB_ERROR',
        'no response within 0.2 s',
      );
    });

    it('bytes that do not hash to what the Hub lists are not kept', async () => {
      const cacheDir = fresh('cache');
      hub.faults.corruptFile = 'model-00002-of-00002.safetensors';
      await rejects(resolveModelRef('org/model', opts(cacheDir)), 'HUB_ERROR', 'hash to', 'nothing was kept');
      const f = repoFiles(src).find((x) => x.name === 'model-00002-of-00002.safetensors')!;
      assert.ok(!fs.existsSync(path.join(cacheDir, 'models--org--model', 'blobs', f.blob)));
      assert.deepEqual(findFiles(cacheDir, /incomplete/), []);
    });

    it('cancellation through the AbortSignal ends a download and leaves no partial file', async () => {
      const cacheDir = fresh('cache');
      hub.faults.slowFile = 'model-00001-of-00002.safetensors';
      hub.faults.slowChunk = 16;
      hub.faults.slowMs = 30;
      const ac = new AbortController();
      const e = await rejects(
        resolveModelRef(
          'org/model',
          opts(cacheDir, {
            signal: ac.signal,
            onProgress: (p) => p.file === hub.faults.slowFile && ac.abort(new Error('user')),
          }),
        ),
        'CANCELLED',
      );
      assert.equal((e.cause as Error).message, 'user');
      assert.deepEqual(findFiles(cacheDir, /incomplete/), []);
      // An already-aborted signal does not even ask.
      hub.requests.length = 0;
      await rejects(
        resolveModelRef('org/model', opts(cacheDir, { signal: AbortSignal.abort() })),
        'CANCELLED',
      );
      assert.equal(hub.requests.length, 0);
    });

    it('Hub unreachable or failing: the cached snapshot is used with a warning; without one, an error', async () => {
      const cacheDir = fresh('cache');
      const cached = await addToHfCache(cacheDir, 'org/model', src);
      const warnings: string[] = [];
      const down = {
        cacheDir,
        endpoint: `http://127.0.0.1:${await closedPort()}`,
        onWarning: (m: string) => warnings.push(m),
      };
      assert.equal(await resolveModelRef('org/model', down), cached.snapshot);
      assert.match(warnings[0] ?? '', /cannot reach .* using the cached snapshot/);
      hub.faults.revisionStatus = 503;
      assert.equal(
        await resolveModelRef('org/model', opts(cacheDir, { onWarning: (m) => warnings.push(m) })),
        cached.snapshot,
      );
      assert.match(warnings[1] ?? '', /HTTP 503.*using the cached snapshot/);
      await rejects(
        resolveModelRef('org/other', down),
        'HUB_ERROR',
        'cannot reach',
        '`huggingface-cli download org/other`',
      );
    });

    it('a repository with only PyTorch weights: its index and .bin shards are downloaded, no other .bin/.pt', async () => {
      const binOnly = fresh('bin');
      fs.mkdirSync(binOnly);
      const torchMade = path.resolve(__dirname, '..', '..', '..', 'test', 'data', 'pytorch', 'sharded-bf16');
      for (const f of fs.readdirSync(torchMade))
        fs.copyFileSync(path.join(torchMade, f), path.join(binOnly, f));
      fs.writeFileSync(path.join(binOnly, 'training_args.bin'), 'a pickled TrainingArguments');
      fs.writeFileSync(path.join(binOnly, 'optimizer.pt'), 'optimizer state');
      fs.writeFileSync(path.join(binOnly, 'README.md'), '# card');
      const other = await startMockHub([{ repo: 'org/bin', dir: binOnly }]);
      try {
        const dir = await resolveModelRef('org/bin', {
          cacheDir: fresh('cache'),
          endpoint: other.url,
          token: false,
        });
        assert.deepEqual(fs.readdirSync(dir).sort(), [
          'config.json',
          'pytorch_model-00001-of-00002.bin',
          'pytorch_model-00002-of-00002.bin',
          'pytorch_model.bin.index.json',
        ]);
        const cp = await openCheckpoint(dir);
        assert.equal(cp.format, 'pytorch');
        assert.equal(cp.order.length, 11);
      } finally {
        await other.close();
      }
    });

    it('an adapter repository: adapter_config.json and adapter_model.safetensors only (not the .bin beside it, not the card)', async () => {
      const adapterDir = fresh('adapter');
      await writePeftAdapter(adapterDir, {
        config: peftConfig({ r: 2, lora_alpha: 4, target_modules: ['q_proj'] }),
        tensors: [
          {
            name: loraKey('model.layers.0.self_attn.q_proj', 'A'),
            dtype: 'F32',
            shape: [2, 4],
            values: new Array(8).fill(0.5),
          },
          {
            name: loraKey('model.layers.0.self_attn.q_proj', 'B'),
            dtype: 'F32',
            shape: [4, 2],
            values: new Array(8).fill(0.25),
          },
        ],
        weights: 'both',
      });
      fs.writeFileSync(path.join(adapterDir, 'README.md'), '# adapter card');
      fs.writeFileSync(path.join(adapterDir, 'training_args.bin'), 'a pickled TrainingArguments');
      const other = await startMockHub([{ repo: 'org/lora', dir: adapterDir }]);
      try {
        const dir = await resolveModelRef('org/lora', {
          cacheDir: fresh('cache'),
          endpoint: other.url,
          token: false,
        });
        assert.deepEqual(fs.readdirSync(dir).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
        const cp = await openCheckpoint(dir);
        assert.equal(cp.format, 'lora');
        assert.deepEqual(
          cp.adapter?.modules.map((m) => [m.module, m.rank, m.scale]),
          [['model.layers.0.self_attn.q_proj', 2, 2]],
        );
      } finally {
        await other.close();
      }
    });

    it('a repository without weights model-stock reads is refused before any download', async () => {
      const gguf = fresh('gguf');
      fs.mkdirSync(gguf);
      fs.writeFileSync(path.join(gguf, 'model.gguf'), 'gguf');
      fs.writeFileSync(path.join(gguf, 'config.json'), '{}');
      const other = await startMockHub([{ repo: 'org/gguf', dir: gguf }]);
      try {
        await rejects(
          resolveModelRef('org/gguf', { cacheDir: fresh('cache'), endpoint: other.url, token: false }),
          'NO_CHECKPOINT',
          'pytorch_model.bin',
          'model.gguf, in formats model-stock does not read',
        );
        assert.ok(!other.requests.some((r) => r.path.includes('/resolve/')));
      } finally {
        await other.close();
      }
    });

    it('a pointer whose blob a cache cleaner removed is fetched and linked again', async () => {
      const cacheDir = fresh('cache');
      const dir = await resolveModelRef('org/model', opts(cacheDir));
      const f = repoFiles(src).find((x) => x.name === 'model-00001-of-00002.safetensors')!;
      fs.rmSync(path.join(cacheDir, 'models--org--model', 'blobs', f.blob));
      assert.equal(await resolveModelRef('org/model', opts(cacheDir)), dir);
      assert.deepEqual(fs.readFileSync(path.join(dir, f.name)), f.bytes);
    });

    describe('the blob lock is the one Python tools take', () => {
      /** A process holding flock(LOCK_EX) on `file` (Python's fcntl, as huggingface_hub's filelock; else flock(1)). */
      const holdLock = async (file: string, seconds: number): Promise<ChildProcess | undefined> => {
        fs.mkdirSync(path.dirname(file), { recursive: true });
        const py = `import fcntl,sys,time\nf=open(sys.argv[1],'a')\nfcntl.flock(f,fcntl.LOCK_EX)\nprint('locked',flush=True)\ntime.sleep(${seconds})`;
        const candidates: [string, string[]][] = [
          ['python3', ['-c', py, file]],
          ['flock', ['-x', file, 'sh', '-c', `echo locked; sleep ${seconds}`]],
        ];
        for (const [cmd, args] of candidates) {
          if (spawnSync(cmd, ['--version']).status !== 0) continue;
          const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
          await new Promise<void>((resolve, reject) => {
            child.stdout!.once('data', () => resolve());
            child.once('exit', (code) => reject(new Error(`${cmd} exited ${code}`)));
          });
          return child;
        }
        return undefined;
      };

      it('a download waits while another process holds the blob lock', async function () {
        if (loadNativeAddon().addon === undefined) this.skip(); // the lock needs the addon; without it we go on unlocked
        const cacheDir = fresh('cache');
        const f = repoFiles(src).find((x) => x.name === 'model-00001-of-00002.safetensors')!;
        const lockFile = path.join(cacheDir, '.locks', 'models--org--model', `${f.blob}.lock`);
        const holder = await holdLock(lockFile, 1.2);
        if (holder === undefined) {
          console.log('      (no python3 or flock(1) on this machine to hold a lock from another process)');
          this.skip();
        }
        const exited = new Promise((r) => holder!.once('exit', r));
        const started = Date.now();
        let fetchedAt = 0;
        await resolveModelRef(
          'org/model',
          opts(cacheDir, {
            onProgress: (p) => p.file === f.name && fetchedAt === 0 && (fetchedAt = Date.now()),
          }),
        );
        await exited;
        assert.ok(
          fetchedAt - started >= 900,
          `downloaded ${fetchedAt - started} ms after start, while the lock was held`,
        );
      });

      it('while we download, another process cannot take the lock (Python would wait)', async function () {
        if (loadNativeAddon().addon === undefined) this.skip();
        if (spawnSync('python3', ['--version']).status !== 0) this.skip();
        const cacheDir = fresh('cache');
        hub.faults.slowFile = 'model-00001-of-00002.safetensors';
        hub.faults.slowChunk = 64;
        hub.faults.slowMs = 20;
        const f = repoFiles(src).find((x) => x.name === hub.faults.slowFile)!;
        const lockFile = path.join(cacheDir, '.locks', 'models--org--model', `${f.blob}.lock`);
        let probe: ReturnType<typeof spawnSync> | undefined;
        const py =
          "import fcntl,sys\nf=open(sys.argv[1],'a')\ntry:\n  fcntl.flock(f,fcntl.LOCK_EX|fcntl.LOCK_NB)\n  print('free')\nexcept BlockingIOError:\n  print('held')";
        await resolveModelRef(
          'org/model',
          opts(cacheDir, {
            onProgress: (p) => {
              if (p.file === f.name && probe === undefined)
                probe = spawnSync('python3', ['-c', py, lockFile], { encoding: 'utf8' });
            },
          }),
        );
        assert.equal(String(probe?.stdout).trim(), 'held');
        const after = spawnSync('python3', ['-c', py, lockFile], { encoding: 'utf8' });
        assert.equal(after.stdout.trim(), 'free', 'released when the blob is in place');
      });
    });
  });
});
