/**
 * Puts a finished entry (the staging folder, the report's temporary file) at its final path without
 * ever destroying what was not checked, even when another program or another merge writes there at
 * the same time.
 *
 * - Nothing there: renameat2(RENAME_NOREPLACE), which fails if anything appeared by then. Where the file
 *   system refuses the flag, or without the addon: first claim the path with an entry only we can create
 *   (mkdir, or a hard link / O_EXCL file), then rename over our claim. rename(2) replaces a folder only
 *   when it is empty, so anything put into a claimed folder survives and the commit fails instead.
 * - Something there that may be replaced (`replaceable`: an empty folder or an earlier output):
 *   renameat2(RENAME_EXCHANGE) swaps ours in, so the path is never absent; the entry swapped out is
 *   checked again and swapped back if it changed in between, else deleted by `finish()`. Without the
 *   flag: the old entry is renamed aside, checked, and ours renamed in; the path is briefly absent, and
 *   a crash in that moment leaves the old entry at `<from>.old`.
 */
import * as fs from 'node:fs';
import { ModelStockError } from '../errors';
import { errnoOf, lstatIfAny, onPath, type RenameFlags } from './fsops';

export type EntryKind = 'folder' | 'file';

export interface PlaceOptions {
  readonly kind: EntryKind;
  /** How messages name the target: "output folder ./out", "report ./r.json". */
  readonly label: string;
  /**
   * Whether an existing entry may be replaced; asked of the target before the swap and of the entry
   * swapped out after it. Undefined: an existing entry is never replaced.
   */
  readonly replaceable?: (entry: string) => Promise<boolean>;
  /** renameat2's flags; undefined when the addon did not load. */
  readonly flags: RenameFlags | undefined;
  /** The target is our claim (see `claim`), taken earlier: rename over it. */
  readonly claimed?: Claim;
  /** Called when `from` holds something that is not ours any more (a swap back failed): never delete it. */
  readonly onForeign?: () => void;
}

export interface Placement {
  /** Deletes what the placement displaced (an earlier output), if anything. */
  finish(): Promise<void>;
  /** Takes ours out again and puts back what it displaced, as far as the platform allows. */
  undo(): Promise<void>;
}

/** An empty entry created at a path so that no one else can create one there. */
export interface Claim {
  readonly path: string;
  readonly ino: number;
  /** Removes the claim if it is still ours and still empty. */
  release(): Promise<void>;
}

const refused = (message: string): ModelStockError => new ModelStockError('BAD_OUTPUT_PATH', message);

async function remove(entry: string, kind: EntryKind): Promise<void> {
  await onPath(entry, 'cannot remove', () =>
    kind === 'folder'
      ? fs.promises.rm(entry, { recursive: true, force: true })
      : fs.promises.rm(entry, { force: true }),
  );
}

/** Whether `entry` is still the inode `ino` (ours). */
async function holds(entry: string, ino: number): Promise<boolean> {
  return (await lstatIfAny(entry))?.ino === ino;
}

/**
 * Creates an empty folder or file at `to` if nothing is there (undefined otherwise). The folder gets
 * mode 0777 & ~umask, as mkdir(1) gives.
 */
export async function claim(to: string, kind: EntryKind): Promise<Claim | undefined> {
  try {
    if (kind === 'folder') await fs.promises.mkdir(to);
    else await (await fs.promises.open(to, 'wx')).close();
  } catch (e) {
    if (errnoOf(e) === 'EEXIST') return undefined;
    throw new ModelStockError('IO_ERROR', `cannot create: ${(e as Error).message}`, { file: to, cause: e });
  }
  const { ino } = await onPath(to, 'cannot inspect', () => fs.promises.lstat(to));
  return {
    path: to,
    ino,
    async release() {
      const st = await lstatIfAny(to).catch(() => undefined);
      if (st?.ino !== ino) return;
      // rmdir fails on a folder someone wrote into, and an empty file holds nothing: only our claim goes.
      if (kind === 'folder') await fs.promises.rmdir(to).catch(() => undefined);
      else if (st.size === 0) await fs.promises.rm(to, { force: true }).catch(() => undefined);
    },
  };
}

/** Renames `from` over our claim at `to`; `exists` when what is there is no longer only our claim. */
async function renameOverClaim(
  from: string,
  to: string,
  held: Claim,
  kind: EntryKind,
): Promise<'done' | 'exists'> {
  if (kind === 'file' && !(await holds(to, held.ino))) return 'exists';
  try {
    await fs.promises.rename(from, to);
    return 'done';
  } catch (e) {
    const code = errnoOf(e);
    // A folder put in place of (or files put into) our claim: theirs now.
    if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOTDIR' || code === 'EISDIR') return 'exists';
    await held.release();
    throw new ModelStockError('IO_ERROR', `cannot rename to ${to}: ${(e as Error).message}`, {
      file: from,
      cause: e,
    });
  }
}

/** Renames `from` to `to` unless something is at `to` by then (`exists`). */
async function placeNew(from: string, to: string, o: PlaceOptions): Promise<'done' | 'exists'> {
  if (o.flags !== undefined) {
    const r = await o.flags.noReplace(from, to);
    if (r !== 'unsupported') return r;
  }
  if (o.kind === 'file') {
    // A hard link is created only where nothing is, with our bytes already in it.
    try {
      await fs.promises.link(from, to);
      await onPath(from, 'cannot remove', () => fs.promises.rm(from));
      return 'done';
    } catch (e) {
      if (errnoOf(e) === 'EEXIST') return 'exists';
      if (e instanceof ModelStockError) throw e;
      // No hard links on this file system (EPERM, ENOTSUP, …): claim with an exclusive create instead.
    }
  }
  const held = await claim(to, o.kind);
  return held === undefined ? 'exists' : renameOverClaim(from, to, held, o.kind);
}

function fresh(to: string, ino: number, kind: EntryKind): Placement {
  return {
    finish: async () => undefined,
    undo: async () => {
      if (await holds(to, ino)) await remove(to, kind);
    },
  };
}

/** Moves `from` to `to` as described at the top of this file. */
export async function place(from: string, to: string, o: PlaceOptions): Promise<Placement> {
  const ours = (await onPath(from, 'cannot inspect', () => fs.promises.lstat(from))).ino;
  if (o.claimed !== undefined) {
    if ((await renameOverClaim(from, to, o.claimed, o.kind)) === 'exists') {
      throw refused(`${o.label} was written to by something else during the merge and was left as it is`);
    }
    return fresh(to, ours, o.kind);
  }
  const replaceable = o.replaceable;
  const appeared = (): ModelStockError =>
    refused(
      `${o.label} was created by something else during the merge (another merge?) and was left as it is`,
    );
  for (let attempt = 0; attempt < 3; attempt++) {
    if ((await lstatIfAny(to)) === undefined) {
      if ((await placeNew(from, to, o)) === 'done') return fresh(to, ours, o.kind);
      if (replaceable === undefined) throw appeared();
      continue; // look at what appeared
    }
    if (replaceable === undefined) throw appeared();
    if (!(await replaceable(to))) {
      throw refused(
        `${o.label} changed during the merge and may no longer be replaced; it was left as it is`,
      );
    }
    const swapped = o.flags === undefined ? 'unsupported' : await o.flags.exchange(from, to);
    if (swapped === 'missing') continue;
    if (swapped === 'done') return checkSwapped(from, to, ours, o, replaceable);
    const aside = `${from}.old`;
    try {
      await fs.promises.rename(to, aside);
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') continue;
      throw new ModelStockError('IO_ERROR', `cannot move aside: ${(e as Error).message}`, {
        file: to,
        cause: e,
      });
    }
    if (!(await replaceable(aside))) {
      const back = await fs.promises.rename(aside, to).then(
        () => 'it was left as it is',
        () => `what it held is now at ${aside}`,
      );
      throw refused(`${o.label} changed during the commit and may no longer be replaced; ${back}`);
    }
    if ((await placeNew(from, to, { ...o, flags: undefined })) === 'exists') {
      throw refused(
        `${o.label} was created again by something else during the commit and was left as it is; ` +
          `what it held before is kept at ${aside}`,
      );
    }
    return {
      finish: () => remove(aside, o.kind),
      undo: async () => {
        if (await holds(to, ours)) await remove(to, o.kind);
        await fs.promises.rename(aside, to).catch(() => undefined);
      },
    };
  }
  throw refused(`${o.label} kept changing during the commit; it was left as it is`);
}

/** After an exchange: `from` holds what was at `to`. It must still be replaceable, else it goes back. */
async function checkSwapped(
  from: string,
  to: string,
  ours: number,
  o: PlaceOptions,
  replaceable: (entry: string) => Promise<boolean>,
): Promise<Placement> {
  const flags = o.flags!;
  if (!(await replaceable(from))) {
    if ((await flags.exchange(from, to).catch(() => 'failed')) !== 'done') {
      o.onForeign?.();
      throw refused(
        `${o.label} changed during the commit; what it held was moved to ${from} and could not be put back`,
      );
    }
    throw refused(`${o.label} changed during the commit and may no longer be replaced; it was left as it is`);
  }
  return {
    finish: () => remove(from, o.kind),
    undo: async () => {
      if (!(await holds(to, ours))) return;
      if ((await flags.exchange(from, to).catch(() => 'failed')) === 'done') await remove(from, o.kind);
    },
  };
}
