import { strict as assert } from 'node:assert';
import { MAX_COLUMNS, MAX_KINDS, MAX_OUTSIDE, summarizeLayers } from '../../lib/report/layers';
import type { TensorReport } from '../../lib/types';
import { copied, llamaReport, merged, mergedRows, reportOf } from '../helpers/reports';
import { assertValidReport } from '../helpers/schema';

const deg = (cos: number): number => (Math.acos(cos) * 180) / Math.PI;
const close = (a: number | undefined, b: number, what: string): void =>
  assert.ok(a !== undefined && Math.abs(a - b) < 1e-9, `${what}: ${a} ≠ ${b}`);

describe('per-layer aggregates of a report', () => {
  it('one column per layer, one row per kind (weights, then norms), one cell per tensor', () => {
    const s = summarizeLayers(llamaReport(5));
    assert.equal(s.columns.length, 5);
    assert.deepEqual(
      s.rows.map((r) => [r.kind, r.group]),
      [
        ['self_attn.q_proj', 'layer'],
        ['self_attn.k_proj', 'layer'],
        ['mlp.up_proj', 'layer'],
        ['mlp.down_proj', 'layer'],
        ['input_layernorm', 'norm'],
        ['post_attention_layernorm', 'norm'],
      ],
    );
    assert.equal(s.cells.filter((c) => c !== undefined).length, 30);
    assert.deepEqual(
      s.outside.map((o) => [o.kind, o.group, o.vocab]),
      [
        ['model.embed_tokens', 'embedding', 'input-embedding'],
        ['model.norm', 'norm', undefined],
        ['lm_head', 'head', 'output-head'],
      ],
    );
    assert.deepEqual([s.merged, s.copied, s.dropped, s.negative], [33, 0, 0, 0]);
  });

  it('t per cell and the layer angle: mean over tensors per pair, band over pairs, norms left out', () => {
    const models = ['a', 'b', 'c'];
    const tensors: TensorReport[] = [
      merged('model.layers.0.self_attn.q_proj.weight', [0.5, 0.2, 0.8]),
      merged('model.layers.0.mlp.up_proj.weight', [0.3, 0.4, 0.6]),
      // merged over models 0 and 2 only: its single pair is the report's pair (0, 2)
      merged('model.layers.0.mlp.down_proj.weight', [0.1], [0, 2]),
      merged('model.layers.0.input_layernorm.weight', [-0.3, -0.3, -0.3]),
      copied('model.layers.1.self_attn.q_proj.weight'),
    ];
    const s = summarizeLayers(reportOf(tensors, { models }));
    const t = (row: number, col: number) => s.cells[row * s.columns.length + col];
    close(t(0, 0)?.t?.mean, tensors[0]!.t!, 'q_proj t');
    close(t(2, 0)?.t?.mean, tensors[2]!.t!, 'down_proj t');
    assert.equal(t(0, 1)?.t, undefined);
    assert.equal(t(0, 1)?.copied, 1);
    assert.equal(t(1, 1), undefined);
    close(t(0, 0)?.angle, (deg(0.5) + deg(0.2) + deg(0.8)) / 3, 'q_proj angle');

    // pairs (0,1): q 0.5, up 0.3; (0,2): q 0.2, up 0.4, down 0.1; (1,2): q 0.8, up 0.6
    const pairs = [
      (deg(0.5) + deg(0.3)) / 2,
      (deg(0.2) + deg(0.4) + deg(0.1)) / 3,
      (deg(0.8) + deg(0.6)) / 2,
    ];
    const a = s.angle[0]!;
    close(a.mean, pairs.reduce((x, y) => x + y) / 3, 'angle mean');
    close(a.min, Math.min(...pairs), 'angle min');
    close(a.max, Math.max(...pairs), 'angle max');
    assert.equal(a.count, 3);
    assert.equal(s.angle[1], undefined, 'a layer with nothing merged has no angle');
    assert.equal(s.negative, 1, 'the norm has t < 0');
    assert.equal(s.copied, 1);
  });

  it('filter-wise: cells keep row extremes; the band spans the rows’ extreme angles', () => {
    const tensors = [
      mergedRows('model.layers.0.self_attn.q_proj.weight', [{ min: 0.2, mean: 0.5, max: 0.9 }], {
        min: 0.3,
        mean: 0.6,
        max: 0.9,
      }),
      mergedRows('model.layers.0.mlp.up_proj.weight', [{ min: 0.4, mean: 0.5, max: 0.6 }], {
        min: 0.5,
        mean: 0.6,
        max: 0.7,
      }),
    ];
    const s = summarizeLayers(reportOf(tensors, { filterWise: true }));
    assert.deepEqual(s.cells[0]?.t, { min: 0.3, mean: 0.6, max: 0.9, count: 1 });
    const a = s.angle[0]!;
    close(a.mean, deg(0.5), 'mean');
    close(a.min, (deg(0.9) + deg(0.6)) / 2, 'smallest angle: the largest cosines');
    close(a.max, (deg(0.2) + deg(0.4)) / 2, 'largest angle: the smallest cosines');
    assert.deepEqual(s.tRange, { min: 0.6, max: 0.6 });
  });

  it('towers with their own layer numbers get their own columns', () => {
    const tensors = [
      merged('vision_model.encoder.layers.0.mlp.fc1.weight', [0.5]),
      merged('vision_model.encoder.layers.1.mlp.fc1.weight', [0.5]),
      merged('text_model.encoder.layers.0.mlp.fc1.weight', [0.2]),
    ];
    const s = summarizeLayers(reportOf(tensors));
    assert.deepEqual(
      s.columns.map((c) => [c.stack, c.first]),
      [
        ['vision_model.encoder', 0],
        ['vision_model.encoder', 1],
        ['text_model.encoder', 0],
      ],
    );
    assert.equal(s.rows.length, 1);
  });

  it(`more than ${MAX_COLUMNS} layers: consecutive layers share a column, stats merged`, () => {
    const tensors = Array.from({ length: 600 }, (_, l) =>
      merged(`model.layers.${l}.mlp.up_proj.weight`, [l < 3 ? 0.2 : 0.6]),
    );
    const s = summarizeLayers(reportOf(tensors));
    assert.equal(s.columns.length, 200);
    assert.deepEqual([s.columns[0]?.first, s.columns[0]?.last, s.columns[199]?.last], [0, 2, 599]);
    assert.equal(s.cells[0]?.t?.count, 3);
    close(s.cells[0]?.t?.mean, tensors[0]!.t!, 'first column: layers 0–2');
    close(s.angle[0]?.mean, deg(0.2), 'angle of layers 0–2');
    close(s.cells[1]?.t?.mean, tensors[5]!.t!, 'second column: layers 3–5');
  });

  it(`more than ${MAX_KINDS} kinds: the most frequent are kept, in checkpoint order`, () => {
    const tensors: TensorReport[] = [];
    for (let k = 0; k < MAX_KINDS + 10; k++) {
      // kinds 0–9 appear once, the others in three layers
      for (let l = 0; l < (k < 10 ? 1 : 3); l++)
        tensors.push(merged(`model.layers.${l}.extra_${k}.weight`, [0.5]));
    }
    const s = summarizeLayers(reportOf(tensors));
    assert.equal(s.rows.length, MAX_KINDS);
    assert.equal(s.hiddenKinds, 10);
    assert.deepEqual(
      s.rows.map((r) => r.kind),
      Array.from({ length: MAX_KINDS }, (_, k) => `extra_${k + 10}`),
    );
  });

  it(`outside the layers: embeddings, others, norms, heads; at most ${MAX_OUTSIDE}`, () => {
    const tensors = [
      merged('lm_head.weight', [0.5]),
      merged('model.norm.weight', [0.5]),
      ...Array.from({ length: 20 }, (_, i) => merged(`misc_${i}`, [0.5])),
      merged('model.embed_tokens.weight', [0.5]),
    ];
    const s = summarizeLayers(reportOf(tensors));
    assert.equal(s.outside.length, MAX_OUTSIDE);
    assert.equal(s.hiddenOutside, 22 + 1 - MAX_OUTSIDE);
    assert.equal(s.outside[0]?.kind, 'model.embed_tokens');
    assert.equal(s.outside[1]?.kind, 'misc_0');
    assert.equal(s.columns.length, 0);
  });

  it('the reports these tests draw are real-shaped (docs/report.schema.json)', () => {
    assertValidReport(llamaReport(2), 'llamaReport');
    assertValidReport(
      reportOf(
        [
          mergedRows('model.layers.0.mlp.up_proj.weight', [{ min: 0.1, mean: 0.2, max: 0.3 }], {
            min: 0.1,
            mean: 0.2,
            max: 0.3,
          }),
          copied('lm_head.weight'),
        ],
        { filterWise: true },
      ),
      'filter-wise',
    );
  });

  it('dropped tensors are counted, not drawn', () => {
    const s = summarizeLayers(
      reportOf([
        { name: 'model.layers.0.adapter.weight', action: 'drop', dtype: 'BF16', shape: [2] },
        merged('model.layers.0.mlp.up_proj.weight', [0.5]),
      ]),
    );
    assert.equal(s.dropped, 1);
    assert.equal(s.rows.length, 1);
  });
});
