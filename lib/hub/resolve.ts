/**
 * `resolveModelRef`: a model reference as the user wrote it → a local folder openCheckpoint can open.
 * Existing paths are returned as they are. Hub IDs resolve through the cache; online, the Hub is asked
 * which commit the revision names (as huggingface_hub does, so a moved branch is followed) and
 * whatever the merge needs and the cache lacks is downloaded into it.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelStockError } from '../errors';
import { findCachedSnapshot, linkPointer, lockPath, storageFolder, writeRef } from './cache';
import { HubClient, HubRequestError, type RepoFile, type RevisionInfo } from './client';
import { SIDE_FILES, chooseWeights, indexShards } from './files';
import { withFileLock } from './lock';
import { cancelledError as cancelled } from '../errors';
import { classifyRef, loraError, type HubModelId } from './reference';
import { hubSettings, type HubOptions, type HubSettings } from './settings';

export async function resolveModelRef(ref: string, options: HubOptions = {}): Promise<string> {
  // The only paths classifyRef asks about, stat'ed without blocking the event loop.
  const candidates = [ref, ...(path.sep === '/' && ref.includes('\\') ? [ref.replace(/\\/g, '/')] : [])];
  const existing = new Set<string>();
  for (const p of candidates) if (await exists(p)) existing.add(p);
  const c = classifyRef(ref, (p) => existing.has(p));
  switch (c.kind) {
    case 'path':
      return c.path;
    case 'lora':
      throw loraError(ref, c.model, c.lora);
    case 'missing':
      // Neither a path nor a Hub ID: openCheckpoint names the missing path.
      return c.path;
    case 'hub':
      return resolveHubModel(ref, c.id, options);
  }
}

/**
 * A model reference as a merge's input: one folder, or for MODEL+ADAPTER (mergekit's syntax, split on
 * its one `+`) the adapter's folder and the folder of the model it is applied to.
 */
export async function resolveInputRef(
  ref: string,
  options: HubOptions = {},
): Promise<{ readonly path: string; readonly over?: { readonly ref: string; readonly path: string } }> {
  const candidates = [ref, ...(path.sep === '/' && ref.includes('\\') ? [ref.replace(/\\/g, '/')] : [])];
  const existing = new Set<string>();
  for (const p of candidates) if (await exists(p)) existing.add(p);
  const c = classifyRef(ref, (p) => existing.has(p));
  if (c.kind !== 'lora') return { path: await resolveModelRef(ref, options) };
  let model = c.model;
  let lora = c.lora;
  if (lora.includes('+')) {
    // Paths may hold "+" themselves: the split whose both sides exist, else it is ambiguous.
    const splits: [string, string][] = [];
    for (let at = ref.indexOf('+'); at > 0; at = ref.indexOf('+', at + 1)) {
      const [m, l] = [ref.slice(0, at), ref.slice(at + 1)];
      if ((await exists(m)) && (await exists(l))) splits.push([m, l]);
    }
    if (splits.length !== 1) {
      throw new ModelStockError(
        'BAD_CONFIG',
        `"${ref}": MODEL+ADAPTER with more than one "+" needs exactly one split whose both sides are existing ` +
          `paths (${splits.length} found); one adapter is applied per model`,
      );
    }
    [model, lora] = splits[0]!;
  }
  const over = { ref: model, path: await resolveModelRef(model, options) };
  return { path: await resolveModelRef(lora, options), over };
}

function fetchCommand(id: HubModelId): string {
  return `huggingface-cli download ${id.repo}${id.explicitRevision ? ` --revision ${id.revision}` : ''}`;
}

export async function resolveHubModel(
  ref: string,
  id: HubModelId,
  options: HubOptions = {},
): Promise<string> {
  const s = hubSettings(options);
  const cached = await findCachedSnapshot(s.cacheDir, id);
  const notLocal = `"${ref}" is not a local path`;
  if (s.offline) {
    if (cached.found) return cached.dir;
    throw new ModelStockError(
      'MODEL_NOT_CACHED',
      `${notLocal}, and Hub model ${id.repo}${id.explicitRevision ? `@${id.revision}` : ''} is not in the ` +
        `Hugging Face cache ${s.cacheDir} (${cached.why}) while HF_HUB_OFFLINE is set; fetch it with ` +
        `\`${fetchCommand(id)}\` (or unset HF_HUB_OFFLINE to let model-stock download it)`,
    );
  }
  // A commit is immutable: a complete snapshot of it needs no network at all.
  if (cached.found && cached.commit === id.revision) return cached.dir;
  const client = new HubClient(s, { fetch: options.fetch, signal: options.signal });
  let info: RevisionInfo;
  try {
    info = await client.revision(id.repo, id.revision);
  } catch (e) {
    // As huggingface_hub: whatever kept the Hub from answering (network, outage, a token that no
    // longer works), a complete cached snapshot of the revision is used.
    if (e instanceof HubRequestError && cached.found) {
      options.onWarning?.(`${e.message}; using the cached snapshot ${cached.commit} of ${id.repo}`);
      return cached.dir;
    }
    if (e instanceof ModelStockError && e.code === 'HUB_ERROR') {
      throw new ModelStockError(
        'HUB_ERROR',
        `${notLocal}; as a Hub model: ${e.message} — cache searched: ${s.cacheDir} (${cached.found ? 'found' : cached.why}); ` +
          `\`${fetchCommand(id)}\` fetches it where the Hub is reachable, HF_HUB_OFFLINE=1 uses the cache only`,
        { cause: e },
      );
    }
    throw e;
  }
  try {
    return await downloadSnapshot(id, info, s, client, options);
  } catch (e) {
    if (e instanceof ModelStockError) throw e;
    throw new ModelStockError(
      'IO_ERROR',
      `${id.repo}: cannot write the Hugging Face cache ${s.cacheDir}: ${(e as Error).message}`,
      { cause: e },
    );
  }
}

async function exists(p: string): Promise<boolean> {
  return fs.promises.stat(p).then(
    () => true,
    () => false,
  );
}

/** Fills `snapshots/<commit>/` with what a merge needs, then records the revision in refs/. */
async function downloadSnapshot(
  id: HubModelId,
  info: RevisionInfo,
  s: HubSettings,
  client: HubClient,
  options: HubOptions,
): Promise<string> {
  const storage = storageFolder(s.cacheDir, id.repo);
  const snapshot = path.join(storage, 'snapshots', info.commit);
  const what = `${id.repo}@${info.commit}`;
  const rootFiles = new Set([...info.files.keys()].filter((f) => !f.includes('/')));
  const choice = chooseWeights(rootFiles);
  if (choice.kind === 'none') {
    throw new ModelStockError('NO_CHECKPOINT', `Hub model ${what}: ${choice.why}`);
  }
  const pick = (name: string): RepoFile => {
    const f = info.files.get(name);
    if (f === undefined) {
      throw new ModelStockError(
        'HUB_ERROR',
        `Hub model ${what}: ${name} is listed without a size and hash to verify it`,
      );
    }
    return f;
  };
  const counters = { bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: 0 };
  const fetchAll = async (files: RepoFile[]): Promise<void> => {
    const missing: RepoFile[] = [];
    for (const f of files) if (!(await exists(path.join(snapshot, f.name)))) missing.push(f);
    counters.filesTotal += missing.length;
    counters.bytesTotal += missing.reduce((a, f) => a + f.size, 0);
    for (const f of missing) {
      await fetchFile(id.repo, info.commit, f, snapshot, s, client, options, counters);
      counters.filesDone++;
    }
  };
  const side = SIDE_FILES.filter((n) => rootFiles.has(n)).map(pick);
  if (choice.kind === 'single') {
    // An adapter: adapter_config.json and its weights (choice.also).
    await fetchAll([pick(choice.file), ...choice.also.map(pick), ...side]);
  } else {
    const indexFile = path.join(snapshot, choice.file);
    await fetchAll([pick(choice.file), ...side]);
    let shards: string[];
    try {
      shards = indexShards(await fs.promises.readFile(indexFile, 'utf8'), choice.file);
    } catch (e) {
      throw new ModelStockError('INVALID_INDEX', `Hub model ${what}: ${(e as Error).message}`, {
        file: indexFile,
      });
    }
    for (const shard of shards) {
      if (!info.files.has(shard)) {
        throw new ModelStockError(
          'INVALID_INDEX',
          `Hub model ${what}: the index names ${shard}, which the repository does not have`,
          { file: indexFile },
        );
      }
    }
    await fetchAll(shards.map(pick));
  }
  if (id.revision !== info.commit) {
    // The snapshot is complete; the ref only serves later offline lookups (a read-only cache may refuse it).
    await writeRef(storage, id.revision, info.commit).catch((e: Error) =>
      options.onWarning?.(
        `${id.repo}: cannot record refs/${id.revision} → ${info.commit} in ${storage}: ${e.message}`,
      ),
    );
  }
  return snapshot;
}

/** One file: blob (downloaded under the blob's lock unless present) + snapshot pointer. */
async function fetchFile(
  repo: string,
  commit: string,
  f: RepoFile,
  snapshot: string,
  s: HubSettings,
  client: HubClient,
  options: HubOptions,
  counters: { bytesDone: number; bytesTotal: number; filesDone: number; filesTotal: number },
): Promise<void> {
  const storage = storageFolder(s.cacheDir, repo);
  const blob = path.join(storage, 'blobs', f.blob);
  const pointer = path.join(snapshot, f.name);
  await fs.promises.mkdir(path.dirname(blob), { recursive: true });
  const what = `${repo}: ${f.name}`;
  let fileDone = 0;
  const report = (): void =>
    options.onProgress?.({
      repo,
      commit,
      file: f.name,
      fileBytesDone: fileDone,
      fileBytesTotal: f.size,
      bytesDone: counters.bytesDone,
      bytesTotal: counters.bytesTotal,
      filesDone: counters.filesDone,
      filesTotal: counters.filesTotal,
    });
  const lock = lockPath(s.cacheDir, repo, f.blob);
  await withFileLock(lock, { signal: options.signal, onWarning: options.onWarning, what }, async () => {
    if (!(await exists(blob))) {
      // A name of our own (Python's `<etag>.<8 hex>.incomplete`): concurrent writers never share a file.
      const tmp = `${blob}.${crypto.randomBytes(4).toString('hex')}.incomplete`;
      try {
        await client.download(repo, commit, f, tmp, (n) => {
          fileDone += n;
          counters.bytesDone += n;
          report();
        });
        await fs.promises.rename(tmp, blob);
      } finally {
        await fs.promises.rm(tmp, { force: true });
      }
    } else {
      counters.bytesDone += f.size; // another file of this repository had the same bytes
    }
    if (options.signal?.aborted) throw cancelled(options.signal, what);
    if (!(await exists(pointer))) await linkPointer(blob, pointer);
  });
  fileDone = f.size;
  report();
}
