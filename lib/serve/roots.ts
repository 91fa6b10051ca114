/**
 * Where a job may read and write. Model references resolve against the `--models` roots in order (an
 * absolute one must lie inside one), through symlinks; everything a model folder links to must lie in
 * a root too, since the library reads a folder's files (config, tokenizer, shards) as they come. `out`
 * is one name inside `--out`. Checked at submit and again when the job starts: a link swapped in
 * between is refused then.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseHubId } from '../hub/reference';
import { hubCacheDir } from '../hub/settings';
import { HttpError } from './errors';

/** Whether `child` is `parent` or lies below it (both absolute and normalised). */
export function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}

/** A reference as the library will be given it: a real path inside a root, or a Hub ID. */
export type ResolvedModel =
  { readonly kind: 'path'; readonly path: string } | { readonly kind: 'hub'; readonly ref: string };

const exists = (p: string): Promise<boolean> =>
  fs.promises.stat(p).then(
    () => true,
    () => false,
  );

const outside = (where: string, what: string): HttpError =>
  new HttpError(403, 'OUTSIDE_ROOTS', `${where}: ${what}`);

/** A reference is echoed in messages only when it cannot name a place outside the roots. */
const shown = (ref: string): string =>
  path.isAbsolute(ref) || ref.split(/[/\\]/).includes('..') ? '' : ` ${JSON.stringify(ref)}`;

export class Roots {
  private constructor(
    /** The --models folders as given (for messages) and their real paths (for every check). */
    readonly models: readonly { readonly given: string; readonly real: string }[],
    readonly out: { readonly given: string; readonly real: string },
    readonly hub: boolean,
  ) {}

  /** Each root must be an existing folder; their real paths are fixed from here on. */
  static async open(models: readonly string[], out: string, hub: boolean): Promise<Roots> {
    const real = async (dir: string, what: string): Promise<{ given: string; real: string }> => {
      let st: fs.Stats;
      let r: string;
      try {
        r = await fs.promises.realpath(dir);
        st = await fs.promises.stat(r);
      } catch (e) {
        throw new Error(`${what} ${dir}: ${(e as Error).message}`);
      }
      if (!st.isDirectory()) throw new Error(`${what} ${dir} is not a folder`);
      return { given: dir, real: r };
    };
    if (models.length === 0) throw new Error('give at least one --models folder');
    const roots = [];
    for (const m of models) roots.push(await real(m, '--models'));
    return new Roots(roots, await real(out, '--out'), hub);
  }

  /** Whether the real path `p` lies in a --models root (list --out there too to merge merges). */
  private readable(p: string): boolean {
    return this.models.some((r) => isInside(p, r.real));
  }

  /**
   * A reference existing under a root (roots in order) is that path; otherwise, with --hub, a Hub ID;
   * otherwise 403. `where` names it in messages ("base", "models[1]").
   */
  async resolveModel(ref: string, where: string): Promise<ResolvedModel> {
    const variants = path.sep === '/' && ref.includes('\\') ? [ref, ref.replace(/\\/g, '/')] : [ref];
    for (const v of variants) {
      const candidates = path.isAbsolute(v)
        ? [path.resolve(v)]
        : this.models.map((r) => {
            const c = path.resolve(r.real, v);
            if (!isInside(c, r.real)) throw outside(where, 'reaches outside the model roots');
            return c;
          });
      for (const c of candidates) {
        if (!(await exists(c))) continue;
        const real = await fs.promises.realpath(c);
        if (!this.readable(real)) throw outside(where, `${shown(ref)} lies outside the model roots`.trim());
        await this.checkLinks(real, where);
        return { kind: 'path', path: real };
      }
    }
    if (this.hub && parseHubId(ref) !== undefined) {
      // The library reads an existing path before a Hub ID: one relative to the server's folder is not ours.
      if (variants.some((v) => fs.existsSync(v)))
        throw outside(where, `${shown(ref)} names a path outside the model roots`.trim());
      return { kind: 'hub', ref };
    }
    throw outside(
      where,
      `${shown(ref)} is not under the model roots${this.hub ? ' and is not a Hub ID (org/name[@revision])' : ''}`.trim(),
    );
  }

  /**
   * Every file the library may read for the model at `real` lies in a root after links are followed: a
   * folder's own entries (its weights, index, config.json, tokenizer files — the library reads no
   * subfolder), or a single file and the config.json beside it.
   */
  private async checkLinks(real: string, where: string): Promise<void> {
    const st = await fs.promises.stat(real);
    const dir = st.isDirectory() ? real : path.dirname(real);
    const names = st.isDirectory() ? await fs.promises.readdir(dir) : ['config.json'];
    for (const name of names) {
      const p = path.join(dir, name);
      const lst = await fs.promises.lstat(p).catch(() => undefined);
      if (lst === undefined || !lst.isSymbolicLink()) continue;
      const target = await fs.promises.realpath(p).catch(() => undefined);
      // A dangling link is no file to read (and fails the merge if it is needed).
      if (target !== undefined && !this.readable(target))
        throw outside(where, `its file ${JSON.stringify(name)} links outside the model roots`);
    }
  }

  /**
   * OUT for a merge: `name`, one path component, inside --out (whose real path must not have changed),
   * not existing yet (409 with the library's BAD_OUTPUT_PATH). Hidden names are refused: staging
   * folders are hidden.
   */
  async outTarget(name: string): Promise<string> {
    if (name === '..' || /[/\\]/.test(name))
      throw outside('out', 'must be one name inside the output folder, not a path');
    // eslint-disable-next-line no-control-regex -- control characters are refused in names
    if (name === '' || name === '.' || name.startsWith('.') || /[\u0000-\u001f\u007f]/.test(name))
      throw new HttpError(400, 'BAD_REQUEST', 'out: a folder name, not empty, not starting with "."');
    if (Buffer.byteLength(name) > 255) throw new HttpError(400, 'BAD_REQUEST', 'out: name too long');
    const real = await fs.promises.realpath(this.out.given).catch(() => undefined);
    if (real !== this.out.real)
      throw outside('out', 'the output folder is no longer the folder the server was started with');
    const target = path.join(real, name);
    if ((await fs.promises.lstat(target).catch(() => undefined)) !== undefined)
      throw new HttpError(409, 'BAD_OUTPUT_PATH', `out ${JSON.stringify(name)} already exists`);
    return target;
  }

  /**
   * `message` for a client: the Hugging Face cache (outside the roots, usually in the operator's home)
   * is named by its role, not its path.
   */
  scrub(message: string): string {
    if (!this.hub) return message;
    const cache = hubCacheDir();
    return cache.length > 1 ? message.split(cache).join('<Hugging Face cache>') : message;
  }
}
