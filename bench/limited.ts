/**
 * Rows measured inside a memory limit: "cold, inputs K× the memory limit". Each trial makes its own
 * memory cgroup (bench/cgroup.ts) of 1/K of the inputs' bytes, drops the page cache, and runs the read
 * floors and the merge inside it (page cache charged to the cgroup: what inputs larger than memory look
 * like), then removes it, even on failure. The read floor is the faster of one `cat` per model at once
 * and one `dd iflag=direct bs=64M` per model at once (a 64 MiB O_DIRECT read is split into 16 requests
 * of 4 MiB the device serves together); the durable write needs no page cache and runs as the other
 * floors do. Where no cgroup can be made the rows are left out with the reason — except as root on
 * Linux with a memory hierarchy, where a skip would hide a failure: there it is an error.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { createMemoryCgroup, type MemoryCgroup } from './cgroup';
import { dropCaches } from './floor';
import { since } from './util';

/** Seconds until every command (each `[command, args]`) has exited, all started at once inside `cg`. */
export async function runAllIn(cg: MemoryCgroup, commands: readonly [string, string[]][]): Promise<number> {
  const start = process.hrtime.bigint();
  await Promise.all(
    commands.map(([command, args]) => {
      const [c, a] = cg.wrap(command, args);
      return new Promise<void>((resolve, reject) => {
        const p = spawn(c, a, { stdio: ['ignore', 'ignore', 'inherit'] });
        p.on('error', reject);
        p.on('close', (status) =>
          status === 0 ? resolve() : reject(new Error(`${command} exited with ${status} inside ${cg.dir}`)),
        );
      });
    }),
  );
  return since(start);
}

/** The cold read floors of `groups` (one group of files per model) inside `cg`: cats and direct dds. */
export async function limitedReadFloor(
  cg: MemoryCgroup,
  groups: readonly (readonly string[])[],
): Promise<{ seconds: number; method: string }> {
  dropCaches();
  const cat = await runAllIn(
    cg,
    groups.map((files) => ['cat', [...files]]),
  );
  dropCaches();
  const ddScript =
    'for f in "$@"; do dd if="$f" of=/dev/null bs=64M iflag=direct status=none || exit 1; done';
  const dd = await runAllIn(
    cg,
    groups.map((files) => ['sh', ['-c', ddScript, 'dd', ...files]]),
  );
  return cat <= dd
    ? { seconds: cat, method: `parallel cat (dd iflag=direct ${dd.toFixed(2)} s)` }
    : { seconds: dd, method: `parallel dd iflag=direct bs=64M (cat ${cat.toFixed(2)} s)` };
}

/**
 * A cgroup of `limit` bytes for one trial, or why none: undefined reason means "go on without", a
 * thrown error means a skip would hide a failure (root, with a memory hierarchy to write).
 */
export function trialCgroup(tag: string, limit: number): MemoryCgroup | string {
  const cg = createMemoryCgroup(`model-stock-bench-${process.pid}-${tag}`, limit);
  if (typeof cg !== 'string') return cg;
  const required =
    process.getuid?.() === 0 &&
    (fs.existsSync('/sys/fs/cgroup/memory/memory.limit_in_bytes') ||
      fs.existsSync('/sys/fs/cgroup/cgroup.controllers'));
  if (required)
    throw new Error(`a memory cgroup is needed for the limited rows and could not be made: ${cg}`);
  return cg;
}
