import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { generateFixture, PRESETS } from '../lib/fixtures/generate';
import { inspectModelStock } from '../lib/inspect';
import { mergeModelStock } from '../lib/merge';
import { backendsUnderTest } from './helpers/backends';
import { useTmpDir } from './helpers/tmp';

/** inspect: the Gram pass alone gives exactly the numbers a merge reports, and writes nothing. */
describe('inspectModelStock', () => {
  const tmp = useTmpDir();
  let fixture: { base: string; models: string[] };

  before(async () => {
    const info = await generateFixture({ ...PRESETS.tiny, models: 3, dir: path.join(tmp.dir, 'fx') });
    fixture = { base: info.base, models: [...info.models] };
  });

  for (const backend of backendsUnderTest()) {
    for (const filterWise of [false, true]) {
      it(`reports what the merge reports, reading each merged input once (${backend}, ${filterWise ? 'filter' : 'layer'}-wise)`, async () => {
        const before = fs.readdirSync(tmp.dir).sort();
        const inspected = await inspectModelStock({ ...fixture, backend, filterWise, memory: 64 * 1024 });
        assert.deepEqual(fs.readdirSync(tmp.dir).sort(), before, 'nothing written');
        const out = path.join(tmp.dir, `out-${backend}-${filterWise}`);
        const merged = await mergeModelStock({
          ...fixture,
          out,
          backend,
          filterWise,
          memory: 64 * 1024,
          fsync: false,
        });
        assert.deepEqual(inspected.tensors, merged.tensors);
        assert.deepEqual(inspected.warnings, merged.warnings);
        assert.equal(inspected.backend.name, backend);
        const mergedInputs = merged.tensors
          .filter((t) => t.action === 'merge')
          .reduce((s, t) => s + (t.n! + 1) * t.shape.reduce((a, b) => a * b, 1) * 2, 0);
        assert.equal(inspected.bytesRead, mergedInputs, 'bf16 inputs of merged tensors, once each');
        assert.ok(!('out' in inspected));
      });
    }
  }
});
