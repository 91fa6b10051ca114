/**
 * Run by test/engine/native/faults.test.ts in a child process: the addon's SIGBUS guard on its own.
 * `node mappingFaultChild.js DIR absorb` prints one JSON object with what it saw;
 * `node mappingFaultChild.js DIR foreign` sends itself SIGBUS after mapping a file (not a fault on our
 * mappings: the process must die of it, as without the guard).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadNativeAddon } from '../../lib/engine/native/loader';

const PAGE = 4096;

async function absorb(dir: string): Promise<Record<string, unknown>> {
  const addon = loadNativeAddon().addon!;
  // Enough mappings that the registry grows past its first block of slots; the faults hit the last ones.
  const files = Array.from({ length: 150 }, (_, i) => path.join(dir, `f${i}.bin`));
  for (const f of files) fs.writeFileSync(f, Buffer.alloc(64 * PAGE, 1));
  const maps = files.map((f) => addon.mapFile(f));
  const views = maps.map((m) => addon.mapView(m, 0, m.size));

  // The JS thread: a plain read of a page past the new end.
  fs.truncateSync(files[148]!, 3 * PAGE);
  const jsRead = [views[148]![PAGE], views[148]![5 * PAGE + 7]];
  const jsFault = addon.mapFault(maps[148]!);

  // Pool threads: a Gram pass over views of a file truncated to nothing.
  const count = (64 * PAGE) / 4;
  const other = new Uint8Array(64 * PAGE).fill(2);
  fs.truncateSync(files[149]!, 0);
  const gram = new Float64Array(3);
  await addon.gram({
    base: { bytes: views[149]!, dtype: 'F32' },
    models: [
      { bytes: other, dtype: 'F32' },
      { bytes: views[147]!, dtype: 'F32' },
    ],
    count,
    firstElement: 0,
    unitLength: count,
    threads: 2,
    gram,
  });
  const poolFault = addon.mapFault(maps[149]!);
  const untouched = maps.slice(0, 148).filter((m) => addon.mapFault(m) !== undefined).length;
  for (const [i, m] of maps.entries()) addon.mapClose(m, [views[i]!]);
  return { jsRead, jsFault, poolFault, untouched, gramFinite: [...gram].every(Number.isFinite) };
}

async function main(): Promise<void> {
  const [dir, mode] = process.argv.slice(2) as [string, string];
  if (mode === 'foreign') {
    const addon = loadNativeAddon().addon!;
    fs.writeFileSync(path.join(dir, 'g.bin'), Buffer.alloc(PAGE));
    addon.mapFile(path.join(dir, 'g.bin')); // installs the guard
    process.kill(process.pid, 'SIGBUS');
    await new Promise((resolve) => setTimeout(resolve, 2000));
    process.stdout.write('survived a SIGBUS that was not ours\n');
    return;
  }
  process.stdout.write(JSON.stringify(await absorb(dir)) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
