/**
 * The web page's files, served at `/` from a folder of the built package (dist/lib/serve/page): `/` is
 * its index.html, `/a/b.js` the file at that path inside it. The page's modules keep the paths they
 * have under lib/ (serve/page/app.js imports ../../report/warnings.js, the code the terminal groups
 * warnings with), so files may lie a few folders down. Only plain files of a known type are served:
 * every path component a plain name (no `..`, nothing hidden), no link anywhere on the way, no
 * listing. Until the page is built there, `/` says where the API is.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export const PAGE_DIR = path.join(__dirname, 'page');

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.webmanifest': 'application/manifest+json',
  '.map': 'application/json; charset=utf-8',
};

/** A component of a page file's path: not hidden, not `..`. */
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
/** Components in a page file's path at most (serve/page/app.js is 3). */
const MAX_DEPTH = 4;

export interface PageFile {
  readonly type: string;
  readonly body: Buffer;
}

const PLACEHOLDER =
  '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>model-stock serve</title></head>\n' +
  '<body><h1>model-stock serve</h1><p>The web page is not built into this package. The HTTP API is at ' +
  '<code>/api</code> (see docs/serve.md); every route but <code>/api/health</code> needs ' +
  '<code>Authorization: Bearer TOKEN</code>.</p></body></html>\n';

/** The file at `name` (`a/b.js`; undefined: not a page file); `name` undefined is the index. */
export async function pageFile(dir: string, name: string | undefined): Promise<PageFile | undefined> {
  const parts = (name ?? 'index.html').split('/');
  const type = TYPES[path.extname(parts.at(-1)!).toLowerCase()];
  if (parts.length > MAX_DEPTH || !parts.every((p) => NAME.test(p)) || type === undefined) return undefined;
  try {
    const realDir = await fs.promises.realpath(dir);
    const p = path.join(realDir, ...parts);
    // A link anywhere on the way (a folder or the file) makes the real path differ: refused.
    if ((await fs.promises.realpath(p)) !== p || !(await fs.promises.lstat(p)).isFile()) return undefined;
    return { type, body: await fs.promises.readFile(p) };
  } catch {
    if (name === undefined) return { type: TYPES['.html']!, body: Buffer.from(PLACEHOLDER) };
    return undefined;
  }
}
