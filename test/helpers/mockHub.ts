/**
 * A loopback stand-in for the Hugging Face Hub (node:http on 127.0.0.1, a random port): point
 * HF_ENDPOINT (or `hub.endpoint`) at `url`. It serves what a download asks for —
 *
 *   GET /api/models/{org}/{name}/revision/{rev}?blobs=true   revision info: sha + siblings (size, blobId, lfs)
 *   GET /{org}/{name}/resolve/{rev}/{file}                   bytes; LFS files via a 302 to /cdn/{sha256}
 *
 * — from model folders, with the Hub's error headers (X-Error-Code RepoNotFound, RevisionNotFound,
 * EntryNotFound, GatedRepo) and switchable faults for timeout, corruption and outage tests. Every
 * request is recorded.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fixtureCommit, repoFiles, type RepoFileFixture } from './hfCache';

export interface MockRepoSpec {
  readonly repo: string;
  /** Folder whose files are the repository at `main` (and at its commit). */
  readonly dir: string;
  /** Other revisions: name → folder. */
  readonly revisions?: Readonly<Record<string, string>>;
  /** Requests must carry `Authorization: Bearer <token>`. */
  readonly gatedToken?: string;
}

export interface MockHubFaults {
  /** Answer nothing to revision-info requests (a header timeout). */
  hangRevision?: boolean;
  /** Revision info answers this status (e.g. 500, 503). */
  revisionStatus?: number;
  /** For this file: send half the bytes, then go silent (a read timeout). */
  stallFile?: string;
  /** For this file: flip one byte (a hash mismatch). */
  corruptFile?: string;
  /** Send this file's bytes this slowly: one chunk of `slowChunk` bytes every `slowMs`. */
  slowFile?: string;
  slowChunk?: number;
  slowMs?: number;
}

export interface MockRequest {
  readonly method: string;
  readonly path: string;
  readonly authorization: string | undefined;
}

export interface MockHub {
  readonly url: string;
  readonly requests: MockRequest[];
  readonly faults: MockHubFaults;
  /** The commit each repository's revision resolves to. */
  commitOf(repo: string, revision?: string): string;
  close(): Promise<void>;
}

interface Revision {
  readonly commit: string;
  readonly files: Map<string, RepoFileFixture>;
}

export async function startMockHub(specs: readonly MockRepoSpec[]): Promise<MockHub> {
  const repos = new Map<string, { spec: MockRepoSpec; revisions: Map<string, Revision> }>();
  const byBlob = new Map<string, RepoFileFixture>();
  for (const spec of specs) {
    const revisions = new Map<string, Revision>();
    for (const [name, dir] of Object.entries({ main: spec.dir, ...spec.revisions })) {
      const files = repoFiles(dir);
      const rev: Revision = {
        commit: fixtureCommit(files, `${spec.repo}@${name}`),
        files: new Map(files.map((f) => [f.name, f])),
      };
      revisions.set(name, rev);
      revisions.set(rev.commit, rev);
      for (const f of files) byBlob.set(f.blob, f);
    }
    repos.set(spec.repo.toLowerCase(), { spec, revisions });
  }
  const requests: MockRequest[] = [];
  const faults: MockHubFaults = {};

  const fail = (
    res: http.ServerResponse,
    status: number,
    code: string | undefined,
    message: string,
  ): void => {
    res.writeHead(status, { 'content-type': 'application/json', ...(code ? { 'x-error-code': code } : {}) });
    res.end(JSON.stringify({ error: message }));
  };

  const sendFile = (res: http.ServerResponse, f: RepoFileFixture, commit: string): void => {
    let bytes = f.bytes;
    if (faults.corruptFile === f.name) {
      bytes = Buffer.from(bytes);
      const at = bytes.length >> 1;
      bytes[at] = (bytes[at] as number) ^ 0xff;
    }
    res.writeHead(200, {
      'content-length': String(bytes.byteLength),
      etag: `"${f.blob}"`,
      'x-repo-commit': commit,
    });
    if (faults.stallFile === f.name) {
      res.write(bytes.subarray(0, bytes.byteLength >> 1)); // then nothing: the client's read timeout ends it
      return;
    }
    if (faults.slowFile === f.name) {
      const chunk = faults.slowChunk ?? 1024;
      let at = 0;
      const tick = (): void => {
        if (res.destroyed) return;
        res.write(bytes.subarray(at, at + chunk));
        at += chunk;
        if (at >= bytes.byteLength) res.end();
        else setTimeout(tick, faults.slowMs ?? 20);
      };
      tick();
      return;
    }
    res.end(bytes);
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const parts = url.pathname.split('/').map(decodeURIComponent);
    requests.push({ method: req.method ?? '', path: url.pathname, authorization: req.headers.authorization });
    const authorized = (spec: MockRepoSpec): boolean =>
      spec.gatedToken === undefined || req.headers.authorization === `Bearer ${spec.gatedToken}`;

    // /cdn/<sha256>: the "CDN" the resolve endpoint redirects LFS files to; the URL is the credential.
    if (parts[1] === 'cdn' && parts[2] !== undefined) {
      const f = byBlob.get(parts[2]);
      if (f === undefined) return fail(res, 404, undefined, 'no such object');
      return sendFile(res, f, '');
    }
    const api = parts[1] === 'api' && parts[2] === 'models';
    const [org, name, kind, ...rest] = api ? parts.slice(3) : parts.slice(1);
    const repo = repos.get(`${org}/${name}`.toLowerCase());
    if (repo === undefined) return fail(res, 401, 'RepoNotFound', 'Repository not found');
    if (!authorized(repo.spec)) {
      return fail(
        res,
        401,
        'GatedRepo',
        `Access to model ${repo.spec.repo} is restricted. You must have access to it and be authenticated to access it. Please log in.`,
      );
    }
    if (api && kind === 'revision') {
      if (faults.hangRevision) return; // never answered
      if (faults.revisionStatus !== undefined)
        return fail(res, faults.revisionStatus, undefined, 'Internal Error');
      const rev = repo.revisions.get(rest.join('/'));
      if (rev === undefined) return fail(res, 404, 'RevisionNotFound', `Invalid rev id: ${rest.join('/')}`);
      const siblings = [...rev.files.values()].map((f) => ({
        rfilename: f.name,
        size: f.bytes.byteLength,
        blobId: f.gitOid,
        ...(f.sha256 !== undefined
          ? { lfs: { sha256: f.sha256, size: f.bytes.byteLength, pointerSize: 134 } }
          : {}),
      }));
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ id: repo.spec.repo, sha: rev.commit, siblings }));
    }
    if (!api && kind === 'resolve') {
      const [revName, ...fileParts] = rest;
      const rev = repo.revisions.get(revName ?? '');
      if (rev === undefined) return fail(res, 404, 'RevisionNotFound', 'Invalid rev id');
      const f = rev.files.get(fileParts.join('/'));
      if (f === undefined) return fail(res, 404, 'EntryNotFound', 'Entry not found');
      if (f.sha256 !== undefined) {
        res.writeHead(302, {
          location: `/cdn/${f.sha256}`,
          'x-repo-commit': rev.commit,
          'x-linked-etag': `"${f.sha256}"`,
        });
        return res.end();
      }
      return sendFile(res, f, rev.commit);
    }
    return fail(res, 404, undefined, 'not an endpoint of this mock');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    faults,
    commitOf: (repo, revision = 'main') => {
      const rev = repos.get(repo.toLowerCase())?.revisions.get(revision);
      if (rev === undefined) throw new Error(`mock hub: no ${repo}@${revision}`);
      return rev.commit;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
