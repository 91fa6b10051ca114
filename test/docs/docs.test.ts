import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { generateFixture, PRESETS } from '../../lib/fixtures/generate';
import { inspectModelStock } from '../../lib/inspect';
import { mergeModelStock } from '../../lib/merge';
import { REPORT_FILE } from '../../lib/output/atomic';
import { assertValidReport, reportValidator } from '../helpers/schema';
import { useTmpDir } from '../helpers/tmp';

const ROOT = path.resolve(__dirname, '..', '..', '..');

describe('docs/report.schema.json describes real reports', () => {
  const tmp = useTmpDir();
  const validate = reportValidator();
  const check = assertValidReport;
  let fixture: { base: string; models: string[] };

  before(async () => {
    // --extra: integer buffers (copied), a tensor only fine-tunes have (dropped), one some lack.
    const info = await generateFixture({
      ...PRESETS.tiny,
      models: 3,
      extraTensors: true,
      dir: path.join(tmp.dir, 'fx'),
    });
    fixture = { base: info.base, models: [...info.models] };
  });

  for (const filterWise of [false, true]) {
    it(`a merge's model_stock_report.json, ${filterWise ? 'filter' : 'layer'}-wise`, async () => {
      const out = path.join(tmp.dir, `out-${filterWise}`);
      await mergeModelStock({ ...fixture, out, filterWise, fsync: false });
      const report = JSON.parse(fs.readFileSync(path.join(out, REPORT_FILE), 'utf8'));
      assert.ok(report.tensors.some((t: { action: string }) => t.action === 'copy'));
      check(report, 'merge');
    });
  }

  it("an inspection's report, and a report the schema must refuse", async () => {
    const report = await inspectModelStock({ ...fixture, filterWise: true });
    check(JSON.parse(JSON.stringify(report)), 'inspect');
    assert.equal(validate({ ...report, surprise: 1 }), false, 'unknown fields are refused');
    const [first, ...rest] = report.tensors;
    const merged = report.tensors.find((t) => t.action === 'merge')!;
    assert.equal(
      validate({ ...report, tensors: [{ ...merged, tStats: undefined, cStats: undefined }] }),
      false,
    );
    assert.equal(validate({ ...report, tensors: [{ ...first, action: 'blend' }, ...rest] }), false);
  });
});

describe('README and docs link only to files in the repository', () => {
  it('every relative link resolves to an existing file inside the repository', () => {
    const docs = [
      'README.md',
      ...fs
        .readdirSync(path.join(ROOT, 'docs'))
        .filter((f) => f.endsWith('.md'))
        .map((f) => `docs/${f}`),
    ];
    const broken: string[] = [];
    for (const doc of docs) {
      const text = fs.readFileSync(path.join(ROOT, doc), 'utf8');
      for (const m of text.matchAll(/\]\(([^)\s#]+)(#[^)]*)?\)/g)) {
        const target = m[1]!;
        if (/^[a-z]+:/i.test(target)) continue; // https:, mailto:
        const resolved = path.resolve(ROOT, path.dirname(doc), target);
        const inside = !path.relative(ROOT, resolved).startsWith('..');
        if (!inside || !fs.existsSync(resolved))
          broken.push(`${doc}: ${target}${inside ? '' : ' (outside the repository)'}`);
      }
    }
    assert.deepEqual(broken, []);
  });
});
