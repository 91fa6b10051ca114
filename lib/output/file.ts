import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelStockError } from '../errors';
import { syncPath } from './atomic';

/**
 * Writes one file whole or not at all: the bytes go to a temporary file beside it, then take its
 * name. Without `overwrite` an existing file is never replaced — the name is taken with link(2),
 * which fails rather than clobber a file that appeared meanwhile; with it, rename(2) replaces a
 * regular file (never a folder or anything else).
 */
export async function writeFileAtomic(
  file: string,
  data: string | Uint8Array,
  opts: {
    overwrite: boolean;
    fsync: boolean;
    /** An existing file this says may go (an earlier picture or report) is replaced without `overwrite`. */
    replaceable?: (file: string) => Promise<boolean>;
  },
): Promise<void> {
  const st = await fs.promises.lstat(file).catch(() => undefined);
  const overwrite =
    opts.overwrite ||
    (st?.isFile() === true && opts.replaceable !== undefined && (await opts.replaceable(file)));
  if (st !== undefined && !overwrite)
    throw new ModelStockError('BAD_OUTPUT_PATH', 'already exists (pass --overwrite to replace it)', { file });
  if (st !== undefined && !st.isFile())
    throw new ModelStockError('BAD_OUTPUT_PATH', 'exists and is not a regular file; refusing to replace it', {
      file,
    });

  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${crypto.randomBytes(6).toString('hex')}.partial`);
  const io = (e: unknown): ModelStockError =>
    e instanceof ModelStockError
      ? e
      : new ModelStockError('IO_ERROR', (e as Error).message, { file, cause: e });
  try {
    const fh = await fs.promises.open(tmp, 'wx');
    try {
      await fh.writeFile(data);
      if (opts.fsync) await fh.sync();
    } finally {
      await fh.close();
    }
    if (overwrite) await fs.promises.rename(tmp, file);
    else {
      try {
        await fs.promises.link(tmp, file);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EEXIST')
          throw new ModelStockError('BAD_OUTPUT_PATH', 'already exists (pass --overwrite to replace it)', {
            file,
          });
        if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw e;
        await writeNew(file, data, opts.fsync);
      }
      await fs.promises.unlink(tmp);
    }
    if (opts.fsync) await syncPath(dir);
  } catch (e) {
    await fs.promises.unlink(tmp).catch(() => undefined);
    throw io(e);
  }
}

/** For filesystems without hard links: an exclusive create, removed again if writing it fails. */
async function writeNew(file: string, data: string | Uint8Array, fsync: boolean): Promise<void> {
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(file, 'wx');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST')
      throw new ModelStockError('BAD_OUTPUT_PATH', 'already exists (pass --overwrite to replace it)', {
        file,
      });
    throw e;
  }
  try {
    await fh.writeFile(data);
    if (fsync) await fh.sync();
  } catch (e) {
    await fh.close().catch(() => undefined);
    // Opened with O_EXCL just above: this file is ours to remove.
    await fs.promises.unlink(file).catch(() => undefined);
    throw e;
  }
  await fh.close();
}
