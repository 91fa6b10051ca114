import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isModelStockError } from '../../lib/errors';
import { writeFileAtomic } from '../../lib/output/file';
import { useTmpDir } from '../helpers/tmp';

const code = (c: string) => (e: unknown) => isModelStockError(e) && e.code === c;

describe('writeFileAtomic', () => {
  const tmp = useTmpDir();
  const entries = (): string[] => fs.readdirSync(tmp.dir).sort();

  it('writes a new file, and leaves no temporary file behind', async () => {
    const file = path.join(tmp.dir, 'new.svg');
    await writeFileAtomic(file, '<svg/>', { overwrite: false, fsync: true });
    assert.equal(fs.readFileSync(file, 'utf8'), '<svg/>');
    assert.deepEqual(entries(), ['new.svg']);
  });

  it('never replaces an existing file without overwrite', async () => {
    const file = path.join(tmp.dir, 'mine.svg');
    fs.writeFileSync(file, 'the user’s file');
    await assert.rejects(
      writeFileAtomic(file, 'x', { overwrite: false, fsync: false }),
      code('BAD_OUTPUT_PATH'),
    );
    assert.equal(fs.readFileSync(file, 'utf8'), 'the user’s file');
    await writeFileAtomic(file, 'replaced', { overwrite: true, fsync: false });
    assert.equal(fs.readFileSync(file, 'utf8'), 'replaced');
    assert.ok(
      entries().every((e) => !e.startsWith('.')),
      entries().join(),
    );
  });

  it('never replaces a folder or a link, even with overwrite', async () => {
    const dir = path.join(tmp.dir, 'folder.svg');
    fs.mkdirSync(dir);
    await assert.rejects(
      writeFileAtomic(dir, 'x', { overwrite: true, fsync: false }),
      code('BAD_OUTPUT_PATH'),
    );
    const link = path.join(tmp.dir, 'link.svg');
    fs.symlinkSync(path.join(tmp.dir, 'new.svg'), link);
    await assert.rejects(
      writeFileAtomic(link, 'x', { overwrite: true, fsync: false }),
      code('BAD_OUTPUT_PATH'),
    );
    assert.equal(
      fs.readFileSync(path.join(tmp.dir, 'new.svg'), 'utf8'),
      '<svg/>',
      'the link target is untouched',
    );
  });

  it('a folder that does not exist: IO_ERROR naming the file, nothing written', async () => {
    const file = path.join(tmp.dir, 'missing', 'out.svg');
    await assert.rejects(
      writeFileAtomic(file, 'x', { overwrite: false, fsync: false }),
      (e: unknown) => isModelStockError(e) && e.code === 'IO_ERROR' && e.file === file,
    );
    assert.ok(!fs.existsSync(path.join(tmp.dir, 'missing')));
  });
});
