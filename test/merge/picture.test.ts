import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { inspectModelStock } from '../../lib/inspect';
import { mergeModelStock } from '../../lib/merge';
import { REPORT_FILE } from '../../lib/output/atomic';
import { parseReport } from '../../lib/report/parse';
import { PLOT_FILE, renderReportSvg, reportPicture } from '../../lib/report/svg';
import type { MergeReport } from '../../lib/types';
import { writeModel, type TensorSpec } from '../helpers/models';
import { correlatedModels, mulberry32, randomTensor } from '../helpers/random';
import { reportOf } from '../helpers/reports';
import { useTmpDir } from '../helpers/tmp';
import { parseXml } from '../helpers/xml';

/** The picture every merge writes beside its report, and the model card that shows it. */
describe('merge picture', () => {
  const tmp = useTmpDir();
  let base: string;
  let models: string[];

  before(async () => {
    const rng = mulberry32(12);
    const shapes: [string, number[]][] = [
      ['model.embed_tokens.weight', [40, 16]],
      ['model.layers.0.self_attn.q_proj.weight', [16, 16]],
      ['model.layers.0.input_layernorm.weight', [16]],
      ['model.layers.1.self_attn.q_proj.weight', [16, 16]],
      ['model.layers.1.input_layernorm.weight', [16]],
      ['model.norm.weight', [16]],
      ['lm_head.weight', [40, 16]],
    ];
    const perModel: TensorSpec[][] = [[], [], [], []];
    for (const [name, shape] of shapes) {
      const w0 = randomTensor(
        shape.reduce((a, b) => a * b, 1),
        rng,
        0.5,
      );
      [w0, ...correlatedModels(w0, 3, 0.4, rng)].forEach((values, i) =>
        perModel[i]!.push({ name, dtype: 'F32', shape, values }),
      );
    }
    const dirs = await Promise.all(perModel.map((t, i) => writeModel(path.join(tmp.dir, `m${i}`), t)));
    [base, ...models] = dirs as [string, ...string[]];
  });

  for (const filterWise of [false, true]) {
    it(`is written into OUT, drawn from the report as written, and shown in the card (${filterWise ? 'filter' : 'layer'}-wise)`, async () => {
      const out = path.join(tmp.dir, `out-${filterWise}`);
      const report = await mergeModelStock({ base, models, out, filterWise, backend: 'js', fsync: false });
      const svg = fs.readFileSync(path.join(out, PLOT_FILE), 'utf8');
      const fromFile = parseReport(fs.readFileSync(path.join(out, REPORT_FILE), 'utf8'), REPORT_FILE);
      assert.equal(svg, renderReportSvg(fromFile), 'the same bytes as a redraw from model_stock_report.json');
      assert.equal(svg, renderReportSvg(report));
      const cells = svg.match(/class="cell"/g) ?? [];
      assert.equal(cells.length, 4, '2 layers × (q_proj, input_layernorm)');
      parseXml(svg);
      const card = fs.readFileSync(path.join(out, 'README.md'), 'utf8');
      assert.match(card, /!\[[^\]]+\]\(model_stock_report\.svg\)/);
    });
  }

  it('an inspection draws the same picture as the merge it previews', async () => {
    const out = path.join(tmp.dir, 'previewed');
    await mergeModelStock({ base, models, out, backend: 'js', fsync: false });
    const preview = await inspectModelStock({ base, models, backend: 'js' });
    assert.equal(renderReportSvg(preview), fs.readFileSync(path.join(out, PLOT_FILE), 'utf8'));
    assert.equal(
      renderReportSvg(parseReport(JSON.stringify(preview), 'inspect.json')),
      renderReportSvg(preview),
    );
  });

  it("an earlier merge's picture in the base folder is not copied over the new one", async () => {
    const first = path.join(tmp.dir, 'first');
    await mergeModelStock({ base, models: models.slice(0, 2), out: first, backend: 'js', fsync: false });
    const old = fs.readFileSync(path.join(first, PLOT_FILE), 'utf8');
    const second = path.join(tmp.dir, 'second');
    await mergeModelStock({ base: first, models, out: second, backend: 'js', fsync: false });
    const svg = fs.readFileSync(path.join(second, PLOT_FILE), 'utf8');
    assert.notEqual(svg, old);
    assert.match(svg, /fine-tuned \(N = 3\)/);
  });

  it('a fault in drawing costs the picture, with a warning, never the merge', async () => {
    const broken = {
      ...reportOf([]),
      get tensors(): never {
        throw new Error('boom');
      },
    } as unknown as MergeReport;
    const warnings: string[] = [];
    assert.equal(await reportPicture(broken, (w) => warnings.push(w)), undefined);
    assert.deepEqual(warnings, [`${PLOT_FILE} not written: boom`]);
  });
});
