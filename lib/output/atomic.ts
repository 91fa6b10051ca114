import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelStockError } from '../errors';
import { errnoOf, lstatIfAny, nativeRenameFlags, onPath, type RenameFlags } from './fsops';
import { claim, place, type Claim } from './place';
import { OWNER_FILE, ownerTag, recordOwner, sweepStaleStaging } from './staleStaging';

/** The file that marks a folder as ours: --overwrite replaces only folders that have it (or are empty). */
export const REPORT_FILE = 'model_stock_report.json';

/** `p` with symlinks resolved; for a path that does not exist yet, its nearest existing ancestor's. */
export function realOrResolved(p: string): string {
  let cur = path.resolve(p);
  const rest: string[] = [];
  for (;;) {
    try {
      return path.join(fs.realpathSync(cur), ...rest.reverse());
    } catch {
      const parent = path.dirname(cur);
      if (parent === cur) return path.join(cur, ...rest.reverse());
      rest.push(path.basename(cur));
      cur = parent;
    }
  }
}

export const inside = (child: string, parent: string): boolean => {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
};

/** An empty folder, or one an earlier merge wrote (it has our report): what --overwrite may replace. */
export async function isReplaceableOutput(dir: string): Promise<boolean> {
  const st = await lstatIfAny(dir);
  if (st === undefined || !st.isDirectory()) return false;
  const entries = await onPath(dir, 'cannot list', () => fs.promises.readdir(dir));
  return entries.length === 0 || entries.includes(REPORT_FILE);
}

/**
 * Refuses an OUT that is, contains, or lies inside an input (a model folder, or a single weight file:
 * OUT may sit beside one), and an existing OUT unless `overwrite` (and then only an empty folder or one
 * a previous merge wrote, never a file or a folder of something else).
 */
export function checkOutputPath(out: string, inputs: readonly string[], overwrite: boolean): string {
  const target = realOrResolved(out);
  for (const input of inputs) {
    const d = realOrResolved(input);
    if (inside(target, d) || inside(d, target)) {
      const how = target === d ? 'is' : inside(target, d) ? 'lies inside' : 'contains';
      const what =
        fs.statSync(d, { throwIfNoEntry: false })?.isDirectory() === false ? 'file' : 'model folder';
      throw new ModelStockError('BAD_OUTPUT_PATH', `output folder ${out} ${how} the input ${what} ${input}`);
    }
  }
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(target);
  } catch {
    st = undefined;
  }
  if (st !== undefined) {
    if (!overwrite) {
      throw new ModelStockError(
        'BAD_OUTPUT_PATH',
        `output ${out} already exists (pass --overwrite to replace it)`,
      );
    }
    if (!st.isDirectory()) {
      throw new ModelStockError(
        'BAD_OUTPUT_PATH',
        `output ${out} exists and is not a folder; refusing to replace it`,
      );
    }
    const entries = fs.readdirSync(target);
    if (entries.length > 0 && !entries.includes(REPORT_FILE)) {
      throw new ModelStockError(
        'BAD_OUTPUT_PATH',
        `output folder ${out} is not empty and was not written by model-stock (no ${REPORT_FILE}); refusing to replace it`,
      );
    }
  }
  return target;
}

/** A fresh hidden name beside `target`: `.<name>.<tag>-<random>`. */
export function siblingName(target: string, tag: string): string {
  const suffix = crypto.randomBytes(6).toString('base64url');
  return path.join(path.dirname(target), `.${path.basename(target)}.${tag}-${suffix}`);
}

/**
 * The folder a merge builds its output in, beside OUT (same file system, so the commit is a rename).
 * `commit` puts it at OUT without ever replacing what it did not check (lib/output/place.ts); `discard`
 * removes it. It holds an owner record until the commit, so that a later merge beside the same OUT
 * can remove it if this process is killed (lib/output/staleStaging.ts). Without the addon (no renameat2), OUT itself is claimed when the staging folder is made —
 * an empty folder only one merge can create — so concurrent merges to one OUT fail at once, and the
 * commit renames over that claim.
 */
export class StagingDir {
  private committed = false;
  /** Set when the staging path holds something that is not ours (a failed swap back): never deleted. */
  private foreign = false;

  private constructor(
    readonly target: string,
    readonly dir: string,
    private readonly overwrite: boolean,
    private readonly flags: RenameFlags | undefined,
    private readonly claimed: Claim | undefined,
  ) {}

  /**
   * `flags`: renameat2 (default: the addon's, when it loads); tests pass others to stand for file
   * systems that refuse the flags.
   */
  static async create(
    target: string,
    opts: {
      overwrite: boolean;
      flags?: RenameFlags | undefined;
      /** Told of each staging folder a dead merge left and this one removed. */
      onWarning?: ((message: string) => void) | undefined;
    },
  ): Promise<StagingDir> {
    const flags = 'flags' in opts ? opts.flags : nativeRenameFlags();
    const parent = path.dirname(target);
    await onPath(parent, 'cannot create the folder', () => fs.promises.mkdir(parent, { recursive: true }));
    for (const { dir, pid } of await sweepStaleStaging(target)) {
      opts.onWarning?.(`removed ${dir}, the staging folder of an earlier merge (pid ${pid}) that was killed`);
    }
    let claimed: Claim | undefined;
    if (flags === undefined && !opts.overwrite) {
      claimed = await claim(target, 'folder');
      if (claimed === undefined) {
        throw new ModelStockError(
          'BAD_OUTPUT_PATH',
          `output ${target} already exists (pass --overwrite to replace it)`,
        );
      }
    }
    try {
      // mkdir, not mkdtemp: the folder becomes OUT, which gets 0777 & ~umask like any mkdir (mkdtemp: 0700).
      for (;;) {
        // The name says whose it is too: a folder killed before its record exists is still swept.
        const dir = siblingName(target, 'partial') + ownerTag();
        try {
          await fs.promises.mkdir(dir);
        } catch (e) {
          if (errnoOf(e) !== 'EEXIST') {
            throw new ModelStockError(
              'IO_ERROR',
              `cannot create the staging folder: ${(e as Error).message}`,
              {
                file: dir,
                cause: e,
              },
            );
          }
          continue;
        }
        // The record that lets a later merge remove this folder if this process is killed.
        await recordOwner(dir).catch(async (e: unknown) => {
          await fs.promises.rm(dir, { recursive: true, force: true }).catch(() => undefined);
          throw new ModelStockError(
            'IO_ERROR',
            `cannot write to the staging folder: ${(e as Error).message}`,
            { file: dir, cause: e },
          );
        });
        return new StagingDir(target, dir, opts.overwrite, flags, claimed);
      }
    } catch (e) {
      await claimed?.release();
      throw e;
    }
  }

  /**
   * fsyncs the folder and puts it at OUT. Returns warnings for what fails once OUT is in place (the
   * parent folder's fsync, deleting the earlier output it replaced): the merge itself stands.
   */
  async commit(fsync: boolean): Promise<string[]> {
    await onPath(this.dir, 'cannot remove the owner record', () =>
      fs.promises.rm(path.join(this.dir, OWNER_FILE), { force: true }),
    );
    if (fsync) await syncPath(this.dir);
    const placement = await place(this.dir, this.target, {
      kind: 'folder',
      label: `output folder ${this.target}`,
      replaceable: this.overwrite ? isReplaceableOutput : undefined,
      flags: this.flags,
      claimed: this.claimed,
      onForeign: () => (this.foreign = true),
    });
    this.committed = true;
    // OUT is in place now: what fails from here is said, and the merge stands.
    const warnings: string[] = [];
    if (fsync) {
      await syncPath(path.dirname(this.target)).catch((e: unknown) =>
        warnings.push(
          `${this.target} is in place but its folder entry may not survive a crash: ${(e as Error).message}`,
        ),
      );
    }
    await placement
      .finish()
      .catch((e: unknown) =>
        warnings.push(
          `the earlier output replaced at ${this.target} could not be deleted: ${(e as Error).message}`,
        ),
      );
    return warnings;
  }

  async discard(): Promise<void> {
    if (this.committed) return;
    if (!this.foreign)
      await fs.promises.rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
    await this.claimed?.release();
  }
}

/** fsync of a file or a folder (a folder's entries: new names and renames). */
export async function syncPath(file: string): Promise<void> {
  await onPath(file, 'fsync failed', async () => {
    const fh = await fs.promises.open(file, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  });
}

/** Writes a small file that must not exist yet and (optionally) fsyncs it. */
export async function writeFileSynced(
  file: string,
  data: string | Uint8Array,
  fsync: boolean,
): Promise<void> {
  await onPath(file, 'cannot write', async () => {
    const fh = await fs.promises.open(file, 'wx');
    try {
      await fh.writeFile(data);
      if (fsync) await fh.sync();
    } finally {
      await fh.close();
    }
  });
}

/**
 * Copies a file (a symlink's target, as a real file: Hugging Face snapshots are links into blobs/) to
 * `to`, which must not exist yet, and (optionally) fsyncs the copy.
 */
export async function copyFileSynced(from: string, to: string, fsync: boolean): Promise<void> {
  await onPath(to, `cannot copy ${from}`, () => fs.promises.copyFile(from, to, fs.constants.COPYFILE_EXCL));
  if (fsync) await syncPath(to);
}
