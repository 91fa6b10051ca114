import { strict as assert } from 'node:assert';
import { exitCodeFor, interruptedBy, interruptOnSignals } from '../../lib/cli/signals';

/** The CLI's signal handling, in process: process.exit is stubbed, the signals are emitted. */
describe('CLI signals', () => {
  it('the first SIGINT quiets the bars and aborts; a second exits at once with 130', () => {
    const exits: number[] = [];
    const quieted: number[] = [];
    const realExit = process.exit;
    const realWrite = process.stderr.write;
    let said = '';
    process.exit = ((code: number) => void exits.push(code)) as typeof process.exit;
    process.stderr.write = ((s: string) => ((said += s), true)) as typeof process.stderr.write;
    const interrupt = interruptOnSignals('the merge', () => quieted.push(1));
    try {
      process.emit('SIGINT', 'SIGINT');
      assert.equal(interrupt.signal.aborted, true);
      assert.equal(interruptedBy(), 'SIGINT');
      assert.deepEqual(exits, []);
      process.emit('SIGINT', 'SIGINT');
      assert.deepEqual(exits, [130]);
      assert.equal(quieted.length, 2, 'the bars are stopped before anything is written');
      assert.match(said, /SIGINT: cancelling the merge/);
      assert.match(said, /SIGINT again: exiting now/);
    } finally {
      interrupt.dispose();
      process.exit = realExit;
      process.stderr.write = realWrite;
    }
    assert.equal(exitCodeFor('SIGTERM'), 143);
  });
});
