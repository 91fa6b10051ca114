/**
 * Run as `node poolNiceChild.js` (setPoolNice is process-wide, so not in the test's own process): the
 * same native interpolation at nice 0 and after setPoolNice(10), on 2 threads. Prints JSON: whether the
 * outputs are equal, and the nice of every thread of the process after each run (/proc/self/task).
 * With `servers`: the nice two `model-stock serve` servers hold (see servers()).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNativeAddon } from '../../lib/engine/native/loader';
import { createServer, type Server } from '../../lib/serve/server';
import { TOKEN } from './serve';

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

/** Two servers in one process: the nice while both run, after the first closes, after both (JSON). */
async function servers(): Promise<void> {
  const addon = loadNativeAddon().addon!;
  const peek = (): number => {
    const v = addon.setPoolNice(0);
    addon.setPoolNice(v);
    return v;
  };
  const dirs: string[] = [];
  const start = async (): Promise<Server> => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pool-nice-'));
    dirs.push(dir);
    for (const d of ['models', 'out']) fs.mkdirSync(path.join(dir, d));
    return createServer({
      port: 0,
      models: [path.join(dir, 'models')],
      out: path.join(dir, 'out'),
      state: path.join(dir, 'state'),
      token: TOKEN,
      log: { level: 'silent' },
    });
  };
  const before = peek();
  const a = await start();
  const b = await start();
  const both = peek();
  await a.close();
  const one = peek();
  await b.close();
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  process.stdout.write(JSON.stringify({ before, both, one, none: peek() }));
}

void (process.argv[2] === 'servers' ? servers() : main());
