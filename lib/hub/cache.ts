/**
 * The Hugging Face cache as huggingface_hub lays it out (file_download.py):
 *
 *   <cache>/models--org--name/blobs/<etag>                 file contents, named by sha256 (LFS) or git oid
 *   <cache>/models--org--name/snapshots/<commit>/<file>    relative symlinks → ../../blobs/<etag>
 *   <cache>/models--org--name/refs/<revision>              the commit a branch or tag pointed at
 *   <cache>/.locks/models--org--name/<etag>.lock           flock'd while a blob is written
 *
 * Reading follows symlinks (or plain files, where a platform had no symlinks); writing keeps the same
 * conventions so Python tools and this library share one cache.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chooseWeights, indexShards } from './files';
import { COMMIT_HASH, repoFolderName, type HubModelId } from './reference';

export function storageFolder(cacheDir: string, repo: string): string {
  return path.join(cacheDir, repoFolderName(repo));
}

export function lockPath(cacheDir: string, repo: string, blob: string): string {
  return path.join(cacheDir, '.locks', repoFolderName(repo), `${blob}.lock`);
}

/** The commit `refs/<revision>` records, if it is there and well-formed. */
export async function readRef(storage: string, revision: string): Promise<string | undefined> {
  try {
    const text = (await fs.promises.readFile(path.join(storage, 'refs', revision), 'utf8')).trim();
    return COMMIT_HASH.test(text) ? text : undefined;
  } catch {
    return undefined;
  }
}

/** Records revision → commit atomically (temp file + rename), only when it changed. */
export async function writeRef(storage: string, revision: string, commit: string): Promise<void> {
  if (revision === commit || (await readRef(storage, revision)) === commit) return;
  const file = path.join(storage, 'refs', revision);
  await fs.promises.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  try {
    await fs.promises.writeFile(tmp, commit);
    await fs.promises.rename(tmp, file);
  } finally {
    await fs.promises.rm(tmp, { force: true });
  }
}

async function isFile(p: string): Promise<boolean> {
  return fs.promises.stat(p).then(
    (s) => s.isFile(),
    () => false,
  );
}

/**
 * Whether a snapshot folder holds weights openCheckpoint can open: an index and every shard it names
 * (symlinks followed, so a pointer to a missing blob counts as missing), or one weight file. Returns
 * what is missing otherwise.
 */
export async function snapshotWeights(dir: string): Promise<{ ok: true } | { ok: false; missing: string }> {
  let names: string[];
  try {
    names = await fs.promises.readdir(dir);
  } catch {
    return { ok: false, missing: 'no snapshot folder' };
  }
  const present = new Set<string>();
  for (const n of names) if (await isFile(path.join(dir, n))) present.add(n);
  const choice = chooseWeights(present);
  if (choice.kind === 'single') return { ok: true };
  if (choice.kind === 'none') return { ok: false, missing: choice.why };
  let shards: string[];
  try {
    shards = indexShards(await fs.promises.readFile(path.join(dir, choice.file), 'utf8'), choice.file);
  } catch (e) {
    return { ok: false, missing: (e as Error).message };
  }
  const absent = shards.filter((s) => !present.has(s));
  return absent.length === 0
    ? { ok: true }
    : {
        ok: false,
        missing: `${absent.length} of ${shards.length} shards (${absent.slice(0, 2).join(', ')}${absent.length > 2 ? ', …' : ''})`,
      };
}

export type CacheLookup =
  | { readonly found: true; readonly commit: string; readonly dir: string }
  | { readonly found: false; readonly why: string };

/** The cached snapshot a Hub ID names, if it is complete: a commit directly, else through refs/. */
export async function findCachedSnapshot(cacheDir: string, id: HubModelId): Promise<CacheLookup> {
  const storage = storageFolder(cacheDir, id.repo);
  if (
    !(await fs.promises.stat(storage).then(
      (s) => s.isDirectory(),
      () => false,
    ))
  ) {
    return { found: false, why: `${storage} does not exist` };
  }
  const commit = COMMIT_HASH.test(id.revision) ? id.revision : await readRef(storage, id.revision);
  if (commit === undefined) {
    return { found: false, why: `${path.join(storage, 'refs', id.revision)} does not exist` };
  }
  const dir = path.join(storage, 'snapshots', commit);
  const weights = await snapshotWeights(dir);
  return weights.ok
    ? { found: true, commit, dir }
    : { found: false, why: `snapshot ${dir} is incomplete: ${weights.missing}` };
}

/**
 * Points `pointer` at `blob` with a relative symlink, as huggingface_hub does; where symlinks are not
 * allowed (Windows without developer mode) the blob is copied instead (atomically, so a reader never
 * sees a partial pointer).
 */
export async function linkPointer(blob: string, pointer: string): Promise<void> {
  await fs.promises.mkdir(path.dirname(pointer), { recursive: true });
  // A pointer left dangling (its blob deleted by a cache cleaner) is replaced, as Python replaces it.
  const dangling = await fs.promises.lstat(pointer).then(
    () =>
      fs.promises.stat(pointer).then(
        () => false,
        () => true,
      ),
    () => false,
  );
  if (dangling) await fs.promises.rm(pointer, { force: true });
  const target = path.relative(path.dirname(pointer), blob);
  try {
    await fs.promises.symlink(target, pointer);
    return;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') {
      // Another process made it between our check and now; fine when it points at the same bytes.
      const [a, b] = await Promise.all([fs.promises.realpath(pointer), fs.promises.realpath(blob)]).catch(
        () => ['', 'x'],
      );
      if (a === b) return;
      throw e;
    }
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw e;
  }
  const tmp = `${pointer}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  try {
    await fs.promises.copyFile(blob, tmp);
    await fs.promises.rename(tmp, pointer);
  } finally {
    await fs.promises.rm(tmp, { force: true });
  }
}
