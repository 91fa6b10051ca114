import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fit, renderReportSvg } from '../../lib/report/svg';
import type { MergeReport, TensorReport } from '../../lib/types';
import { copied, llamaReport, merged, mergedRows, reportOf } from '../helpers/reports';
import type { DrawResult } from '../helpers/drawChild';
import { useTmpDir } from '../helpers/tmp';
import { allElements, parseXml, type XmlNode } from '../helpers/xml';

const byClass = (root: XmlNode, cls: string): XmlNode[] =>
  allElements(root).filter((e) => e.attributes.class === cls);
const titleOf = (e: XmlNode): string | undefined => e.children.find((c) => c.name === 'title')?.text;
const texts = (root: XmlNode): string[] =>
  allElements(root)
    .filter((e) => e.name === 'text')
    .map((e) => e.text);

/** The pictures every test below draws: each must be well-formed XML. */
const REPORTS: Record<string, () => MergeReport> = {
  'layer-wise LLaMA': () => llamaReport(8),
  'filter-wise, N = 3': () =>
    reportOf(
      [
        mergedRows(
          'model.layers.0.mlp.up_proj.weight',
          [
            { min: 0.1, mean: 0.4, max: 0.7 },
            { min: 0.2, mean: 0.5, max: 0.8 },
            { min: 0.3, mean: 0.6, max: 0.9 },
          ],
          { min: 0.2, mean: 0.6, max: 0.9 },
        ),
        merged('model.layers.0.input_layernorm.weight', [0.5, 0.5, 0.5]),
        mergedRows('lm_head.weight', [{ min: 0.1, mean: 0.4, max: 0.7 }], { min: 0.2, mean: 0.55, max: 0.8 }),
      ].map((t) => ({ ...t, n: 3, models: [0, 1, 2] })),
      { filterWise: true, models: ['a', 'b', 'c'] },
    ),
  'two towers': () =>
    reportOf([
      merged('vision_model.encoder.layers.0.self_attn.q_proj.weight', [0.3]),
      merged('vision_model.encoder.layers.1.self_attn.q_proj.weight', [0.4]),
      merged('text_model.encoder.layers.0.self_attn.q_proj.weight', [0.7]),
    ]),
  'nothing merged': () => reportOf([copied('model.layers.0.mlp.up_proj.weight'), copied('lm_head.weight')]),
  'no layers at all': () => reportOf([merged('weight_a', [0.5]), merged('weight_b', [0.2])]),
  'no tensors': () => reportOf([]),
  'negative t': () =>
    reportOf([
      merged('model.layers.0.mlp.up_proj.weight', [-0.4]),
      merged('model.layers.1.mlp.up_proj.weight', [0.4]),
    ]),
  '600 layers': () =>
    reportOf(
      Array.from({ length: 600 }, (_, l) => merged(`model.layers.${l}.mlp.up_proj.weight`, [(l % 10) / 10])),
    ),
};

describe('report picture (SVG)', () => {
  const tmp = useTmpDir();
  for (const [what, make] of Object.entries(REPORTS)) {
    it(`is well-formed XML, 800 px wide, the same bytes each time: ${what}`, () => {
      const report = make();
      const svg = renderReportSvg(report);
      const root = parseXml(svg);
      assert.equal(root.name, 'svg');
      assert.equal(root.attributes.width, '800');
      assert.match(root.attributes.viewBox ?? '', /^0 0 800 \d+$/);
      assert.equal(renderReportSvg(make()), svg, 'a second drawing of an equal report');
      assert.equal(renderReportSvg(JSON.parse(JSON.stringify(report))), svg, 'drawn again from its JSON');
      assert.doesNotMatch(svg, /NaN|Infinity|undefined/);
    });
  }

  it('one cell per tensor in the layers, one angle point per layer, one box per tensor outside', () => {
    const root = parseXml(renderReportSvg(llamaReport(8)));
    const cells = byClass(root, 'cell');
    assert.equal(cells.length, 8 * 6);
    assert.equal(byClass(root, 'angle').length, 8);
    assert.equal(byClass(root, 'outside').length, 3);
    assert.match(titleOf(cells[0]!) ?? '', /^layer 0, self_attn\.q_proj: t = 0\.\d{3}$/);
    // cells of one row share y, of one column share x
    const xs = new Set(cells.map((c) => c.attributes.x));
    const ys = new Set(cells.map((c) => c.attributes.y));
    assert.deepEqual([xs.size, ys.size], [8, 6]);
  });

  it('per-kind angle lines: one path per family (attention, MLP, other), each named in the legend', () => {
    const llama = llamaReport(4);
    const routers = [0, 1, 2, 3].map((l) => merged(`model.layers.${l}.router.weight`, [0.3]));
    const root = parseXml(renderReportSvg({ ...llama, tensors: [...llama.tensors, ...routers] }));
    const families = allElements(root).filter(
      (e) => e.name === 'path' && e.attributes.fill === 'none' && e.attributes['stroke-width'] === '1',
    );
    // q,k → attention; up,down → MLP; router → other (norms draw no kind line)
    assert.equal(families.length, 3);
    assert.equal(new Set(families.map((f) => f.attributes.stroke)).size, 3);
    const subpaths = families.map((f) => (f.attributes.d ?? '').split('M').length - 1);
    assert.deepEqual(subpaths, [2, 2, 1]);
    const legend = texts(root);
    for (const label of ['attention kinds', 'MLP kinds', 'other kinds'])
      assert.ok(legend.includes(label), label);
  });

  it('colours follow t: lower t, darker viridis; copied cells grey', () => {
    const rows = (t: number) => ({ min: t, mean: t, max: t });
    const report = reportOf(
      [
        mergedRows('model.layers.0.mlp.up_proj.weight', [rows(0.1)], rows(0.2)),
        mergedRows('model.layers.1.mlp.up_proj.weight', [rows(0.8)], rows(0.9)),
        copied('model.layers.2.mlp.up_proj.weight'),
      ],
      { filterWise: true },
    );
    const cells = byClass(parseXml(renderReportSvg(report)), 'cell');
    const fills = cells.map((c) => c.attributes.fill);
    assert.equal(fills[0], '#440154', 'the scale starts at the lowest t');
    assert.equal(fills[1], '#fde725', 'and ends at the highest');
    assert.equal(fills[2], '#b4b4b4');
    assert.match(titleOf(cells[2]!) ?? '', /copied from the base/);
  });

  it('escapes every name and path, and replaces characters XML cannot hold', () => {
    const evil = 'x<script>alert("&")</script>\'';
    const tensors: TensorReport[] = [
      merged(`model.layers.0.${evil}.weight`, [0.5]),
      merged(`${evil}.weight`, [0.5]),
      merged('model.layers.1.ctl\u0001\ud800.weight', [0.5]),
    ];
    const svg = renderReportSvg(reportOf(tensors, { base: `/m/<base>&"`, models: [`ft&<1>`, `ft'2"`] }));
    const root = parseXml(svg);
    assert.doesNotMatch(svg, /<script/);
    const all = texts(root).join('\n') + allElements(root).map(titleOf).join('\n');
    assert.ok(all.includes('/m/<base>&"'), 'base path, decoded back');
    assert.ok(all.includes(`ft&<1> · ft'2"`), 'model paths');
    assert.ok(all.includes(`layer 0, ${evil}: t =`), 'tensor kind in a cell title');
    assert.ok(all.includes(`ctl\ufffd\ufffd`), 'a control character and a lone surrogate became U+FFFD');
  });

  it('long names are shortened in the middle to fit, keeping their tail', () => {
    assert.equal(fit('short', 100, 10), 'short');
    const s = fit('/very/long/path/to/some/models/folder/finetune-math-v2', 120, 10);
    assert.ok([...s].length <= 20, s);
    assert.ok(s.endsWith('math-v2') && s.includes('…'), s);
  });

  it('a report of a million tensors folds into a bounded picture (its CPU time: npm run bench:draw)', function () {
    this.timeout(120_000);
    // In a fresh process, as the bench runs it: the suite's own heap stays out of the fold.
    const file = path.join(tmp.dir, 'million.svg');
    const child = spawnSync(process.execPath, [path.join(__dirname, '..', 'helpers', 'drawChild.js'), file], {
      encoding: 'utf8',
    });
    assert.equal(child.status, 0, child.stderr);
    const r = JSON.parse(child.stdout) as DrawResult;
    assert.equal(r.columns, 250);
    assert.equal(r.rows, 40);
    assert.ok(r.hiddenKinds > 0 && r.hiddenOutside > 0);
    const svg = fs.readFileSync(file, 'utf8');
    assert.ok(svg.length < 2_000_000, `${svg.length} bytes`);
    parseXml(svg);
    assert.ok(Number.isFinite(r.cpuMs) && r.cpuMs > 0, 'the child measured its fold');
  });
});
