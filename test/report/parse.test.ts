import { strict as assert } from 'node:assert';
import { isModelStockError } from '../../lib/errors';
import { parseReport } from '../../lib/report/parse';
import { llamaReport, mergedRows, reportOf } from '../helpers/reports';

const FILE = 'merged/model_stock_report.json';

function rejects(text: string, message: RegExp, tensor?: string): void {
  assert.throws(
    () => parseReport(text, FILE),
    (e: unknown) => {
      assert.ok(isModelStockError(e), String(e));
      assert.equal(e.code, 'INVALID_REPORT');
      assert.equal(e.file, FILE);
      assert.equal(e.tensor, tensor);
      assert.match(e.message, message);
      return true;
    },
  );
}

/** A real-shaped report with one field changed (the edits break its types on purpose). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function edited(edit: (r: Record<string, any>) => void): string {
  const r = JSON.parse(JSON.stringify(llamaReport(2)));
  edit(r);
  return JSON.stringify(r);
}

describe('reading a merge report back', () => {
  it('accepts what a merge writes, layer- and filter-wise', () => {
    const r = llamaReport(3);
    assert.deepEqual(parseReport(JSON.stringify(r, null, 2), FILE), JSON.parse(JSON.stringify(r)));
    const rows = reportOf(
      [
        mergedRows('model.layers.0.mlp.up_proj.weight', [{ min: -0.2, mean: 0.3, max: 1 }], {
          min: -0.1,
          mean: 0.4,
          max: 0.9,
        }),
      ],
      { filterWise: true },
    );
    parseReport(JSON.stringify(rows), FILE);
  });

  it('rejects what is not a report, naming the file', () => {
    rejects('', /not JSON/);
    rejects('{"method": "model_stock",', /not JSON/);
    rejects('[]', /expected a JSON object/);
    rejects('null', /expected a JSON object/);
    rejects(
      edited((r) => (r.method = 'ties')),
      /method must be "model_stock", got "ties"/,
    );
    rejects(
      edited((r) => delete r.base),
      /base must be a string, got nothing/,
    );
    rejects(
      edited((r) => (r.models = ['only-one'])),
      /models must be a list of at least 2 strings/,
    );
    rejects(
      edited((r) => (r.filterWise = 'no')),
      /filterWise must be true or false/,
    );
    rejects(
      edited((r) => (r.theta = 'median')),
      /theta must be "mean-cos" or "mean-angle"/,
    );
    rejects(
      edited((r) => (r.tensors = {})),
      /tensors must be a list/,
    );
  });

  it('rejects a bad tensor entry, naming the tensor and the field', () => {
    const q = 'model.layers.0.self_attn.q_proj.weight';
    rejects(
      edited((r) => (r.tensors[1] = 7)),
      /tensors\[1\] must be an object, got 7/,
    );
    rejects(
      edited((r) => (r.tensors[1].name = '')),
      /tensors\[1\]\.name must be a non-empty string/,
    );
    rejects(
      edited((r) => (r.tensors[1].action = 'merged')),
      /tensors\[1\]\.action must be/,
      q,
    );
    rejects(
      edited((r) => (r.tensors[1].t = '0.5')),
      /tensors\[1\]\.t must be a finite number/,
      q,
    );
    rejects(
      edited((r) => (r.tensors[1].t = null)),
      /tensors\[1\]\.t must be a finite number .*, got null/,
      q,
    );
    rejects(
      edited((r) => (r.tensors[1].cosines = [1.5])),
      /tensors\[1\]\.cosines must be 1 cosines in \[−1, 1\]/,
      q,
    );
    rejects(
      edited((r) => (r.tensors[1].cosines = [0.1, 0.2])),
      /tensors\[1\]\.cosines must be 1 cosines/,
      q,
    );
    rejects(
      edited((r) => (r.tensors[1].models = [0, 5])),
      /tensors\[1\]\.models must be an ascending list/,
      q,
    );
    rejects(
      edited((r) => (r.tensors[1].models = [1, 0])),
      /tensors\[1\]\.models must be an ascending list/,
      q,
    );
    rejects(
      edited((r) => (r.tensors[1].n = 3)),
      /tensors\[1\]\.n must be 2/,
      q,
    );
    rejects(
      edited((r) => {
        r.tensors[1].tStats = { min: 0.5, mean: 0.2, max: 0.9 };
      }),
      /tensors\[1\]\.tStats must be \{min, mean, max\}/,
      q,
    );
    rejects(
      edited((r) => {
        r.tensors[1].tStats = { min: 0.1, mean: 0.2, max: 0.9 };
      }),
      /tensors\[1\]\.cosines must be 1 \{min, mean, max\} of cosines/,
      q,
    );
  });

  it('copied and dropped tensors need no ratios', () => {
    const r = reportOf([
      { name: 'a', action: 'copy', dtype: 'I64', shape: [2] },
      { name: 'b', action: 'drop', dtype: 'F32', shape: [2] },
    ]);
    assert.equal(parseReport(JSON.stringify(r), FILE).tensors.length, 2);
  });
});
