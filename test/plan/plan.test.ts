import { strict as assert } from 'node:assert';
import * as path from 'node:path';
import { mergeModelStock } from '../../lib/merge';
import { assertWithinContract, referenceMerge } from '../helpers/reference';
import { readModel, writeModel } from '../helpers/models';
import { correlatedModels, mulberry32, randomTensor } from '../helpers/random';
import { useTmpDir } from '../helpers/tmp';
import { backendsUnderTest } from '../helpers/backends';
import type { IoMode } from '../../lib/engine/io';

describe('plan rules end to end (the table of docs/merge-contract.md)', () => {
  const tmp = useTmpDir();

  it('merges over the fine-tunes that have a tensor, copies, converts and drops per the table', async () => {
    const rng = mulberry32(11);
    const shared = randomTensor(30, rng);
    const [a, b, c] = correlatedModels(shared, 3, 0.5, rng) as [Float64Array, Float64Array, Float64Array];
    const pair = randomTensor(12, rng);
    const [p1, p2] = correlatedModels(pair, 2, 0.3, rng) as [Float64Array, Float64Array];
    const lonely = randomTensor(5, rng);
    const ids = new Uint8Array(new Int32Array([3, 1, 4, 1]).buffer);
    const root = tmp.dir;
    const base = await writeModel(path.join(root, 'base'), [
      { name: 'all', dtype: 'BF16', shape: [5, 6], values: shared },
      { name: 'pair', dtype: 'F32', shape: [12], values: pair },
      { name: 'lonely', dtype: 'F16', shape: [5], values: lonely },
      { name: 'ids', dtype: 'I32', shape: [4], values: ids },
    ]);
    const ft = (name: string, tensors: Parameters<typeof writeModel>[1]) =>
      writeModel(path.join(root, name), tensors);
    // A 3-byte BOOL first puts every later tensor at an odd file offset (other writers do not align).
    const flag = { name: 'flag', dtype: 'BOOL' as const, shape: [3], values: new Uint8Array([1, 0, 1]) };
    const m1 = await ft('m1', [
      flag,
      { name: 'all', dtype: 'BF16', shape: [5, 6], values: a },
      { name: 'pair', dtype: 'F32', shape: [12], values: p1 },
      { name: 'lonely', dtype: 'F16', shape: [5], values: lonely.map((x) => x + 1) },
      { name: 'ids', dtype: 'I32', shape: [4], values: new Uint8Array(16) },
      { name: 'head.extra', dtype: 'F32', shape: [2], values: [1, 2] },
    ]);
    const m2 = await ft('m2', [
      flag,
      { name: 'all', dtype: 'F32', shape: [5, 6], values: b },
      { name: 'pair', dtype: 'BF16', shape: [12], values: p2 },
    ]);
    const m3 = await ft('m3', [{ name: 'all', dtype: 'F16', shape: [5, 6], values: c }]);
    const out = path.join(root, 'out');
    const warnings: string[] = [];
    const report = await mergeModelStock({
      base,
      models: [m1, m2, m3],
      out,
      outDtype: 'F32',
      fsync: false,
      onWarning: (w) => warnings.push(w),
    });
    const byName = new Map(report.tensors.map((t) => [t.name, t]));
    assert.deepEqual(
      report.tensors.filter((t) => t.action !== 'drop').map((t) => t.name),
      ['all', 'pair', 'lonely', 'ids'],
      'exactly the base tensors, in order',
    );
    // Tensors only fine-tunes have come last, as 'drop' entries naming who has them.
    assert.deepEqual(
      report.tensors.filter((t) => t.action === 'drop').map((t) => [t.name, t.reason, t.models]),
      [
        ['flag', 'not in the base', [0, 1]],
        ['head.extra', 'not in the base', [0]],
      ],
    );
    assert.equal(byName.get('all')!.n, 3);
    assert.equal(byName.get('pair')!.n, 2);
    assert.deepEqual(byName.get('pair')!.models, [0, 1]);
    assert.match(byName.get('pair')!.reason!, /missing in model 3/);
    assert.equal(byName.get('lonely')!.action, 'copy');
    assert.equal(byName.get('ids')!.action, 'copy');
    assert.ok(warnings.some((w) => w.includes('head.extra') && w.includes('not in the base')));
    assert.ok(warnings.some((w) => w.startsWith('lonely: copied from the base')));

    const merged = await readModel(out);
    const inputs = await Promise.all([base, m1, m2].map(readModel));
    const allInputs = await Promise.all([m1, m2, m3].map(readModel));
    const pairRef = referenceMerge(
      inputs[0]!.get('pair')!.values!,
      [inputs[1]!.get('pair')!.values!, inputs[2]!.get('pair')!.values!],
      { unitLength: 12, theta: 'mean-cos' },
    );
    assert.ok(Math.abs(byName.get('pair')!.t! - pairRef.t[0]!) < 1e-9);
    // A float tensor copied from the base is converted to --out-dtype exactly; integers stay as they are.
    assert.equal(merged.get('lonely')!.dtype, 'F32');
    assert.deepEqual(merged.get('lonely')!.values, inputs[0]!.get('lonely')!.values);
    assert.equal(merged.get('ids')!.dtype, 'I32');
    assert.deepEqual(merged.get('ids')!.bytes, ids);

    assert.ok(warnings.some((w) => w.startsWith('flag: not in the base')));

    // Per backend, the same bytes from every input mode, whole and through windows of a few elements
    // (backends may differ in the last bit: each is checked against the float64 contract elsewhere).
    const modes: IoMode[] = backendsUnderTest().includes('native') ? ['fs', 'mmap', 'pread'] : ['fs'];
    for (const backend of backendsUnderTest()) {
      let first: Awaited<ReturnType<typeof readModel>> | undefined;
      for (const io of modes) {
        for (const memory of [undefined, 64]) {
          const again = path.join(root, `again-${backend}-${io}-${memory}`);
          await mergeModelStock({
            base,
            models: [m1, m2, m3],
            out: again,
            outDtype: 'F32',
            fsync: false,
            backend,
            io,
            memory,
            window: memory,
          });
          const got = await readModel(again);
          if (first === undefined) {
            first = got;
            const all = [inputs[0]!, ...allInputs].map((m) => m.get('all')!.values!);
            const ref = referenceMerge(all[0]!, all.slice(1), { unitLength: 30, theta: 'mean-cos' });
            assertWithinContract(
              got.get('all')!.values!,
              all[0]!,
              all.slice(1),
              ref.t,
              30,
              'F32',
              `all (${backend})`,
            );
          }
          for (const [name, t] of first)
            assert.deepEqual(got.get(name)!.bytes, t.bytes, `${name} (${backend}, ${io}, ${memory})`);
          // Copied tensors are the same bytes on every backend.
          for (const name of ['lonely', 'ids'])
            assert.deepEqual(got.get(name)!.bytes, merged.get(name)!.bytes);
        }
      }
    }
  });
});
