import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import type { IoMode } from '../../lib/engine/io';
import { loadNativeAddon } from '../../lib/engine/native/loader';
import { backendsUnderTest } from '../helpers/backends';
import type { FaultCase, FaultResult } from '../helpers/faultChild';
import { writeModel } from '../helpers/models';
import { mulberry32, randomTensor } from '../helpers/random';
import { useTmpDir } from '../helpers/tmp';

const CHILD = path.resolve(__dirname, '../helpers/faultChild.js');

/** Three models: merged float tensors around an integer one the merge copies from the base. */
async function fixture(root: string): Promise<{ base: string; models: string[] }> {
  const rng = mulberry32(7);
  const shared = ['a', 'b', 'c'].map(() => randomTensor(256 * 256, rng));
  const ids = new Uint8Array(4 * 16384).map((_, k) => k % 251);
  const dirs: string[] = [];
  for (let i = 0; i < 3; i++) {
    const tensors = [
      ...['a', 'b'].map((n, k) => ({
        name: `${n}.weight`,
        dtype: 'F32' as const,
        shape: [256, 256],
        values: shared[k]!.map((x, j) => (i === 0 ? x : x + 0.01 * Math.sin(j * (i + 2)))),
      })),
      { name: 'ids', dtype: 'I32' as const, shape: [16384], values: ids },
      {
        name: 'c.weight',
        dtype: 'F32' as const,
        shape: [256, 256],
        values: shared[2]!.map((x, j) => (i === 0 ? x : x - 0.02 * Math.cos(j * i))),
      },
    ];
    dirs.push(await writeModel(path.join(root, i === 0 ? 'base' : `ft${i}`), tensors));
  }
  return { base: dirs[0]!, models: dirs.slice(1) };
}

/**
 * An input truncated by another program during a merge, on every backend and input mode. With mmap the
 * next access to a page past the new end raises SIGBUS — on a pool thread (native kernels), on the JS
 * thread (js kernels), or as EFAULT from write() (a copied tensor's view written straight to the output).
 * The merge must fail with IO_ERROR naming the truncated file, and the same process must then merge again.
 * The merges run in one child process: if a fault were not absorbed it would end that process (and a
 * handler that exits would end it too), failing this test instead of the whole suite.
 */
describe('an input truncated during a merge', function () {
  this.timeout(300_000);
  const tmp = useTmpDir('model-stock-faults-');

  it('is an IO_ERROR naming that input, on every backend and input mode; the process merges again', async () => {
    const fx = await fixture(path.join(tmp.dir, 'fx'));
    const ios: Exclude<IoMode, 'auto'>[] =
      loadNativeAddon().addon === undefined ? ['fs'] : ['mmap', 'direct', 'pread', 'fs'];
    const cases: FaultCase[] = [];
    for (const backend of backendsUnderTest()) {
      for (const io of ios) {
        cases.push({ backend, io, input: 'model', at: 'b.weight' });
        cases.push({ backend, io, input: 'model', at: 'c.weight', memory: 64 * 1024 });
        cases.push({ backend, io, input: 'base', at: 'ids' });
      }
    }
    const { stdout, stderr, code, signal } = await new Promise<{
      stdout: string;
      stderr: string;
      code: number | null;
      signal: NodeJS.Signals | null;
    }>((resolve) => {
      const child = execFile(
        process.execPath,
        [CHILD, JSON.stringify({ root: path.join(tmp.dir, 'runs'), fixture: fx, cases })],
        { maxBuffer: 1 << 24 },
        (_e, out, err) =>
          resolve({ stdout: out, stderr: err, code: child.exitCode, signal: child.signalCode }),
      );
    });
    assert.equal(signal, null, `the child died of ${signal}; stderr: ${stderr}`);
    assert.equal(code, 0, `child exit ${code}; stderr: ${stderr}`);
    const lines = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as FaultResult | { done: true });
    assert.deepEqual(lines.at(-1), { done: true });
    const results = lines.slice(0, -1) as FaultResult[];
    assert.equal(results.length, cases.length);
    for (const r of results) {
      const label = `${r.backend}, io ${r.io}, ${r.input} truncated at ${r.at}${r.memory ? ', windowed' : ''}`;
      assert.equal(r.code, 'IO_ERROR', `${label}: ${r.code}: ${r.message}`);
      assert.equal(r.file, r.truncated, `${label}: names ${r.file}: ${r.message}`);
      assert.ok(r.message.includes(r.truncated), `${label}: ${r.message}`);
      if (r.io === 'mmap') {
        // The mapping's own report, not a later symptom (the size check at the end would say "changed").
        // The base's copied tensor goes from its view to the writer: a write() from the view gets EFAULT
        // (node, rolling, plain), a copy into an O_DIRECT staging block faults (SIGBUS, absorbed).
        const how = r.input === 'base' ? /EFAULT|SIGBUS/ : /SIGBUS/;
        assert.match(r.message, how, label);
      }
      assert.equal(r.second, 4, `${label}: the next merge in the same process: ${r.second}`);
    }
  });
});
