import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { mergeModelStock } from '../../lib/merge';
import { REPORT_FILE } from '../../lib/output/atomic';
import { PLOT_FILE } from '../../lib/report/svg';
import { runCli } from '../helpers/cli';
import { writeModel, type TensorSpec } from '../helpers/models';
import { correlatedModels, mulberry32, randomTensor } from '../helpers/random';
import { useTmpDir } from '../helpers/tmp';

describe('CLI plot', () => {
  const tmp = useTmpDir();
  let merged: string;
  let report: string;

  before(async () => {
    const rng = mulberry32(5);
    const perModel: TensorSpec[][] = [[], [], []];
    for (const name of ['model.layers.0.mlp.up_proj.weight', 'model.layers.1.mlp.up_proj.weight']) {
      const w0 = randomTensor(64, rng, 0.5);
      [w0, ...correlatedModels(w0, 2, 0.5, rng)].forEach((values, i) =>
        perModel[i]!.push({ name, dtype: 'F32', shape: [8, 8], values }),
      );
    }
    const [base, ...models] = await Promise.all(
      perModel.map((t, i) => writeModel(path.join(tmp.dir, `m${i}`), t)),
    );
    merged = path.join(tmp.dir, 'merged');
    await mergeModelStock({ base: base!, models, out: merged, backend: 'js', fsync: false });
    report = path.join(merged, REPORT_FILE);
  });

  const firstLine = (s: string): string => s.split('\n')[0] ?? '';
  const leftovers = (dir: string): string[] => fs.readdirSync(dir).filter((f) => f.startsWith('.'));

  it('redraws the picture of a merge from its report, byte for byte', () => {
    const out = path.join(tmp.dir, 'redrawn.svg');
    const r = runCli(['plot', report, '-o', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.equal(fs.readFileSync(out, 'utf8'), fs.readFileSync(path.join(merged, PLOT_FILE), 'utf8'));
  });

  it('replaces an existing file only with --overwrite, and never the report itself', () => {
    const out = path.join(tmp.dir, 'existing.svg');
    fs.writeFileSync(out, 'keep me');
    let r = runCli(['plot', report, '-o', out]);
    assert.equal(r.code, 1);
    assert.match(firstLine(r.stderr), /\[BAD_OUTPUT_PATH\].*existing\.svg: already exists/);
    assert.equal(fs.readFileSync(out, 'utf8'), 'keep me');
    r = runCli(['plot', report, '-o', out, '--overwrite']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(fs.readFileSync(out, 'utf8'), /^<svg /);

    const before = fs.readFileSync(report, 'utf8');
    r = runCli(['plot', report, '-o', report, '--overwrite']);
    assert.equal(r.code, 1);
    assert.match(firstLine(r.stderr), /\[BAD_OUTPUT_PATH\].*is the report being drawn/);
    assert.equal(fs.readFileSync(report, 'utf8'), before);
    assert.deepEqual([...leftovers(tmp.dir), ...leftovers(merged)], []);
  });

  it('a report that is missing, not JSON or not a report: exit 1, the file and the fault on the first line', () => {
    const out = path.join(tmp.dir, 'never.svg');
    const cases: [string, string | undefined, RegExp][] = [
      ['missing.json', undefined, /\[IO_ERROR\]: .*missing\.json: ENOENT/],
      ['garbage.json', '{"method": ', /\[INVALID_REPORT\]: .*garbage\.json: not JSON/],
      [
        'other.json',
        '{"method": "ties"}',
        /\[INVALID_REPORT\]: .*other\.json: method must be "model_stock", got "ties"/,
      ],
    ];
    const bad = JSON.parse(fs.readFileSync(report, 'utf8'));
    bad.tensors[1].cosines = ['high'];
    cases.push([
      'bad-tensor.json',
      JSON.stringify(bad),
      /\[INVALID_REPORT\]: .*bad-tensor\.json: tensor "model\.layers\.1\.mlp\.up_proj\.weight": tensors\[1\]\.cosines must be/,
    ]);
    for (const [name, text, message] of cases) {
      const file = path.join(tmp.dir, name);
      if (text !== undefined) fs.writeFileSync(file, text);
      const r = runCli(['plot', file, '-o', out]);
      assert.equal(r.code, 1, name);
      assert.match(firstLine(r.stderr), message);
    }
    assert.ok(!fs.existsSync(out));
    assert.deepEqual(leftovers(tmp.dir), []);
  });

  it('usage errors exit 2', () => {
    assert.equal(runCli(['plot', report]).code, 2, 'no -o');
    assert.equal(runCli(['plot', '-o', path.join(tmp.dir, 'x.svg')]).code, 2, 'no report');
  });
});
