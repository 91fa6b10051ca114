import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelStockError } from '../errors';

/** The file that marks a folder as ours: --overwrite replaces only folders that have it (or are empty). */
export const REPORT_FILE = 'model_stock_report.json';

function realOrResolved(p: string): string {
  // OUT may not exist yet: resolve its nearest existing ancestor through symlinks, then re-append the rest.
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

const inside = (child: string, parent: string): boolean => {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
};

/**
 * Refuses an OUT that is, contains, or lies inside an input model folder, and an existing OUT unless
 * `overwrite` (and then only an empty folder or one a previous merge wrote, never a file or a folder
 * of something else).
 */
export function checkOutputPath(out: string, inputDirs: readonly string[], overwrite: boolean): string {
  const target = realOrResolved(out);
  for (const dir of inputDirs) {
    const d = realOrResolved(dir);
    if (inside(target, d) || inside(d, target)) {
      const how = target === d ? 'is' : inside(target, d) ? 'lies inside' : 'contains';
      throw new ModelStockError(
        'BAD_OUTPUT_PATH',
        `output folder ${out} ${how} the input model folder ${dir}`,
      );
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

/**
 * A temporary folder beside OUT (same filesystem, so the final rename is atomic). `commit` fsyncs it
 * and renames it into place; `discard` removes it. Nothing is left behind on failure.
 */
export class StagingDir {
  private constructor(
    readonly target: string,
    readonly dir: string,
  ) {}

  static async create(target: string): Promise<StagingDir> {
    const parent = path.dirname(target);
    await fs.promises.mkdir(parent, { recursive: true });
    const dir = await fs.promises.mkdtemp(path.join(parent, `.${path.basename(target)}.partial-`));
    return new StagingDir(target, dir);
  }

  async commit(fsync: boolean): Promise<void> {
    if (fsync) await syncPath(this.dir);
    let old: string | undefined;
    if (fs.existsSync(this.target)) {
      // Renaming over a non-empty folder is not allowed: move the old one aside first, then drop it.
      old = `${this.dir}.old`;
      await fs.promises.rename(this.target, old);
    }
    try {
      await fs.promises.rename(this.dir, this.target);
    } catch (e) {
      if (old !== undefined) await fs.promises.rename(old, this.target).catch(() => undefined);
      throw e;
    }
    if (fsync) await syncPath(path.dirname(this.target));
    if (old !== undefined) await fs.promises.rm(old, { recursive: true, force: true });
  }

  async discard(): Promise<void> {
    await fs.promises.rm(this.dir, { recursive: true, force: true });
  }
}

/** fsync of a file or a folder (a folder's entries: new names and renames). */
export async function syncPath(file: string): Promise<void> {
  const fh = await fs.promises.open(file, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes a small file and (optionally) fsyncs it. */
export async function writeFileSynced(
  file: string,
  data: string | Uint8Array,
  fsync: boolean,
): Promise<void> {
  const fh = await fs.promises.open(file, 'wx');
  try {
    await fh.writeFile(data);
    if (fsync) await fh.sync();
  } finally {
    await fh.close();
  }
}
