import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { mergeModelStock } from '../../lib/merge';
import { inspectModelStock } from '../../lib/inspect';
import { isModelStockError } from '../../lib/errors';
import { writeModel } from '../helpers/models';
import { mulberry32, randomTensor } from '../helpers/random';
import { useTmpDir } from '../helpers/tmp';

describe('no silent no-op: fine-tunes that share little or nothing with the base', () => {
  const tmp = useTmpDir();
  const rng = mulberry32(5);
  const big = randomTensor(64, rng);
  const small = randomTensor(8, rng);
  const model = (name: string, prefix = '', keepBig = true) =>
    writeModel(path.join(tmp.dir, name), [
      ...(keepBig
        ? [
            {
              name: `${prefix}w.big`,
              dtype: 'F32' as const,
              shape: [8, 8],
              values: big.map((x) => x + rng() * 0.01),
            },
          ]
        : []),
      {
        name: `${prefix}w.small`,
        dtype: 'F32' as const,
        shape: [8],
        values: small.map((x) => x + rng() * 0.01),
      },
      { name: `${prefix}ids`, dtype: 'I64' as const, shape: [1], values: new Uint8Array(8) },
    ]);

  it('a fine-tune whose names all carry another prefix is NO_COMMON_TENSORS naming it and one name of each', async () => {
    const base = await model('base');
    const a = await model('a');
    const b = await model('b', 'model.');
    const out = path.join(tmp.dir, 'out');
    await assert.rejects(
      mergeModelStock({ base, models: [a, b], out, fsync: false }),
      (e: unknown) =>
        isModelStockError(e) &&
        e.code === 'NO_COMMON_TENSORS' &&
        e.file === b &&
        e.message.includes('model 2') &&
        e.message.includes('"model.w.big"') &&
        e.message.includes('"w.big"'),
    );
    assert.equal(fs.existsSync(out), false, 'nothing written');
    await assert.rejects(inspectModelStock({ base, models: [b, a] }), { code: 'NO_COMMON_TENSORS' });
  });

  it('one sharing less than half of the base floats is merged, with a warning giving the counts', async () => {
    const base = await model('base2');
    const a = await model('a2');
    const b = await model('b2');
    const c = await model('c2', '', false);
    const warnings: string[] = [];
    const report = await mergeModelStock({
      base,
      models: [a, b, c],
      out: path.join(tmp.dir, 'out2'),
      fsync: false,
      onWarning: (w) => warnings.push(w),
    });
    const w = warnings.find((m) => m.startsWith('model 3'));
    assert.ok(w?.includes("only 8 of the base's 72 mergeable elements"), warnings.join('\n'));
    assert.ok(report.warnings.includes(w!));
    // The report names each input's format and read mode, the base first.
    assert.deepEqual(
      report.inputs!.map((i) => [i.ref, i.format]),
      [base, a, b, c].map((r) => [r, 'safetensors']),
    );
    assert.ok(report.inputs!.every((i) => ['mmap', 'pread', 'fs'].includes(i.io)));
  });
});
