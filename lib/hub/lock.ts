/**
 * The per-blob download lock of the shared cache. huggingface_hub holds an exclusive flock(2) on
 * `.locks/models--org--name/<blob>.lock` while it writes that blob; we take the same lock through the
 * native addon so either side waits for the other. Correctness never depends on it (every download
 * goes to a file of its own and is renamed into place): without the addon, or on a file system
 * without flock, we go on unlocked, which at worst downloads a blob twice.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadNativeAddon } from '../engine/native/loader';
import { cancelledError as cancelled } from '../errors';

/** Python's filelock logs every 10 s while it waits; we warn once at that point. */
const WAIT_WARNING_MS = 10_000;
const POLL_MS = 100;

function lockFunction(): ((fd: number) => boolean) | undefined {
  const addon = loadNativeAddon().addon;
  return addon === undefined ? undefined : (fd) => addon.lockFile(fd);
}

/**
 * Runs `fn` holding the lock at `file` (created with mode 0664 like Python's, never deleted: other
 * processes may hold descriptors to it).
 */
export async function withFileLock<T>(
  file: string,
  o: { signal?: AbortSignal; onWarning?: (m: string) => void; what: string },
  fn: () => Promise<T>,
): Promise<T> {
  const lock = lockFunction();
  if (lock === undefined) return fn();
  await fs.promises.mkdir(path.dirname(file), { recursive: true });
  const fh = await fs.promises.open(file, 'a', 0o664);
  try {
    const started = Date.now();
    let warned = false;
    for (;;) {
      let held: boolean;
      try {
        held = lock(fh.fd);
      } catch {
        break; // no flock on this file system: unlocked, as documented above
      }
      if (held) break;
      if (o.signal?.aborted) throw cancelled(o.signal, o.what);
      if (!warned && Date.now() - started >= WAIT_WARNING_MS) {
        warned = true;
        o.onWarning?.(`${o.what}: waiting for another process that is downloading it (lock ${file})`);
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    return await fn();
  } finally {
    await fh.close(); // closing the descriptor releases the flock
  }
}
