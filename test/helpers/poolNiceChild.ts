/**
 * Run as `node poolNiceChild.js` (setPoolNice is process-wide, so not in the test's own process): the
 * same native interpolation at nice 0 and after setPoolNice(10), on 2 threads. Prints JSON: whether the
 * outputs are equal, and the nice of every thread of the process after each run (/proc/self/task).
 */
import * as fs from 'node:fs';
import { loadNativeAddon } from '../../lib/engine/native/loader';

/** The nice of each thread: field 19 of /proc/self/task/TID/stat (fields counted after the name). */
function threadNices(): number[] {
  return fs.readdirSync('/proc/self/task').map((tid) => {
    const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
  });
}

async function main(): Promise<void> {
  const addon = loadNativeAddon().addon!;
  const count = 1 << 22;
  const inputs = [0, 1, 2].map((i) => {
    const f = new Float32Array(count);
    for (let k = 0; k < count; k++) f[k] = Math.sin(k * (i + 1) * 1e-3);
    return { bytes: new Uint8Array(f.buffer), dtype: 'F32' as const };
  });
  const run = async (): Promise<Uint8Array> => {
    const out = new Uint8Array(count * 2);
    await addon.interpolate({
      base: inputs[0]!,
      models: inputs.slice(1),
      count,
      firstElement: 0,
      unitLength: count,
      threads: 2,
      t: new Float64Array([0.7]),
      out,
      outDtype: 'BF16',
    });
    return out;
  };
  const before = await run();
  const nicesBefore = threadNices();
  const previous = addon.setPoolNice(10);
  const after = await run();
  const nicesAfter = threadNices();
  process.stdout.write(
    JSON.stringify({ equal: Buffer.compare(before, after) === 0, previous, nicesBefore, nicesAfter }),
  );
}

void main();
