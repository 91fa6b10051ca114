/**
 * The two Hub endpoints a download needs, over the global fetch:
 *
 *   GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true   → commit sha + files (size, git oid, LFS sha256)
 *   GET {endpoint}/{repo}/resolve/{commit}/{file}                     → the bytes (redirects followed)
 *
 * Written here rather than through @huggingface/hub 2.17.5: its downloadFileToCacheDir files each blob
 * under the snapshot of the *last commit that touched the file* (so one model's files land in several
 * snapshots, unlike Python's), writes no refs/, takes no lock, shares one `.incomplete` name between
 * processes and logs with console.debug; what would remain of it are these two URLs. Here every
 * request has a header timeout, every body an idle timeout, both end on the caller's AbortSignal, and
 * every downloaded byte is checked against the size and hash the revision listing announced.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { ModelStockError } from '../errors';
import { cancelledError as cancelled } from '../errors';
import type { HubSettings } from './settings';

export interface RepoFile {
  /** Repository-relative name. */
  readonly name: string;
  readonly size: number;
  /** The blob's name in the cache: the LFS sha256, else the git oid (huggingface_hub's etag). */
  readonly blob: string;
  /** Set for LFS files: what the bytes must hash to. */
  readonly sha256: string | undefined;
  /** The git blob oid (sha1 of "blob <size>\0" + bytes). */
  readonly gitOid: string | undefined;
}

export interface RevisionInfo {
  readonly commit: string;
  readonly files: ReadonlyMap<string, RepoFile>;
}

/** A failed Hub request. `transient`: the network or the server, not the request, was at fault. */
export class HubRequestError extends ModelStockError {
  constructor(
    message: string,
    readonly transient: boolean,
    readonly status: number | undefined,
    cause?: unknown,
  ) {
    super('HUB_ERROR', message, { cause });
  }
}

const HEX40 = /^[0-9a-f]{40}$/;
const HEX64 = /^[0-9a-f]{64}$/;

function timeoutError(what: string, ms: number, phase: string): HubRequestError {
  return new HubRequestError(
    `${what}: no ${phase} within ${ms / 1000} s (HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT raise it)`,
    true,
    undefined,
  );
}

export class HubClient {
  private readonly fetchFn: typeof fetch;

  constructor(
    private readonly s: HubSettings,
    private readonly o: { fetch?: typeof fetch; signal?: AbortSignal } = {},
  ) {
    this.fetchFn = o.fetch ?? fetch;
  }

  private headers(): Record<string, string> {
    return {
      'user-agent': `model-stock; node/${process.versions.node}`,
      // The sizes and hashes we verify are of the stored bytes, not of a compressed transfer.
      'accept-encoding': 'identity',
      ...(this.s.token !== undefined ? { authorization: `Bearer ${this.s.token}` } : {}),
    };
  }

  /**
   * One GET whose body is handed to `consume` chunk by chunk. The header wait and every gap between
   * chunks are bounded; the caller's signal aborts both.
   */
  private async get(
    url: string,
    what: string,
    repo: string,
    consume: (res: Response, chunk: Uint8Array) => Promise<void> | void,
  ): Promise<Response> {
    const { signal } = this.o;
    if (signal?.aborted) throw cancelled(signal, what);
    const ac = new AbortController();
    let timedOut: HubRequestError | undefined;
    let timer: NodeJS.Timeout | undefined;
    const arm = (ms: number, phase: string): void => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timedOut = timeoutError(what, ms, phase);
        ac.abort(timedOut);
      }, ms);
    };
    const onAbort = (): void => ac.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const failure = (e: unknown): ModelStockError => {
      if (signal?.aborted) return cancelled(signal, what);
      if (timedOut !== undefined) return timedOut;
      if (e instanceof ModelStockError) return e;
      const cause = (e as { cause?: { code?: string; message?: string } })?.cause;
      const detail = cause?.code ?? cause?.message ?? (e as Error)?.message ?? String(e);
      return new HubRequestError(`${what}: cannot reach ${this.s.endpoint} (${detail})`, true, undefined, e);
    };
    try {
      arm(this.s.connectTimeoutMs, 'response');
      let res: Response;
      try {
        res = await this.fetchFn(url, { headers: this.headers(), signal: ac.signal, redirect: 'follow' });
      } catch (e) {
        throw failure(e);
      }
      if (!res.ok) {
        const body = await res.text().catch(() => '');
        throw this.httpError(res, body, what, repo);
      }
      if (res.body === null) throw new HubRequestError(`${what}: empty response`, true, res.status);
      const reader = res.body.getReader();
      try {
        for (;;) {
          arm(this.s.readTimeoutMs, 'data');
          const { done, value } = await reader.read();
          if (done) break;
          await consume(res, value);
        }
      } catch (e) {
        await reader.cancel().catch(() => undefined);
        throw failure(e);
      }
      return res;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  private httpError(res: Response, body: string, what: string, repo: string): HubRequestError {
    const code = res.headers.get('x-error-code') ?? '';
    let serverMessage = '';
    try {
      const m = (JSON.parse(body) as { error?: unknown }).error;
      if (typeof m === 'string') serverMessage = ` (${m.slice(0, 200)})`;
    } catch {
      // not JSON: the status says enough
    }
    const status = res.status;
    const tokenHint =
      this.s.token === undefined
        ? 'set HF_TOKEN to a token of an account with access'
        : 'the token in use (HF_TOKEN) has no access';
    let message: string;
    if (code === 'GatedRepo') {
      message = `${repo} is gated: accept its conditions on ${this.s.endpoint}/${repo}, then ${tokenHint}`;
    } else if (code === 'RevisionNotFound') {
      message = `${repo} has no such revision`;
    } else if (code === 'EntryNotFound') {
      message = `${repo} has no such file`;
    } else if (code === 'RepoNotFound' || status === 401 || status === 404) {
      message = `${this.s.endpoint} has no model ${repo}, or it is private or gated (${tokenHint})`;
    } else if (status === 403) {
      message = `access to ${repo} denied: ${tokenHint}`;
    } else if (status === 429) {
      message = 'rate limited by the Hub; retry later';
    } else {
      message = `the Hub answered HTTP ${status}`;
    }
    return new HubRequestError(
      `${what}: ${message}${serverMessage} [HTTP ${status}]`,
      status >= 500 || status === 429,
      status,
    );
  }

  /** The commit a revision names and the files there, with what the cache and verification need. */
  async revision(repo: string, revision: string): Promise<RevisionInfo> {
    const what = `${repo}@${revision}: revision info`;
    const url = `${this.s.endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}?blobs=true`;
    const chunks: Uint8Array[] = [];
    let bytes = 0;
    await this.get(url, what, repo, (_res, chunk) => {
      bytes += chunk.byteLength;
      if (bytes > 64 << 20)
        throw new HubRequestError(`${what}: response larger than 64 MiB`, false, undefined);
      chunks.push(chunk);
    });
    let doc: { sha?: unknown; siblings?: unknown };
    try {
      doc = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof doc;
    } catch (e) {
      throw new HubRequestError(`${what}: not JSON (${(e as Error).message})`, true, undefined);
    }
    const bad = (m: string): HubRequestError =>
      new HubRequestError(`${what}: unexpected answer: ${m}`, false, undefined);
    if (typeof doc?.sha !== 'string' || !HEX40.test(doc.sha)) throw bad('no commit sha');
    if (!Array.isArray(doc.siblings)) throw bad('no file list (siblings)');
    const files = new Map<string, RepoFile>();
    for (const s of doc.siblings as {
      rfilename?: unknown;
      size?: unknown;
      blobId?: unknown;
      lfs?: { sha256?: unknown; size?: unknown };
    }[]) {
      if (typeof s?.rfilename !== 'string') throw bad('a file without rfilename');
      const lfs = s.lfs ?? undefined;
      const sha256 = typeof lfs?.sha256 === 'string' && HEX64.test(lfs.sha256) ? lfs.sha256 : undefined;
      const gitOid = typeof s.blobId === 'string' && HEX40.test(s.blobId) ? s.blobId : undefined;
      const size = typeof lfs?.size === 'number' ? lfs.size : s.size;
      const blob = sha256 ?? gitOid;
      // Files we cannot name or verify are listed without a blob; picking one of them is an error later.
      if (blob === undefined || typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) continue;
      files.set(s.rfilename, { name: s.rfilename, size, blob, sha256, gitOid });
    }
    return { commit: doc.sha, files };
  }

  /**
   * Streams one file of a commit into `dest` (created exclusively), fsyncs it, and checks its size and
   * hash. On any failure `dest` is removed.
   */
  async download(
    repo: string,
    commit: string,
    file: RepoFile,
    dest: string,
    onBytes: (n: number) => void,
  ): Promise<void> {
    const what = `${repo}: ${file.name}`;
    const url = `${this.s.endpoint}/${repo}/resolve/${commit}/${file.name.split('/').map(encodeURIComponent).join('/')}`;
    const hash = crypto.createHash(file.sha256 !== undefined ? 'sha256' : 'sha1');
    if (file.sha256 === undefined) hash.update(`blob ${file.size}\0`);
    const fh = await fs.promises.open(dest, 'wx');
    let written = 0;
    let ok = false;
    try {
      await this.get(url, what, repo, async (_res, chunk) => {
        written += chunk.byteLength;
        if (written > file.size) {
          throw new HubRequestError(`${what}: more than the announced ${file.size} bytes`, true, undefined);
        }
        hash.update(chunk);
        await fh.write(chunk);
        onBytes(chunk.byteLength);
      });
      if (written !== file.size) {
        throw new HubRequestError(
          `${what}: ${written} bytes received, ${file.size} announced`,
          true,
          undefined,
        );
      }
      const digest = hash.digest('hex');
      const expected = file.sha256 ?? file.gitOid;
      if (digest !== expected) {
        throw new HubRequestError(
          `${what}: downloaded bytes hash to ${digest}, the Hub lists ${expected}; nothing was kept`,
          true,
          undefined,
        );
      }
      await fh.sync();
      ok = true;
    } finally {
      await fh.close();
      if (!ok) await fs.promises.rm(dest, { force: true });
    }
  }
}
