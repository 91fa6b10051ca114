/** Page-cache states for I/O tests: a file made cold, a file system that refuses O_DIRECT. */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/**
 * Makes `file` cold: its dirty pages written (fsync), then its clean pages dropped from the page cache
 * (GNU dd's iflag=nocache with count=0 advises the whole file DONTNEED). Any user may do it to their files.
 */
export function dropFromPageCache(file: string): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  execFileSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
}

/**
 * Runs `body` with a fresh ramfs mounted at a temporary folder (ramfs refuses O_DIRECT with EINVAL, as
 * some FUSE and network file systems do); unmounted and removed afterwards, whatever happens. Skips the
 * test, saying why, where it cannot mount (not root).
 */
export async function withRamfs(ctx: Mocha.Context, body: (dir: string) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'model-stock-ramfs-'));
  const mounted = spawnSync('mount', ['-t', 'ramfs', 'ramfs', dir], { encoding: 'utf8' });
  if (mounted.status !== 0) {
    fs.rmdirSync(dir);
    console.warn(
      `    (ramfs case skipped: cannot mount one here: ${(mounted.stderr || String(mounted.error)).trim()})`,
    );
    ctx.skip();
  }
  try {
    await body(dir);
  } finally {
    spawnSync('umount', [dir]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
