/**
 * The checkpoint seam (lib/checkpoint): which files of a folder are its weights, in which format, a file
 * named directly, and PyTorch shards validated against pytorch_model.bin.index.json as safetensors shards
 * are against theirs.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chooseWeights } from '../../lib/checkpoint/folder';
import { checkUnchanged } from '../../lib/checkpoint/identity';
import { openCheckpoint } from '../../lib/checkpoint/open';
import type { ErrorCode } from '../../lib/errors';
import { writeModel } from '../helpers/models';
import { fixture, rejectsWith } from '../helpers/pytorch';
import { useTmpDir } from '../helpers/tmp';

const rejects = (target: string, code: ErrorCode, file: string, ...mention: string[]) =>
  rejectsWith(openCheckpoint(target), code, file, ...mention);

describe('checkpoint formats', () => {
  const tmp = useTmpDir();
  let n = 0;
  const folder = (files: Record<string, string | Buffer> = {}): string => {
    const dir = path.join(tmp.dir, `m${n++}`);
    fs.mkdirSync(dir);
    for (const [name, content] of Object.entries(files)) {
      const from =
        typeof content === 'string' && content.startsWith('fixture:') ? content.slice(8) : undefined;
      if (from !== undefined) fs.copyFileSync(fixture(from), path.join(dir, name));
      else fs.writeFileSync(path.join(dir, name), content);
    }
    return dir;
  };

  describe('the folder rule (shared with the Hub)', () => {
    const choose = (...names: string[]) => {
      const c = chooseWeights(new Set(names));
      return c.kind === 'none' ? [c.kind, c.code] : [c.kind, c.format.name, c.file, c.shadowed];
    };
    it('safetensors first, then PyTorch; an index before a single file', () => {
      assert.deepEqual(choose('model.safetensors', 'pytorch_model.bin'), [
        'single',
        'safetensors',
        'model.safetensors',
        ['pytorch_model.bin'],
      ]);
      assert.deepEqual(choose('pytorch_model.bin.index.json', 'pytorch_model.bin', 'training_args.bin'), [
        'index',
        'pytorch',
        'pytorch_model.bin.index.json',
        [],
      ]);
      assert.deepEqual(choose('a.safetensors', 'pytorch_model.bin'), [
        'single',
        'safetensors',
        'a.safetensors',
        ['pytorch_model.bin'],
      ]);
      assert.deepEqual(choose('a.safetensors', 'b.safetensors', 'pytorch_model.bin'), [
        'single',
        'pytorch',
        'pytorch_model.bin',
        [],
      ]);
      assert.deepEqual(choose('a.safetensors', 'b.safetensors'), ['none', 'INVALID_INDEX']);
      assert.deepEqual(choose('model.pt', 'optimizer.pt'), ['none', 'NO_CHECKPOINT']);
    });
  });

  it('a folder with pytorch_model.bin', async () => {
    const dir = folder({ 'pytorch_model.bin': 'fixture:single-f16.bin', 'config.json': '{}' });
    const cp = await openCheckpoint(dir);
    assert.equal(cp.format, 'pytorch');
    assert.deepEqual(cp.files, [path.join(dir, 'pytorch_model.bin')]);
    assert.equal(cp.dir, dir);
    assert.equal(cp.order.length, 9);
  });

  it('a folder with both formats: the safetensors, and a warning naming both', async () => {
    const dir = folder({ 'pytorch_model.bin': 'fixture:single-f16.bin' });
    await writeModel(dir, [{ name: 'w', dtype: 'F32', shape: [2], values: [1, 2] }]);
    const cp = await openCheckpoint(dir);
    assert.equal(cp.format, 'safetensors');
    assert.deepEqual(cp.order, ['w']);
    assert.equal(cp.warnings.length, 1);
    assert.match(
      cp.warnings[0]!,
      /model\.safetensors.*pytorch_model\.bin.*reading the safetensors ones, as transformers does/,
    );
    assert.ok(cp.warnings[0]!.startsWith(`${dir}: `));
  });

  it('a folder holding only other PyTorch files (model.pt, optimizer.pt): NO_CHECKPOINT saying to name the file', async () => {
    const dir = folder({ 'model.pt': 'fixture:nested.pt', 'optimizer.pt': 'x', 'model.gguf': 'x' });
    await rejects(
      dir,
      'NO_CHECKPOINT',
      dir,
      'pytorch_model.bin',
      'model.pt, optimizer.pt: name a PyTorch weight file itself',
      'model.gguf, in formats model-stock does not read',
    );
  });

  it('a file named directly: PyTorch by its extension, or by its first bytes; anything else is read as safetensors', async () => {
    const dir = folder({ 'weights.pkl': 'fixture:single-f16.bin', 'model.pth': 'fixture:single-f16.bin' });
    for (const f of ['weights.pkl', 'model.pth'])
      assert.equal((await openCheckpoint(path.join(dir, f))).format, 'pytorch');
    const junk = path.join(dir, 'notes.txt');
    fs.writeFileSync(junk, 'hello, this is not a checkpoint');
    await rejects(junk, 'HEADER_TOO_LARGE', junk);
    const fake = path.join(dir, 'fake.bin');
    fs.writeFileSync(fake, 'hello');
    await rejects(fake, 'INVALID_ARCHIVE', fake, 'not a zip archive');
  });

  describe('PyTorch shards, validated against pytorch_model.bin.index.json', () => {
    const shard1 = 'pytorch_model-00001-of-00002.bin';
    const shard2 = 'pytorch_model-00002-of-00002.bin';
    const index = (): Record<string, string> =>
      (
        JSON.parse(fs.readFileSync(fixture('sharded-bf16', 'pytorch_model.bin.index.json'), 'utf8')) as {
          weight_map: Record<string, string>;
        }
      ).weight_map;
    const sharded = (weightMap: Record<string, string>, shards = [shard1, shard2]): string =>
      folder({
        'pytorch_model.bin.index.json': JSON.stringify({ weight_map: weightMap }),
        ...Object.fromEntries(shards.map((s) => [s, `fixture:sharded-bf16/${s}`])),
      });

    it('a shard the index names is missing: INVALID_INDEX naming a tensor of it', async () => {
      const dir = sharded(index(), [shard1]);
      await rejects(
        dir,
        'INVALID_INDEX',
        path.join(dir, 'pytorch_model.bin.index.json'),
        shard2,
        'does not exist',
      );
    });

    it('a tensor in another shard than the index says: INVALID_INDEX', async () => {
      const map = { ...index(), 'model.norm.weight': shard1 };
      const dir = sharded(map);
      await rejects(
        dir,
        'INVALID_INDEX',
        path.join(dir, 'pytorch_model.bin.index.json'),
        'model.norm.weight',
      );
    });

    it('a tensor the index does not list: INVALID_INDEX', async () => {
      const map = index();
      delete map['model.scale'];
      const dir = sharded(map);
      await rejects(
        dir,
        'INVALID_INDEX',
        path.join(dir, 'pytorch_model.bin.index.json'),
        'not in weight_map',
      );
    });

    it('a tensor in two shards: DUPLICATE_KEY', async () => {
      const dir = folder({
        'pytorch_model.bin.index.json': JSON.stringify({ weight_map: { a: 'a.bin', b: 'b.bin' } }),
        'a.bin': 'fixture:single-f16.bin',
        'b.bin': 'fixture:single-f16.bin',
      });
      await rejects(dir, 'DUPLICATE_KEY', path.join(dir, 'pytorch_model.bin.index.json'), 'is in both');
    });
  });

  it('the identities of archives: a changed archive fails the end-of-merge check', async () => {
    const dir = folder({ 'pytorch_model.bin': 'fixture:single-f16.bin' });
    const cp = await openCheckpoint(dir);
    await checkUnchanged(cp.identities);
    fs.appendFileSync(path.join(dir, 'pytorch_model.bin'), 'x');
    await assert.rejects(checkUnchanged(cp.identities), /changed during the merge/);
  });
});
