/**
 * The web page's files, served at `/` from a folder of the built package (dist/lib/serve/page): `/` is
 * its index.html, `/NAME` one of its files. Only plain files directly in that folder, with a known
 * type, are served — no listing, no hidden files, no subfolders, no links out. Until the page is built
 * there, `/` says where the API is. The page's CSP allows its own scripts and styles only.
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

/** A page file name: one component, not hidden, a known type. */
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

export interface PageFile {
  readonly type: string;
  readonly body: Buffer;
}

const PLACEHOLDER =
  '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>model-stock serve</title></head>\n' +
  '<body><h1>model-stock serve</h1><p>The web page is not built into this package. The HTTP API is at ' +
  '<code>/api</code> (see docs/serve.md); every route but <code>/api/health</code> needs ' +
  '<code>Authorization: Bearer TOKEN</code>.</p></body></html>\n';

/** The file for `name` (undefined: not a page file); `name` undefined is the index. */
export async function pageFile(dir: string, name: string | undefined): Promise<PageFile | undefined> {
  const file = name ?? 'index.html';
  const type = TYPES[path.extname(file).toLowerCase()];
  if (!NAME.test(file) || type === undefined) return undefined;
  const p = path.join(dir, file);
  try {
    const st = await fs.promises.lstat(p);
    if (!st.isFile()) return undefined;
    return { type, body: await fs.promises.readFile(p) };
  } catch {
    if (name === undefined) return { type: TYPES['.html']!, body: Buffer.from(PLACEHOLDER) };
    return undefined;
  }
}
