import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { mergeModelStock } from '../../lib/merge';
import { REPORT_FILE } from '../../lib/output/atomic';
import { groupedWarningLines } from '../../lib/report/warnings';
import { backendsUnderTest } from '../helpers/backends';
import { writeModel, type TensorSpec } from '../helpers/models';
import { correlatedModels, mulberry32, randomTensor } from '../helpers/random';
import { useTmpDir } from '../helpers/tmp';

/** What a report says about the merge it describes, and settings that belong to one merge. */
describe('merge report and per-merge settings', () => {
  const tmp = useTmpDir();
  let base: string;
  let models: string[];
  let inputBytes: number;

  before(async () => {
    const rng = mulberry32(77);
    const shapes: [string, number[]][] = [
      ['model.embed_tokens.weight', [300, 64]],
      ['model.empty', [0, 16]],
      ['model.layers.0.mlp.up_proj.weight', [64, 96]],
      ['model.norm.weight', [64]],
    ];
    const perModel: TensorSpec[][] = [[], [], []];
    for (const [name, shape] of shapes) {
      const count = shape.reduce((a, b) => a * b, 1);
      const w0 = randomTensor(count, rng, 0.5);
      [w0, ...correlatedModels(w0, 2, 0.4, rng)].forEach((values, i) =>
        perModel[i]!.push({ name, dtype: 'BF16', shape, values }),
      );
    }
    const dirs = await Promise.all(perModel.map((t, i) => writeModel(path.join(tmp.dir, `m${i}`), t)));
    [base, ...models] = dirs as [string, ...string[]];
    inputBytes = 3 * shapes.reduce((s, [, shape]) => s + 2 * shape.reduce((a, b) => a * b, 1), 0);
  });

  for (const backend of backendsUnderTest()) {
    it(`bytesRead counts each input byte once, windowed or not (${backend})`, async () => {
      for (const memory of [undefined, 16 * 1024]) {
        const report = await mergeModelStock({
          base,
          models,
          out: path.join(tmp.dir, `bytes-${backend}-${memory ?? 'whole'}`),
          backend,
          memory,
          window: memory === undefined ? undefined : 4096,
          fsync: false,
        });
        assert.equal(report.bytesRead, inputBytes, `memory ${memory ?? 'default'}`);
      }
    });

    it(`a zero-size float tensor is copied, reported without ±Infinity, filter-wise too (${backend})`, async () => {
      const out = path.join(tmp.dir, `empty-${backend}`);
      const report = await mergeModelStock({ base, models, out, backend, filterWise: true, fsync: false });
      const empty = report.tensors.find((t) => t.name === 'model.empty')!;
      assert.equal(empty.action, 'copy');
      assert.match(empty.reason!, /zero-size/);
      const json = fs.readFileSync(path.join(out, REPORT_FILE), 'utf8');
      assert.ok(!json.includes('null'), 'no non-finite number became null in the JSON report');
      assert.ok(!report.warnings.some((w) => w.includes('model.empty')), report.warnings.join('\n'));
    });
  }

  it('t < 0: a warning per tensor, which the terminal says as one line with a count; every tensor named', async () => {
    const rng = mulberry32(5);
    const names = Array.from({ length: 6 }, (_, k) => `model.layers.${k}.mlp.up_proj.weight`);
    const perModel: TensorSpec[][] = [[], [], []];
    for (const [k, name] of names.entries()) {
      const w0 = randomTensor(256, rng, 0.5);
      const d1 = randomTensor(256, rng, 0.1);
      // Even tensors: task vectors pointing apart (cos ≈ −0.7, t < 0); odd ones: the same direction.
      const d2 = randomTensor(256, rng, 0.07).map((e, x) => (k % 2 === 0 ? -d1[x]! : d1[x]!) + e);
      [w0, w0.map((v, x) => v + d1[x]!), w0.map((v, x) => v + d2[x]!)].forEach((values, i) =>
        perModel[i]!.push({ name, dtype: 'F32', shape: [16, 16], values }),
      );
    }
    const [b, ...ms] = await Promise.all(
      perModel.map((t, i) => writeModel(path.join(tmp.dir, `neg${i}`), t)),
    );
    const report = await mergeModelStock({
      base: b!,
      models: ms,
      out: path.join(tmp.dir, 'neg-out'),
      fsync: false,
    });
    const negative = report.tensors.filter((t) => typeof t.t === 'number' && t.t < 0).map((t) => t.name);
    assert.deepEqual(
      negative,
      names.filter((_, k) => k % 2 === 0),
    );
    const said = report.warnings.filter((w) => w.includes('negative cosine'));
    assert.deepEqual(
      said.map((w) => w.split(': ')[0]),
      negative,
    );
    const lines = groupedWarningLines(report.warnings).filter((w) => w.includes('negative cosine'));
    assert.deepEqual(lines, [
      `negative cosine, t < 0 kept (the merge moves away from the fine-tunes' average) (3 tensors: ${negative.join(', ')})`,
    ]);
  });

  it('concurrent merges with different thread counts each run with, and report, their own', async function () {
    if (!backendsUnderTest().includes('native')) this.skip();
    const [one, two] = await Promise.all(
      [1, 2].map((threads) =>
        mergeModelStock({
          base,
          models,
          out: path.join(tmp.dir, `threads-${threads}`),
          backend: 'native',
          threads,
          fsync: false,
        }),
      ),
    );
    assert.equal(one!.backend.threads, 1);
    assert.equal(two!.backend.threads, 2);
    const weights = (dir: string) => fs.readFileSync(path.join(dir, 'model.safetensors'));
    assert.ok(weights(path.join(tmp.dir, 'threads-1')).equals(weights(path.join(tmp.dir, 'threads-2'))));
  });

  it('every merge that falls back to pure TypeScript hears why through its own onWarning', async () => {
    const saved = process.env.MODEL_STOCK_ADDON;
    process.env.MODEL_STOCK_ADDON = path.join(tmp.dir, 'no-such-addon.node');
    try {
      for (const k of [1, 2]) {
        const warnings: string[] = [];
        const report = await mergeModelStock({
          base,
          models,
          out: path.join(tmp.dir, `fallback-${k}`),
          fsync: false,
          onWarning: (m) => warnings.push(m),
        });
        assert.equal(report.backend.name, 'js');
        assert.equal(warnings.filter((w) => w.includes('no-such-addon.node')).length, 1, `merge ${k}`);
      }
    } finally {
      if (saved === undefined) delete process.env.MODEL_STOCK_ADDON;
      else process.env.MODEL_STOCK_ADDON = saved;
    }
  });
});
