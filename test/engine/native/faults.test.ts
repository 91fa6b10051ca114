import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { addonOrSkip } from '../../helpers/addon';
import { useTmpDir } from '../../helpers/tmp';

const CHILD = path.resolve(__dirname, '../../helpers/mappingFaultChild.js');

/**
 * The SIGBUS guard of native/fault_guard.cc, in child processes (a fault it failed to absorb ends the
 * child, not the suite): a file truncated under its mapping reads as zeros on the JS thread and on pool
 * threads, each mapping flags its own first fault, and a SIGBUS that is not a fault on our mappings
 * still ends the process as it would without the guard.
 */
describe('native: faults on mapped files', function () {
  this.timeout(60_000);
  const tmp = useTmpDir('model-stock-mapping-faults-');
  before(function () {
    addonOrSkip(this);
  });

  it('a truncated mapping reads zeros and is flagged, on the JS thread and on pool threads', () => {
    const dir = path.join(tmp.dir, 'absorb');
    fs.mkdirSync(dir);
    const r = spawnSync(process.execPath, [CHILD, dir, 'absorb'], { encoding: 'utf8' });
    assert.equal(r.signal, null, `the child died of ${r.signal}: ${r.stderr}`);
    assert.equal(r.status, 0, r.stderr);
    const seen = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.deepEqual(seen.jsRead, [1, 0], 'bytes before the new end as they were, past it zeros');
    assert.equal(seen.jsFault, 5 * 4096 + 7, 'the first faulting byte, as an offset into the file');
    assert.equal(typeof seen.poolFault, 'number', 'the Gram pass faulted on a pool thread and was flagged');
    assert.equal(seen.untouched, 0, 'mappings that did not fault are not flagged');
    assert.equal(seen.gramFinite, true);
  });

  it('a SIGBUS that is not a fault on our mappings ends the process, as without the guard', () => {
    const dir = path.join(tmp.dir, 'foreign');
    fs.mkdirSync(dir);
    const r = spawnSync(process.execPath, [CHILD, dir, 'foreign'], { encoding: 'utf8' });
    assert.equal(r.signal, 'SIGBUS', `status ${r.status}, stdout ${r.stdout}, stderr ${r.stderr}`);
  });
});
