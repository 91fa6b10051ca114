/**
 * The PyTorch reader under the fuzzer (fuzz/pytorch.ts): mutations of real torch.save files, half of
 * them inside data.pkl re-wrapped in a valid archive. Every input ends in a tensor table lying inside
 * the file or in one of the reader's codes naming it; the run must reach the interpreter and produce
 * tables, or it tests nothing. Long runs: `npm run fuzz -- --seconds N`.
 */
import { strict as assert } from 'node:assert';
import { checkInput } from '../../fuzz/targets';
import { runFuzz } from '../../fuzz/run';
import { archiveOf, PickleBuilder } from '../helpers/pytorch';

describe('PyTorch reader fuzz target', function () {
  this.timeout(60_000);

  it('edge cases: a frame of 2^64 − 1 bytes, a list holding itself, a storage record cut short', async () => {
    const cases = [
      new PickleBuilder()
        .proto(4)
        .raw(0x95, ...Array(8).fill(0xff))
        .stop()
        .bytes(),
      new PickleBuilder().proto(2).emptyList().put(0).get(0).append().stop().bytes(),
      new PickleBuilder()
        .proto(2)
        .emptyDict()
        .str('w')
        .tensorV2('FloatStorage', '0', 4, [4])
        .setitem()
        .stop()
        .bytes(),
    ];
    for (const pickle of cases) {
      const bytes = await archiveOf([
        ['data.pkl', pickle],
        ['data/0', new Uint8Array(3)],
      ]);
      const { problem, interpreted } = await checkInput({ kind: 'pytorch', bytes, dataBytes: 0 }, false);
      assert.equal(problem, undefined);
      assert.equal(interpreted, true);
    }
  });

  it('a seeded 4 s run finds nothing, and reaches the interpreter and tensor tables', async () => {
    const result = await runFuzz({ seconds: 4, seed: 20_260_117, pytorchShare: 1 });
    assert.deepEqual(
      result.findings.map((f) => `${f.problem}: ${Buffer.from(f.input.bytes).toString('base64')}`),
      [],
    );
    assert.ok(result.pytorch.inputs > 500, `only ${result.pytorch.inputs} PyTorch inputs`);
    assert.ok(result.pytorch.interpreted > 0, 'no input reached the pickle interpreter');
    assert.ok(result.pytorch.tables > 0, 'no input gave a tensor table');
  });
});
