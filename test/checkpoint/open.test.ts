/** Opening folders and files as checkpoints, and every way an index can disagree with its shards. */
import { strict as assert } from 'node:assert';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { openCheckpoint } from '../../lib/checkpoint/open';
import { isModelStockError, type ErrorCode } from '../../lib/errors';
import { useTmpDir } from '../helpers/tmp';
import { craft, headerOf } from '../helpers/craft';
import { tensor, writeModel, type TestTensor } from '../helpers/safetensorsModel';

const INDEX = 'model.safetensors.index.json';

describe('openCheckpoint', () => {
  const tmp = useTmpDir();
  let n = 0;
  const fresh = () => path.join(tmp.dir, `m${++n}`);

  // 3 shards of 2 tensors each with a 40-byte shard size.
  const six: TestTensor[] = ['a', 'b', 'c', 'd', 'e', 'f'].map((name, i) =>
    tensor(name, 'F32', [5], 4, i + 1),
  );

  async function sharded(): Promise<string> {
    const dir = fresh();
    await writeModel(dir, six, 40);
    return dir;
  }

  async function editIndex(dir: string, edit: (weightMap: Record<string, string>) => void): Promise<void> {
    const file = path.join(dir, INDEX);
    const index = JSON.parse(await readFile(file, 'utf8')) as { weight_map: Record<string, string> };
    edit(index.weight_map);
    await writeFile(file, JSON.stringify(index));
  }

  async function rejects(
    target: string,
    code: ErrorCode,
    mention: string[],
    tensorName?: string,
  ): Promise<void> {
    let caught: unknown;
    await openCheckpoint(target).catch((e: unknown) => (caught = e));
    assert.ok(isModelStockError(caught), `expected ${code}, got ${String(caught)}`);
    assert.equal(caught.code, code, caught.message);
    for (const m of mention) assert.ok(caught.message.includes(m), `"${caught.message}" mentions ${m}`);
    if (tensorName !== undefined) assert.equal(caught.tensor, tensorName);
  }

  it('reads a sharded folder in shard order, then data order', async () => {
    const dir = await sharded();
    const ckpt = await openCheckpoint(dir);
    assert.equal(ckpt.files.length, 3);
    assert.deepEqual(
      ckpt.files.map((f) => path.basename(f)),
      [
        'model-00001-of-00003.safetensors',
        'model-00002-of-00003.safetensors',
        'model-00003-of-00003.safetensors',
      ],
    );
    assert.deepEqual(ckpt.order, ['a', 'b', 'c', 'd', 'e', 'f']);
    assert.equal(ckpt.indexFile, path.join(dir, INDEX));
    assert.equal(ckpt.dir, dir);
    assert.deepEqual(ckpt.metadata, { format: 'pt' });
    assert.equal(path.basename(ckpt.tensors.get('d')?.file ?? ''), 'model-00002-of-00003.safetensors');
  });

  it('reads model.safetensors, a lone *.safetensors, or a file path', async () => {
    const dir = fresh();
    await writeModel(dir, six.slice(0, 2));
    const byFolder = await openCheckpoint(dir);
    assert.deepEqual(byFolder.order, ['a', 'b']);
    assert.equal(byFolder.indexFile, undefined);

    await rename(path.join(dir, 'model.safetensors'), path.join(dir, 'weights.safetensors'));
    assert.deepEqual((await openCheckpoint(dir)).order, ['a', 'b']);

    const byFile = await openCheckpoint(path.join(dir, 'weights.safetensors'));
    assert.equal(byFile.dir, dir);
    assert.deepEqual(byFile.files, [path.join(dir, 'weights.safetensors')]);
  });

  it('folder without safetensors files: NO_CHECKPOINT', async () => {
    const dir = fresh();
    await mkdir(dir);
    await writeFile(path.join(dir, 'config.json'), '{}');
    await rejects(dir, 'NO_CHECKPOINT', [dir]);
  });

  it('several *.safetensors without an index: INVALID_INDEX listing them', async () => {
    const dir = fresh();
    await mkdir(dir);
    await writeFile(path.join(dir, 'x.safetensors'), craft('{}'));
    await writeFile(path.join(dir, 'y.safetensors'), craft('{}'));
    await rejects(dir, 'INVALID_INDEX', ['x.safetensors', 'y.safetensors']);
  });

  it('index naming a missing shard: INVALID_INDEX', async () => {
    const dir = await sharded();
    await editIndex(dir, (m) => (m['f'] = 'model-00004-of-00003.safetensors'));
    await rejects(dir, 'INVALID_INDEX', ['model-00004-of-00003.safetensors', INDEX], 'f');
  });

  it('tensor in a different shard than the index says: INVALID_INDEX naming tensor and shard', async () => {
    const dir = await sharded();
    await editIndex(dir, (m) => (m['c'] = 'model-00001-of-00003.safetensors'));
    await rejects(dir, 'INVALID_INDEX', ['"c"', 'model-00001-of-00003.safetensors'], 'c');
  });

  it('tensor in the index but in no shard: INVALID_INDEX', async () => {
    const dir = await sharded();
    await editIndex(dir, (m) => (m['ghost'] = 'model-00001-of-00003.safetensors'));
    await rejects(dir, 'INVALID_INDEX', ['"ghost"'], 'ghost');
  });

  it('tensor in a shard but not in the index: INVALID_INDEX', async () => {
    const dir = await sharded();
    await editIndex(dir, (m) => delete m['e']);
    await rejects(dir, 'INVALID_INDEX', ['"e"', 'not in weight_map'], 'e');
  });

  it('shard names that leave the folder: INVALID_INDEX', async () => {
    for (const bad of ['../model-00001-of-00003.safetensors', 'sub/x.safetensors', '..', '/etc/passwd']) {
      const dir = await sharded();
      await editIndex(dir, (m) => (m['a'] = bad));
      await rejects(dir, 'INVALID_INDEX', [JSON.stringify(bad)], 'a');
    }
  });

  it('the same tensor in two shards: DUPLICATE_KEY', async () => {
    // Our writer refuses duplicates, so build the two shards by hand.
    const dir = fresh();
    await mkdir(dir);
    const a = { dtype: 'U8', shape: [1], data_offsets: [0, 1] };
    await writeFile(path.join(dir, 's1.safetensors'), craft(headerOf({ a }), 1));
    const b = { dtype: 'U8', shape: [1], data_offsets: [1, 2] };
    await writeFile(path.join(dir, 's2.safetensors'), craft(headerOf({ a, b }), 2));
    await writeFile(
      path.join(dir, INDEX),
      JSON.stringify({ weight_map: { a: 's1.safetensors', b: 's2.safetensors' } }),
    );
    await rejects(dir, 'DUPLICATE_KEY', ['s1.safetensors', 's2.safetensors'], 'a');
  });

  it('index that is not JSON, lacks weight_map, or repeats a key', async () => {
    const dir = await sharded();
    await writeFile(path.join(dir, INDEX), '{"weight_map": ');
    await rejects(dir, 'INVALID_INDEX', [INDEX]);
    await writeFile(path.join(dir, INDEX), '{"metadata": {}}');
    await rejects(dir, 'INVALID_INDEX', ['weight_map']);
    await writeFile(
      path.join(dir, INDEX),
      '{"weight_map": {"a": "model-00001-of-00003.safetensors", "a": "model-00002-of-00003.safetensors"}}',
    );
    await rejects(dir, 'DUPLICATE_KEY', ['"a"']);
  });

  it('an invalid shard fails with its own format error', async () => {
    const dir = await sharded();
    await writeFile(path.join(dir, 'model-00002-of-00003.safetensors'), craft('{}', 3));
    await rejects(dir, 'METADATA_INCOMPLETE_BUFFER', ['model-00002-of-00003.safetensors']);
  });
});
