import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { addonOrSkip } from '../../helpers/addon';

const CHILD = path.join(__dirname, '..', '..', 'helpers', 'poolNiceChild.js');

/** setPoolNice (what `model-stock serve` sets): the kernels run on pool threads at that nice, same bytes. */
describe('native kernels at a raised nice', () => {
  before(function () {
    addonOrSkip(this);
  });

  it('after setPoolNice(10) every kernel thread runs at nice 10, the event loop at 0, and the bytes are the same', () => {
    const r = spawnSync(process.execPath, [CHILD], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const o = JSON.parse(r.stdout) as { equal: boolean; previous: number; nicesBefore: number[]; nicesAfter: number[] };
    assert.equal(o.equal, true);
    assert.equal(o.previous, 0);
    assert.ok(o.nicesBefore.every((n) => n === 0), JSON.stringify(o.nicesBefore));
    // Thread 0 is the main thread (the event loop), at 0; the pool's threads that ran at 10.
    assert.equal(o.nicesAfter[0], 0);
    assert.ok(o.nicesAfter.some((n) => n === 10), JSON.stringify(o.nicesAfter));
    assert.ok(o.nicesAfter.every((n) => n === 0 || n === 10), JSON.stringify(o.nicesAfter));
  });

  it('the service holds nice 10 while any of its servers runs, and puts back 0 when the last one closes', () => {
    const r = spawnSync(process.execPath, [CHILD, 'servers'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { before: 0, both: 10, one: 10, none: 0 });
  });
});
