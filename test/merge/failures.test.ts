import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelStockError } from '../../lib/errors';
import { mergeModelStock } from '../../lib/merge';
import type { MergeOptions } from '../../lib/types';
import { hashTree, writeModel } from '../helpers/models';
import { mulberry32, randomTensor } from '../helpers/random';
import { useTmpDir } from '../helpers/tmp';

/** Three tiny models; `tweak(i)` may change fine-tune i's tensors. */
async function models(
  root: string,
  tweak: (i: number, name: string, v: Float64Array) => Float64Array | null = (_i, _n, v) => v,
) {
  const rng = mulberry32(5);
  const a = randomTensor(24, rng);
  const b = randomTensor(6, rng);
  const dirs: string[] = [];
  for (let i = 0; i < 3; i++) {
    const tensors = [
      {
        name: 'w',
        values: i === 0 ? a : a.map((x) => x + 0.01 * (i + 1) * Math.sin(x * 7 + i)),
        shape: [4, 6],
      },
      { name: 'bias', values: i === 0 ? b : b.map((x) => x - 0.02 * i), shape: [6] },
    ]
      .map((t) => ({ ...t, values: i === 0 ? t.values : tweak(i, t.name, t.values) }))
      .filter((t) => t.values !== null)
      .map((t) => ({
        name: t.name,
        dtype: 'F32' as const,
        shape: t.shape,
        values: t.values as Float64Array,
      }));
    dirs.push(
      await writeModel(path.join(root, i === 0 ? 'base' : `ft${i}`), tensors, {
        files: { 'config.json': '{}' },
      }),
    );
  }
  return { base: dirs[0] as string, models: dirs.slice(1), root };
}

async function expectFailure(opts: MergeOptions, code: string, mentions: string[]): Promise<void> {
  const inputs = [opts.base, ...opts.models];
  const before = inputs.map(hashTree);
  const outExisted = fs.existsSync(opts.out);
  await assert.rejects(mergeModelStock({ ...opts, fsync: false }), (e: unknown) => {
    assert.ok(e instanceof ModelStockError, String(e));
    assert.equal(e.code, code, e.message);
    for (const m of mentions) assert.ok(e.message.includes(m), `"${e.message}" names ${m}`);
    return true;
  });
  assert.equal(fs.existsSync(opts.out), outExisted, 'OUT not created');
  assert.deepEqual(inputs.map(hashTree), before, 'inputs untouched');
  const parent = path.dirname(opts.out);
  if (fs.existsSync(parent)) {
    assert.deepEqual(
      fs.readdirSync(parent).filter((f) => f.includes('.partial-')),
      [],
      'no staging folder left',
    );
  }
}

describe('merge failures leave nothing behind', () => {
  const tmp = useTmpDir();
  let n = 0;
  const root = () => path.join(tmp.dir, `r${n++}`);

  it('NaN in a fine-tune names the model and tensor', async () => {
    const m = await models(root(), (i, name, v) =>
      i === 2 && name === 'w' ? v.map((x, k) => (k === 5 ? NaN : x)) : v,
    );
    await expectFailure({ ...m, out: path.join(m.root, 'out') }, 'NON_FINITE', [
      '"w"',
      'model 2',
      'element 5',
    ]);
  });

  it('Inf in a fine-tune is rejected too (windowed path)', async () => {
    const m = await models(root(), (i, name, v) =>
      i === 1 && name === 'w' ? v.map((x, k) => (k === 20 ? -Infinity : x)) : v,
    );
    await expectFailure({ ...m, out: path.join(m.root, 'out'), memory: 64 }, 'NON_FINITE', [
      '"w"',
      'model 1',
      'element 20',
    ]);
  });

  it('a shape mismatch names tensor, model and shapes', async () => {
    const m = await models(root());
    fs.rmSync(path.join(m.root, 'ft2'), { recursive: true });
    await writeModel(path.join(m.root, 'ft2'), [
      { name: 'w', dtype: 'F32', shape: [6, 4], values: new Float64Array(24) },
      { name: 'bias', dtype: 'F32', shape: [6], values: new Float64Array(6) },
    ]);
    await expectFailure({ ...m, out: path.join(m.root, 'out') }, 'SHAPE_MISMATCH', [
      '"w"',
      '[6, 4]',
      '[4, 6]',
    ]);
  });

  it('an F8 tensor is an error, not merged silently', async () => {
    const m = await models(root());
    fs.rmSync(m.base, { recursive: true });
    await writeModel(m.base, [
      { name: 'w', dtype: 'F8_E4M3', shape: [4, 6], values: new Uint8Array(24) },
      { name: 'bias', dtype: 'F32', shape: [6], values: new Float64Array(6) },
    ]);
    await expectFailure({ ...m, out: path.join(m.root, 'out') }, 'UNSUPPORTED_DTYPE', ['"w"', 'F8_E4M3']);
  });

  it('fewer than two fine-tunes', async () => {
    const m = await models(root());
    await expectFailure(
      { ...m, models: m.models.slice(0, 1), out: path.join(m.root, 'out') },
      'TOO_FEW_MODELS',
      [],
    );
  });

  it('a missing model folder is named', async () => {
    const m = await models(root());
    const missing = path.join(m.root, 'nope');
    await assert.rejects(
      mergeModelStock({
        base: m.base,
        models: [m.models[0] as string, missing],
        out: path.join(m.root, 'out'),
      }),
      (e: Error) => e.message.includes(missing),
    );
    assert.equal(fs.existsSync(path.join(m.root, 'out')), false);
  });

  describe('refused output paths', () => {
    it('OUT that exists, without --overwrite', async () => {
      const m = await models(root());
      const out = path.join(m.root, 'out');
      fs.mkdirSync(out);
      fs.writeFileSync(path.join(out, 'keep.txt'), 'x');
      await expectFailure({ ...m, out }, 'BAD_OUTPUT_PATH', ['already exists']);
      assert.equal(fs.readFileSync(path.join(out, 'keep.txt'), 'utf8'), 'x');
    });
    it('OUT that is an input model folder', async () => {
      const m = await models(root());
      await expectFailure({ ...m, out: m.models[1] as string, overwrite: true }, 'BAD_OUTPUT_PATH', [
        'is the input',
      ]);
    });
    it('OUT inside an input model folder', async () => {
      const m = await models(root());
      await expectFailure({ ...m, out: path.join(m.base, 'merged') }, 'BAD_OUTPUT_PATH', ['lies inside']);
    });
    it('OUT that contains an input model folder', async () => {
      const m = await models(root());
      await expectFailure({ ...m, out: m.root, overwrite: true }, 'BAD_OUTPUT_PATH', ['contains']);
    });
    it('--overwrite refuses a folder model-stock did not write', async () => {
      const m = await models(root());
      const out = path.join(m.root, 'out');
      fs.mkdirSync(out);
      fs.writeFileSync(path.join(out, 'thesis.tex'), 'precious');
      await expectFailure({ ...m, out, overwrite: true }, 'BAD_OUTPUT_PATH', ['not written by model-stock']);
    });
    it('--overwrite replaces an earlier merge atomically', async () => {
      const m = await models(root());
      const out = path.join(m.root, 'out');
      await mergeModelStock({ ...m, out, fsync: false, backend: 'js' });
      fs.writeFileSync(path.join(out, 'stale.txt'), 'old');
      const r = await mergeModelStock({ ...m, out, overwrite: true, backend: 'js' });
      assert.equal(r.tensors.length, 2);
      assert.equal(fs.existsSync(path.join(out, 'stale.txt')), false);
      assert.deepEqual(
        fs.readdirSync(m.root).filter((f) => f.startsWith('.')),
        [],
      );
    });
  });

  it('a failing merge over an existing OUT (with --overwrite) keeps the old OUT', async () => {
    const m = await models(root());
    const out = path.join(m.root, 'out');
    await mergeModelStock({ ...m, out, fsync: false, backend: 'js' });
    const before = hashTree(out);
    const bad = await models(path.join(m.root, 'bad'), (i, name, v) =>
      i === 1 && name === 'bias' ? v.map(() => NaN) : v,
    );
    await expectFailure({ ...bad, out, overwrite: true }, 'NON_FINITE', ['"bias"']);
    assert.deepEqual(hashTree(out), before);
  });
});
