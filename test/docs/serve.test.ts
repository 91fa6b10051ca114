import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { JOB_OPTIONS } from '../../lib/serve/request';
import { serveFolders, sqliteOrSkip, startServer } from '../helpers/serve';
import { useTmpDir } from '../helpers/tmp';

const ROOT = path.resolve(__dirname, '..', '..', '..');

describe('docs/serve.md is the API the server registers', () => {
  const tmp = useTmpDir();
  const doc = fs.readFileSync(path.join(ROOT, 'docs', 'serve.md'), 'utf8');

  it('documents every route, and no route that does not exist', async function () {
    await sqliteOrSkip(this);
    const server = await startServer(await serveFolders(tmp.dir));
    try {
      const documented = [...doc.matchAll(/^### `([A-Z]+ \/\S*)`$/gm)].map((m) => m[1]!).sort();
      assert.deepEqual(documented, [...server.routes].sort());
    } finally {
      await server.close();
    }
  });

  it('lists every key options accepts, and every error code the server has', () => {
    for (const key of Object.keys(JOB_OPTIONS)) assert.ok(doc.includes(`| \`${key}\` |`), key);
    const codes = fs
      .readFileSync(path.join(ROOT, 'lib', 'serve', 'errors.ts'), 'utf8')
      .match(/\| '([A-Z_]+)' \/\//g)!
      .map((m) => m.slice(3, -4));
    assert.ok(codes.length >= 10, codes.join(', '));
    for (const code of codes) assert.ok(doc.includes(`| \`${code}\` |`), code);
  });
});
