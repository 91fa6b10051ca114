import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelStockError, escapeControl, isModelStockError } from '../../lib/errors';
import { mergeModelStock } from '../../lib/merge';
import { REPORT_FILE } from '../../lib/output/atomic';
import { PLOT_FILE } from '../../lib/report/svg';
import type { MergeOptions } from '../../lib/types';
import { mergeArgs, runCli, runCliAsync } from '../helpers/cli';
import { addToHfCache } from '../helpers/hfCache';
import { hashTree, writeModel, type TensorSpec } from '../helpers/models';
import { correlatedModels, mulberry32, randomTensor } from '../helpers/random';
import { useTmpDir } from '../helpers/tmp';

/**
 * The promises a library inside a long-running service must keep: a merge never destroys what it did
 * not write (a file put into OUT while it runs, another merge's output, an input named as the report),
 * concurrent merges to one OUT have one winner, an input changed under a merge is an error, every
 * failure is coded and named, and names from files cannot drive the terminal.
 */

const CONFIG = '{"architectures": ["LlamaForCausalLM"]}\n';
const TOKENIZER = '{"model": {"vocab": {}}}\n';

/** Base + 2 fine-tunes (F32, ≈ 100 KiB each), the base with a config and a tokenizer. */
async function models(root: string, names = ['model.embed_tokens.weight', 'model.norm.weight']) {
  const rng = mulberry32(11);
  const shapes = [[96, 128], [128]];
  const perModel: TensorSpec[][] = [[], [], []];
  names.forEach((name, k) => {
    const shape = shapes[k]!;
    const w0 = randomTensor(
      shape.reduce((a, b) => a * b, 1),
      rng,
      0.5,
    );
    [w0, ...correlatedModels(w0, 2, 0.4, rng)].forEach((values, i) =>
      perModel[i]!.push({ name, dtype: 'F32', shape, values }),
    );
  });
  const dirs: string[] = [];
  for (const [i, tensors] of perModel.entries()) {
    const files: Record<string, string> =
      i === 0 ? { 'config.json': CONFIG, 'tokenizer.json': TOKENIZER } : {};
    dirs.push(await writeModel(path.join(root, i === 0 ? 'base' : `ft${i}`), tensors, { files }));
  }
  return { base: dirs[0]!, models: dirs.slice(1), root };
}

const codeIs =
  (code: string, ...mentions: string[]) =>
  (e: unknown) => {
    assert.ok(isModelStockError(e), String(e));
    assert.equal(e.code, code, e.message);
    for (const m of mentions) assert.ok(e.message.includes(m), `"${e.message}" mentions ${m}`);
    return true;
  };

/** Hidden entries a merge may leave beside OUT (staging folders, moved-aside outputs, temporary reports). */
const hidden = (dir: string): string[] => fs.readdirSync(dir).filter((f) => f.startsWith('.'));

describe('merge safety', function () {
  this.timeout(120_000);
  const tmp = useTmpDir('model-stock-safety-');
  let n = 0;
  const root = (): string => path.join(tmp.dir, `r${n++}`);
  const merge = (o: MergeOptions) => mergeModelStock({ fsync: false, ...o });

  describe('OUT', () => {
    it('a file created in OUT during the merge survives; the merge fails and leaves nothing', async () => {
      const m = await models(root());
      const out = path.join(m.root, 'out');
      const before = [m.base, ...m.models].map(hashTree);
      let written = false;
      await assert.rejects(
        merge({
          ...m,
          out,
          onProgress: () => {
            if (written) return;
            written = true;
            fs.mkdirSync(out, { recursive: true });
            fs.writeFileSync(path.join(out, 'thesis.txt'), 'precious');
          },
        }),
        codeIs('BAD_OUTPUT_PATH', out, 'left as it is'),
      );
      assert.deepEqual(fs.readdirSync(out), ['thesis.txt']);
      assert.equal(fs.readFileSync(path.join(out, 'thesis.txt'), 'utf8'), 'precious');
      assert.deepEqual(hidden(m.root), []);
      assert.deepEqual([m.base, ...m.models].map(hashTree), before);
    });

    it('concurrent merges to one OUT: exactly one wins, the others fail with BAD_OUTPUT_PATH', async () => {
      const m = await models(root());
      const out = path.join(m.root, 'out');
      const runs = await Promise.allSettled([0, 1, 2].map(() => merge({ ...m, out })));
      assert.equal(runs.filter((r) => r.status === 'fulfilled').length, 1, JSON.stringify(runs));
      for (const r of runs) if (r.status === 'rejected') codeIs('BAD_OUTPUT_PATH', out)(r.reason);
      assert.ok(fs.existsSync(path.join(out, REPORT_FILE)));
      assert.deepEqual(hidden(m.root), []);
    });

    it('concurrent merges to one OUT without the addon (separate processes): exactly one wins', async () => {
      const m = await models(root());
      const out = path.join(m.root, 'out');
      const env = { MODEL_STOCK_ADDON: path.join(m.root, 'missing.node') };
      const runs = await Promise.all(
        [0, 1, 2].map(() => runCliAsync([...mergeArgs(m.base, m.models, out), '--no-fsync', '-q'], env)),
      );
      assert.deepEqual(runs.map((r) => r.code).sort(), [0, 1, 1], runs.map((r) => r.stderr).join('\n'));
      for (const r of runs.filter((x) => x.code === 1))
        assert.match(r.stderr.split('\n')[0]!, /BAD_OUTPUT_PATH/);
      assert.ok(fs.existsSync(path.join(out, REPORT_FILE)));
      assert.deepEqual(hidden(m.root), []);
    });

    it('gets mode 0777 & ~umask, as mkdir gives', async () => {
      const m = await models(root());
      const out = path.join(m.root, 'out');
      await merge({ ...m, out });
      const reference = path.join(m.root, 'made-by-mkdir');
      fs.mkdirSync(reference);
      assert.equal(fs.statSync(out).mode & 0o777, fs.statSync(reference).mode & 0o777);
    });

    it('may sit beside a single-file input, but not be that file or contain it', async () => {
      const m = await models(root());
      const single = path.join(m.root, 'base.safetensors');
      fs.copyFileSync(path.join(m.base, 'model.safetensors'), single);
      const report = await merge({ ...m, base: single, out: path.join(m.root, 'merged') });
      assert.equal(report.tensors.length, 2);
      // Only a model folder has extras: nothing else beside the single file is copied.
      assert.deepEqual(
        fs.readdirSync(path.join(m.root, 'merged')).sort(),
        ['README.md', 'model.safetensors', 'model_stock_config.yml', REPORT_FILE, PLOT_FILE].sort(),
      );
      const bytes = fs.readFileSync(single);
      await assert.rejects(
        merge({ ...m, base: single, out: single, overwrite: true }),
        codeIs('BAD_OUTPUT_PATH', 'is the input file'),
      );
      await assert.rejects(
        merge({ ...m, base: single, out: m.root, overwrite: true }),
        codeIs('BAD_OUTPUT_PATH', 'contains'),
      );
      assert.ok(fs.readFileSync(single).equals(bytes));
    });
  });

  describe('--report', () => {
    it('into an input (a weight file, a file inside a model folder, a blob behind a snapshot link) is refused before any work', async () => {
      const m = await models(root());
      const cache = path.join(m.root, 'hf');
      const snap = await addToHfCache(cache, 'org/base', m.base);
      const blob = fs.realpathSync(path.join(snap.snapshot, 'model.safetensors'));
      const inputs = [m.base, ...m.models, cache];
      const before = inputs.map(hashTree);
      const out = path.join(m.root, 'out');
      for (const [base, report, how] of [
        [m.base, path.join(m.models[0]!, 'model.safetensors'), 'lies inside the input'],
        [m.base, path.join(m.base, 'notes.json'), 'lies inside the input'],
        // Refused before any download, when only the snapshot folder is known: not an earlier report.
        [snap.snapshot, blob, 'refusing to replace it'],
      ] as const) {
        await assert.rejects(merge({ ...m, base, out, report }), codeIs('BAD_OUTPUT_PATH', report, how));
        assert.equal(fs.existsSync(out), false);
      }
      assert.deepEqual(inputs.map(hashTree), before);
      // The CLI as the issue found it: exit 0 with the input destroyed, before.
      const target = path.join(m.models[1]!, 'model.safetensors');
      const r = runCli([...mergeArgs(m.base, m.models, out), '--report', target, '--no-fsync']);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr.split('\n')[0]!, /BAD_OUTPUT_PATH/);
      assert.deepEqual(inputs.map(hashTree), before);
      assert.equal(fs.existsSync(out), false);
      assert.deepEqual(hidden(m.root), []);
    });

    it('inside OUT, or over a file that is not an earlier report, is refused; an earlier report is replaced', async () => {
      const m = await models(root());
      const out = path.join(m.root, 'out');
      await assert.rejects(
        merge({ ...m, out, report: path.join(out, 'r.json') }),
        codeIs('BAD_OUTPUT_PATH', 'inside the output folder'),
      );
      const notes = path.join(m.root, 'notes.json');
      fs.writeFileSync(notes, '{"mine": true}');
      await assert.rejects(merge({ ...m, out, report: notes }), codeIs('BAD_OUTPUT_PATH', 'not an earlier'));
      assert.equal(fs.readFileSync(notes, 'utf8'), '{"mine": true}');
      assert.equal(fs.existsSync(out), false);

      const report = path.join(m.root, 'reports', 'deep', 'r.json'); // its folder is created
      const first = await merge({ ...m, out, report });
      assert.deepEqual(JSON.parse(fs.readFileSync(report, 'utf8')), JSON.parse(JSON.stringify(first)));
      const second = await merge({ ...m, out, report, overwrite: true, theta: 'mean-angle' });
      assert.equal(JSON.parse(fs.readFileSync(report, 'utf8')).theta, second.theta);
      assert.deepEqual(hidden(path.dirname(report)), []);
    });

    it('that cannot be written fails the merge before OUT is committed', async () => {
      const m = await models(root());
      const out = path.join(m.root, 'out');
      const blocker = path.join(m.root, 'a-file');
      fs.writeFileSync(blocker, 'x');
      await assert.rejects(
        merge({ ...m, out, report: path.join(blocker, 'r.json') }),
        codeIs('IO_ERROR', blocker),
      );
      assert.equal(fs.existsSync(out), false, 'OUT not committed');
      assert.deepEqual(hidden(m.root), []);
    });

    it('a report put in place is taken back when OUT cannot be committed', async () => {
      const m = await models(root());
      const out = path.join(m.root, 'out');
      const report = path.join(m.root, 'r.json');
      let done = false;
      await assert.rejects(
        merge({
          ...m,
          out,
          report,
          onProgress: () => {
            if (!done) fs.mkdirSync(path.join(out, 'theirs'), { recursive: true });
            done = true;
          },
        }),
        codeIs('BAD_OUTPUT_PATH'),
      );
      assert.equal(fs.existsSync(report), false);
      assert.deepEqual(hidden(m.root), []);
    });
  });

  describe('inputs', () => {
    for (const [how, change] of [
      ['modified in place', (f: string) => fs.utimesSync(f, new Date(), new Date(Date.now() + 5000))],
      [
        'replaced by another file',
        (f: string) => {
          fs.copyFileSync(f, `${f}.new`);
          fs.renameSync(`${f}.new`, f);
        },
      ],
    ] as const) {
      it(`a weight file ${how} during the merge is an IO_ERROR naming it; nothing is written`, async () => {
        const m = await models(root());
        const file = path.join(m.models[1]!, 'model.safetensors');
        const out = path.join(m.root, 'out');
        let changed = false;
        await assert.rejects(
          merge({
            ...m,
            out,
            io: 'fs',
            onProgress: () => {
              if (!changed) change(file);
              changed = true;
            },
          }),
          codeIs('IO_ERROR', file, 'changed during the merge'),
        );
        assert.equal(fs.existsSync(out), false);
        assert.deepEqual(hidden(m.root), []);
      });
    }

    it('a base in the Hugging Face cache layout: its files are followed and written as real files', async () => {
      const m = await models(root());
      const snap = await addToHfCache(path.join(m.root, 'hf'), 'org/base', m.base);
      assert.ok(fs.lstatSync(path.join(snap.snapshot, 'config.json')).isSymbolicLink());
      const out = path.join(m.root, 'out');
      await merge({ ...m, base: snap.snapshot, out });
      for (const [name, text] of [
        ['config.json', CONFIG],
        ['tokenizer.json', TOKENIZER],
      ]) {
        const st = fs.lstatSync(path.join(out, name!));
        assert.ok(st.isFile() && !st.isSymbolicLink(), `${name} is a real file`);
        assert.equal(fs.readFileSync(path.join(out, name!), 'utf8'), text);
      }
      const plain = path.join(m.root, 'plain');
      await merge({ ...m, out: plain });
      assert.ok(
        fs
          .readFileSync(path.join(out, 'model.safetensors'))
          .equals(fs.readFileSync(path.join(plain, 'model.safetensors'))),
      );
    });
  });

  it('control characters in names are escaped in messages and on the terminal', async () => {
    const evil = 'model.norm.weight\x1b[2J\x1b]0;pwned\x07\n';
    const m = await models(root(), ['model.embed_tokens.weight', evil]);
    // NaN in fine-tune 1's evil tensor: the error names it.
    const file = path.join(m.models[0]!, 'model.safetensors');
    fs.rmSync(m.models[0]!, { recursive: true });
    const rng = mulberry32(3);
    await writeModel(m.models[0]!, [
      {
        name: 'model.embed_tokens.weight',
        dtype: 'F32',
        shape: [96, 128],
        values: randomTensor(96 * 128, rng),
      },
      { name: evil, dtype: 'F32', shape: [128], values: new Float64Array(128).fill(NaN) },
    ]);
    const out = path.join(m.root, 'out');
    await assert.rejects(merge({ ...m, out }), (e: unknown) => {
      assert.ok(e instanceof ModelStockError);
      assert.equal(e.code, 'NON_FINITE');
      assert.equal(e.tensor, evil, 'the field keeps the name as it is');
      assert.equal(escapeControl(e.message), e.message, 'no control character left');
      assert.ok(e.message.includes('model.norm.weight\\x1b[2J\\x1b]0;pwned\\x07\\x0a'), e.message);
      return true;
    });
    const r = runCli(mergeArgs(m.base, m.models, out));
    assert.equal(r.code, 1);
    assert.ok(!r.stderr.includes('\x1b'), JSON.stringify(r.stderr));
    assert.ok(r.stderr.split('\n')[0]!.includes(file), r.stderr);
  });

  describe('a full or read-only file system (tmpfs, root only)', () => {
    const mnt = path.join(tmp.dir, 'small');
    let mounted = false;
    before(function () {
      if (process.getuid?.() !== 0) {
        console.warn('    (tmpfs cases skipped: mounting a 20 MiB tmpfs needs root)');
        this.skip();
      }
      fs.mkdirSync(mnt, { recursive: true });
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=20m', 'tmpfs', mnt]);
      mounted = true;
    });
    after(() => {
      if (mounted) execFileSync('umount', [mnt]);
    });

    /** Fills the tmpfs to `free` bytes short of full. */
    const fill = (free: number): string => {
      const filler = path.join(mnt, 'filler');
      fs.rmSync(filler, { force: true });
      const { bavail, bsize } = fs.statfsSync(mnt);
      fs.writeFileSync(filler, Buffer.alloc(Math.max(0, bavail * bsize - free)));
      return filler;
    };

    it('ENOSPC while writing the weights: IO_ERROR naming the file, nothing left', async () => {
      const m = await models(root());
      const filler = fill(64 * 1024);
      const out = path.join(mnt, 'out');
      await assert.rejects(merge({ ...m, out }), codeIs('IO_ERROR', mnt, 'ENOSPC'));
      assert.deepEqual(fs.readdirSync(mnt), ['filler']);
      fs.rmSync(filler);
    });

    it('ENOSPC on the report: IO_ERROR naming it, OUT not committed', async () => {
      const m = await models(root());
      const filler = fill(0);
      const out = path.join(m.root, 'out');
      const report = path.join(mnt, 'r.json');
      await assert.rejects(merge({ ...m, out, report }), codeIs('IO_ERROR', report, 'ENOSPC'));
      assert.equal(fs.existsSync(out), false);
      assert.deepEqual(fs.readdirSync(mnt), ['filler']);
      assert.deepEqual(hidden(m.root), []);
      fs.rmSync(filler);
    });

    it('a read-only file system: the staging folder cannot be made, IO_ERROR naming it', async () => {
      const m = await models(root());
      execFileSync('mount', ['-o', 'remount,ro', mnt]);
      try {
        await assert.rejects(merge({ ...m, out: path.join(mnt, 'out') }), codeIs('IO_ERROR', mnt, 'EROFS'));
      } finally {
        execFileSync('mount', ['-o', 'remount,rw', mnt]);
      }
      assert.deepEqual(fs.readdirSync(mnt), []);
    });
  });
});
