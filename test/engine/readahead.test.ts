import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TensorSource } from '../../lib/engine/context';
import { openTensorSource, type IoMode } from '../../lib/engine/io';
import { ReadAhead } from '../../lib/engine/readahead';
import type { PlanStep } from '../../lib/plan/plan';
import type { TensorInfo } from '../../lib/checkpoint/types';
import { backendsUnderTest } from '../helpers/backends';
import { randomBytes } from '../helpers/random';
import { useTmpDir } from '../helpers/tmp';

const info = (file: string, name: string, offset: number, numel: number): TensorInfo => ({
  name,
  dtype: 'F32',
  shape: [numel],
  offset,
  byteLength: 4 * numel,
  file,
});

/** A merge step over base + 2 fine-tunes (F32, `numel` elements, the first `merged` of them merged). */
function mergeStep(name: string, offset: number, numel: number, merged = numel): PlanStep {
  return {
    action: 'merge',
    name,
    base: info('base', name, offset, numel),
    inputs: [info('ft1', name, offset + 1, numel), info('ft2', name, offset + 2, numel)],
    modelIndices: [0, 1],
    outDtype: 'F32',
    shape: [numel],
    numel,
    mergedNumel: merged,
    unitLength: merged,
    units: 1,
    outByteLength: 4 * numel,
    note: undefined,
    rows: undefined,
    untouched: [],
  };
}

function copyStep(name: string, offset: number, numel: number): PlanStep {
  return {
    action: 'copy',
    name,
    base: info('base', name, offset, numel),
    reason: 'test',
    outDtype: 'F32',
    outByteLength: 4 * numel,
  };
}

/** A source that records hints as `file@start+length` and counts how many run at once. */
function recordingSource(): { source: TensorSource; hints: string[]; maxInFlight: () => number } {
  const hints: string[] = [];
  let inFlight = 0;
  let max = 0;
  const source: TensorSource = {
    readInto: () => Promise.reject(new Error('not read in this test')),
    willNeed: async (t, start, length) => {
      inFlight++;
      max = Math.max(max, inFlight);
      hints.push(`${t.file}@${t.offset + start}+${length}`);
      await new Promise((resolve) => setImmediate(resolve));
      inFlight--;
    },
  };
  return { source, hints, maxInFlight: () => max };
}

describe('read-ahead hints (cold inputs)', () => {
  const steps = [
    mergeStep('a', 1000, 100),
    copyStep('ids', 3000, 10),
    mergeStep('b', 5000, 100),
    mergeStep('c', 9000, 100),
    mergeStep('emb', 20_000, 1000, 600), // vocabularies differ: 600 elements merged, the base's rest copied
  ];

  it('hints the current step, then the next ones until the budget lies ahead, each once, in order', async () => {
    const { source, hints, maxInFlight } = recordingSource();
    const ra = new ReadAhead(steps, source, false, 1000);
    ra.at(0);
    await ra.settled();
    // Step a (all N+1 files), the copy (base only), then b: 40 + 1200 bytes ahead of a ≥ 1000.
    assert.deepEqual(hints, [
      'base@1000+400',
      'ft1@1001+400',
      'ft2@1002+400',
      'base@3000+40',
      'base@5000+400',
      'ft1@5001+400',
      'ft2@5002+400',
    ]);
    ra.at(1);
    ra.at(2);
    await ra.settled();
    assert.equal(hints.length, 10, 'c, once; nothing hinted twice');
    ra.at(3);
    await ra.settled();
    // emb: merged rows of every input, then the base's copied rows; a range over the budget is capped.
    assert.deepEqual(hints.slice(10), [
      'base@20000+1000',
      'ft1@20001+1000',
      'ft2@20002+1000',
      'base@22400+1000',
    ]);
    ra.at(4);
    await ra.settled();
    assert.equal(hints.length, 14);
    assert.equal(maxInFlight(), 1, 'one hint at a time');
  });

  it('the Gram pass alone (inspect) hints merged ranges only: no copies, no copied rows', async () => {
    const { source, hints } = recordingSource();
    const ra = new ReadAhead(steps, source, true, 1 << 20);
    ra.at(0);
    await ra.settled();
    assert.ok(!hints.some((h) => h.startsWith('base@3000') || h.startsWith('base@22400')), hints.join(' '));
    assert.equal(hints.length, 12);
  });

  it('a step reached before its hint (the budget was spent) is hinted when it starts', async () => {
    const { source, hints } = recordingSource();
    const ra = new ReadAhead(steps, source, false, 1);
    ra.at(3);
    await ra.settled();
    assert.deepEqual(hints.slice(0, 3), ['base@9000+1', 'ft1@9001+1', 'ft2@9002+1']);
  });

  it('a source without hints is left alone', () => {
    const ra = new ReadAhead(steps, { readInto: () => Promise.resolve() }, false);
    ra.at(0); // nothing to call, nothing thrown
  });
});

describe('input sources give read-ahead hints without reopening what they closed', function () {
  const tmp = useTmpDir('model-stock-hints-');
  const modes: Exclude<IoMode, 'auto'>[] = backendsUnderTest().includes('native')
    ? ['fs', 'pread', 'direct', 'mmap']
    : ['fs'];
  const openFds = (): number => fs.readdirSync('/proc/self/fd').length;

  for (const mode of modes) {
    it(`${mode}: hints settle, reads still return the bytes, a hint after close() opens nothing`, async function () {
      if (!fs.existsSync('/proc/self/fd')) this.skip();
      const file = path.join(tmp.dir, `${mode}.bin`);
      const data = randomBytes(300_001, 12);
      fs.writeFileSync(file, data);
      const t: TensorInfo = {
        name: 't',
        dtype: 'U8',
        shape: [300_000],
        offset: 1,
        byteLength: 300_000,
        file,
      };
      const before = openFds();
      const source = openTensorSource(mode);
      await source.willNeed?.(t, 0, t.byteLength);
      await source.willNeed?.(t, 99_999, 7);
      const into = new Uint8Array(1000);
      await source.readInto(t, 5000, into);
      assert.deepEqual(into, data.subarray(5001, 6001));
      await source.close();
      assert.equal(openFds(), before, 'closed');
      await source.willNeed?.(t, 0, 10);
      assert.equal(openFds(), before, 'a hint after close() opened nothing');
    });
  }
});
