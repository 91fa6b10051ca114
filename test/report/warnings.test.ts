import { strict as assert } from 'node:assert';
import { formatWarningGroup, groupWarnings, groupedWarningLines } from '../../lib/report/warnings';

describe('warnings grouped by kind (terminal and page)', () => {
  it('says a per-tensor kind once, with its count and the first three names', () => {
    const warnings = [
      ...Array.from(
        { length: 51 },
        (_, i) => `layers.${i}.q.weight: copied from the base: in no fine-tuned model`,
      ),
      'backend js: the native addon did not load',
      'layers.3.k.weight: c = -0.5000 is at the pole 1 + (N−1)·c ≤ 1e-6; t set to 0 (the base is kept)',
    ];
    const groups = groupWarnings(warnings);
    assert.equal(groups.length, 3);
    assert.equal(groups[0]!.count, 51);
    assert.deepEqual(groups[0]!.subjects, ['layers.0.q.weight', 'layers.1.q.weight', 'layers.2.q.weight']);
    assert.equal(
      formatWarningGroup(groups[0]!),
      'copied from the base: in no fine-tuned model (51 tensors: layers.0.q.weight, layers.1.q.weight, layers.2.q.weight, …)',
    );
    // A group of one is the warning as given.
    assert.deepEqual(groupedWarningLines(warnings).slice(1), warnings.slice(51));
  });

  it('keeps kinds in order of first appearance and lists every name when few', () => {
    const lines = groupedWarningLines(['a: x', 'b: y', 'c: x']);
    assert.deepEqual(lines, ['x (2 tensors: a, c)', 'b: y']);
  });

  it('says a repeated message without a name once, with its count; different messages stay apart', () => {
    const lines = groupedWarningLines(['one thing happened', 'a b: c', 'one thing happened', 'a b: d']);
    assert.deepEqual(lines, ['one thing happened (×2)', 'a b: c', 'a b: d']);
  });
});
