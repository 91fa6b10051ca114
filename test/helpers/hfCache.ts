/**
 * Hugging Face cache fixtures: a model folder laid out exactly as huggingface_hub lays out a download,
 * for tests of anything that reads Hub IDs from the cache (point HF_HUB_CACHE, or `hub.cacheDir`, at
 * the folder).
 *
 *   <cacheDir>/models--org--name/blobs/<sha256 | git oid>       the bytes (LFS files by sha256, as the Hub)
 *   <cacheDir>/models--org--name/snapshots/<commit>/<file>      relative symlinks → ../../blobs/…
 *   <cacheDir>/models--org--name/refs/<revision>                the commit
 *
 *   const cache = await makeTmpDir();
 *   const m = await addToHfCache(cache, 'org/base', baseFolder);        // refs/main → m.commit
 *   await addToHfCache(cache, 'org/base', otherFolder, { revision: 'v2' });
 *   resolveModelRef('org/base', { cacheDir: cache, offline: true });    // → m.snapshot
 *
 * `repoFiles` lists a folder the way the Hub lists a repository (sizes, git oids, LFS sha256); the
 * mock Hub (test/helpers/mockHub.ts) serves the same listing.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface RepoFileFixture {
  readonly name: string;
  readonly bytes: Buffer;
  /** git blob oid: sha1("blob <size>\0" + bytes). */
  readonly gitOid: string;
  /** Set for files the Hub stores with LFS (weights, SentencePiece models). */
  readonly sha256: string | undefined;
  /** The blob's name in the cache: sha256 for LFS files, else the git oid. */
  readonly blob: string;
}

export function gitBlobOid(bytes: Uint8Array): string {
  return crypto.createHash('sha1').update(`blob ${bytes.byteLength}\0`).update(bytes).digest('hex');
}

const LFS = /\.(safetensors|bin|pt|gguf|model)$/;

/** Every file directly in `dir` (sorted), as the Hub would list it. */
export function repoFiles(dir: string): RepoFileFixture[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => e.name)
    .sort()
    .map((name) => {
      const bytes = fs.readFileSync(path.join(dir, name));
      const gitOid = gitBlobOid(bytes);
      const sha256 = LFS.test(name) ? crypto.createHash('sha256').update(bytes).digest('hex') : undefined;
      return { name, bytes, gitOid, sha256, blob: sha256 ?? gitOid };
    });
}

/** A deterministic commit hash for a set of files (what a fixture calls its commit). */
export function fixtureCommit(files: readonly RepoFileFixture[], salt = ''): string {
  const h = crypto.createHash('sha1').update(salt);
  for (const f of files) h.update(`${f.name}\0${f.blob}\0`);
  return h.digest('hex');
}

export interface HfCacheModel {
  readonly repo: string;
  readonly commit: string;
  /** <cacheDir>/models--org--name */
  readonly storage: string;
  /** <storage>/snapshots/<commit> */
  readonly snapshot: string;
  readonly files: readonly RepoFileFixture[];
}

/**
 * Adds `modelDir`'s files to the cache as revision `revision` (default `main`; a 40-hex revision is
 * a commit and writes no ref) of `repo`. `only` picks files (e.g. to fake a partial download).
 */
export async function addToHfCache(
  cacheDir: string,
  repo: string,
  modelDir: string,
  opts: { revision?: string; commit?: string; only?: (file: string) => boolean } = {},
): Promise<HfCacheModel> {
  const files = repoFiles(modelDir).filter((f) => opts.only?.(f.name) ?? true);
  const revision = opts.revision ?? 'main';
  const commit = opts.commit ?? (/^[0-9a-f]{40}$/.test(revision) ? revision : fixtureCommit(files, repo));
  const storage = path.join(cacheDir, ['models', ...repo.split('/')].join('--'));
  const snapshot = path.join(storage, 'snapshots', commit);
  await fs.promises.mkdir(path.join(storage, 'blobs'), { recursive: true });
  await fs.promises.mkdir(snapshot, { recursive: true });
  for (const f of files) {
    const blob = path.join(storage, 'blobs', f.blob);
    if (!fs.existsSync(blob)) await fs.promises.writeFile(blob, f.bytes);
    const pointer = path.join(snapshot, f.name);
    await fs.promises.rm(pointer, { force: true });
    await fs.promises.symlink(path.relative(snapshot, blob), pointer);
  }
  if (revision !== commit) {
    const ref = path.join(storage, 'refs', revision);
    await fs.promises.mkdir(path.dirname(ref), { recursive: true });
    await fs.promises.writeFile(ref, commit);
  }
  return { repo, commit, storage, snapshot, files };
}
