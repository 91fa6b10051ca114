/**
 * Which version of a file a merge read. Recorded when a shard's header is read and compared again once
 * every tensor has been read: a file rewritten, replaced or resized in between would give an output that
 * mixes two versions of an input, so it is an error instead.
 */
import { stat } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import { ModelStockError } from '../errors';

export interface FileIdentity {
  readonly dev: bigint;
  readonly ino: bigint;
  readonly size: bigint;
  readonly mtimeNs: bigint;
}

export function identityOf(st: BigIntStats): FileIdentity {
  return { dev: st.dev, ino: st.ino, size: st.size, mtimeNs: st.mtimeNs };
}

function describeChange(was: FileIdentity, now: FileIdentity): string {
  if (was.dev !== now.dev || was.ino !== now.ino) return 'it was replaced by another file';
  const changes: string[] = [];
  if (was.size !== now.size) changes.push(`its size went from ${was.size} to ${now.size} bytes`);
  if (was.mtimeNs !== now.mtimeNs) changes.push('it was modified');
  return changes.join(' and ');
}

/**
 * Throws IO_ERROR naming the first file (path → identity when it was opened) that is no longer the
 * file that was read: another inode, another size or another modification time.
 */
export async function checkUnchanged(files: ReadonlyMap<string, FileIdentity>): Promise<void> {
  for (const [file, was] of files) {
    let change: string;
    let cause: unknown;
    try {
      change = describeChange(was, identityOf(await stat(file, { bigint: true })));
    } catch (e) {
      change = `it can no longer be read: ${(e as Error).message}`;
      cause = e;
    }
    if (change !== '') {
      throw new ModelStockError(
        'IO_ERROR',
        `changed during the merge (${change}); the output would mix two versions of it, so nothing was written`,
        { file, cause },
      );
    }
  }
}
