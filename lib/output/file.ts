import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelStockError } from '../errors';
import { siblingName, syncPath } from './atomic';
import { lstatIfAny, nativeRenameFlags, onPath, type RenameFlags } from './fsops';
import { place, type Placement } from './place';

/**
 * Puts a file at `target` whole or not at all: `write` fills a temporary file beside it (a new file it
 * is given), which then takes the name through `place` (lib/output/place.ts): never over anything that
 * `replaceable` does not accept when asked at that moment, never over a folder or a link. Returns the
 * placement: `finish()` deletes what it displaced, `undo()` takes it back out. `name`: how errors name
 * the target (the path the user gave).
 */
export async function placeFile(
  target: string,
  write: (temporary: string) => Promise<void>,
  o: {
    name: string;
    label: string;
    fsync: boolean;
    replaceable?: ((file: string) => Promise<boolean>) | undefined;
    flags?: RenameFlags | undefined;
  },
): Promise<Placement> {
  const temporary = siblingName(target, 'tmp');
  let foreign = false;
  try {
    try {
      await write(temporary);
      if (o.fsync) await syncPath(temporary);
    } catch (cause) {
      // Name the user's path, not the temporary file beside it.
      const why =
        cause instanceof ModelStockError
          ? cause.message.replace(`${temporary}: `, '')
          : (cause as Error).message;
      throw new ModelStockError('IO_ERROR', `cannot write: ${why}`, { file: o.name, cause });
    }
    const placement = await place(temporary, target, {
      kind: 'file',
      label: o.label,
      replaceable: o.replaceable,
      flags: 'flags' in o ? o.flags : nativeRenameFlags(),
      onForeign: () => (foreign = true),
    });
    if (o.fsync) await syncPath(path.dirname(target));
    return placement;
  } catch (e) {
    if (!foreign) await fs.promises.rm(temporary, { force: true }).catch(() => undefined);
    throw e;
  }
}

/** A regular file (not a link, not a folder): what --overwrite may replace. */
async function isRegularFile(file: string): Promise<boolean> {
  return (await lstatIfAny(file))?.isFile() === true;
}

/**
 * Writes one file whole or not at all (placeFile). Without `overwrite` an existing file is never
 * replaced, unless `replaceable` says it may go (an earlier picture or report); with it, a regular file
 * is (never a folder, a link or anything else).
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
  const st = await lstatIfAny(file);
  if (st !== undefined && !st.isFile())
    throw new ModelStockError('BAD_OUTPUT_PATH', 'exists and is not a regular file; refusing to replace it', {
      file,
    });
  const replaceable = opts.overwrite ? isRegularFile : opts.replaceable;
  if (st !== undefined && (replaceable === undefined || !(await replaceable(file))))
    throw new ModelStockError('BAD_OUTPUT_PATH', 'already exists (pass --overwrite to replace it)', { file });
  const placement = await placeFile(
    file,
    (temporary) =>
      onPath(temporary, 'cannot write', async () => {
        const fh = await fs.promises.open(temporary, 'wx');
        try {
          await fh.writeFile(data);
        } finally {
          await fh.close();
        }
      }),
    { name: file, label: file, fsync: opts.fsync, replaceable },
  );
  await placement.finish().catch(() => undefined);
}
