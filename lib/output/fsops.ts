/**
 * The file-system steps the output is built from: every failure a coded IO_ERROR naming the path (disk
 * full, file too large, permission, read-only file system, …), and renameat2's flags where the platform
 * has them.
 */
import * as fs from 'node:fs';
import * as util from 'node:util';
import { ModelStockError } from '../errors';
import { loadNativeAddon } from '../engine/native/loader';

/** Runs `op` on `file`; a failure becomes IO_ERROR "`file`: `what`: reason". ModelStockErrors pass through. */
export async function onPath<T>(file: string, what: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (cause) {
    if (cause instanceof ModelStockError) throw cause;
    throw new ModelStockError('IO_ERROR', `${what}: ${(cause as Error).message}`, { file, cause });
  }
}

export function errnoOf(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

/** lstat, or undefined when nothing is there. */
export async function lstatIfAny(file: string): Promise<fs.Stats | undefined> {
  try {
    return await fs.promises.lstat(file);
  } catch (e) {
    if (errnoOf(e) === 'ENOENT') return undefined;
    throw new ModelStockError('IO_ERROR', `cannot inspect: ${(e as Error).message}`, { file, cause: e });
  }
}

/**
 * renameat2(2)'s flags. `unsupported`: the file system (NFS, some FUSE) or the kernel refuses the flag,
 * and the caller falls back to what plain rename(2) can promise.
 */
export interface RenameFlags {
  /** Renames `from` to `to` unless `to` exists by then (`exists`). */
  noReplace(from: string, to: string): Promise<'done' | 'exists' | 'unsupported'>;
  /** Swaps two existing paths in one step; `missing` when one of them is gone. */
  exchange(a: string, b: string): Promise<'done' | 'missing' | 'unsupported'>;
}

/** What the kernel says when it cannot honour a flag here (rather than a failure of the rename). */
const UNSUPPORTED = new Set(['EINVAL', 'ENOSYS', 'ENOTSUP', 'EOPNOTSUPP']);

/** libuv's name and text for an errno: ['EEXIST', 'file already exists']. */
function describeErrno(errno: number): [string, string] {
  return util.getSystemErrorMap().get(-errno) ?? [`errno ${errno}`, 'unknown error'];
}

/** The addon's renameat2, or undefined when the addon does not load. */
export function nativeRenameFlags(): RenameFlags | undefined {
  const addon = loadNativeAddon().addon;
  return addon === undefined
    ? undefined
    : renameFlagsOf((from, to, mode) => addon.renamePaths(from, to, mode));
}

/** RenameFlags over a renameat2 that resolves with 0 or an errno (the addon's; tests inject others). */
export function renameFlagsOf(
  renamePaths: (from: string, to: string, mode: 'noreplace' | 'exchange') => Promise<number>,
): RenameFlags {
  const call = async (
    from: string,
    to: string,
    mode: 'noreplace' | 'exchange',
  ): Promise<'done' | 'exists' | 'missing' | 'unsupported'> => {
    const errno = await renamePaths(from, to, mode);
    if (errno === 0) return 'done';
    const [code, text] = describeErrno(errno);
    if (code === 'EEXIST' && mode === 'noreplace') return 'exists';
    if (code === 'ENOENT' && mode === 'exchange') return 'missing';
    if (UNSUPPORTED.has(code)) return 'unsupported';
    throw new ModelStockError('IO_ERROR', `cannot rename to ${to}: ${code}: ${text}`, { file: from });
  };
  return {
    noReplace: (from, to) => call(from, to, 'noreplace') as Promise<'done' | 'exists' | 'unsupported'>,
    exchange: (a, b) => call(a, b, 'exchange') as Promise<'done' | 'missing' | 'unsupported'>,
  };
}
