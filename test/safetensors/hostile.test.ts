/**
 * Hostile but legal-sized inputs: the largest headers the format allows, single tokens of tens of MB,
 * nesting 200k deep, oversized index files. Each ends in a valid parse or a coded error naming the
 * file, and none holds the event loop (a 5 ms timer keeps ticking, gaps < 250 ms).
 */
import { strict as assert } from 'node:assert';
import { open, mkdir, truncate, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { isModelStockError, type ErrorCode } from '../../lib/errors';
import { openCheckpoint } from '../../lib/checkpoint/open';
import { readSafetensorsFile } from '../../lib/safetensors/file';
import { writeHeaderFile, zeroSizeTensors } from '../../lib/fixtures/hostile';
import { MAX_INDEX_SIZE, readIndexFile } from '../../lib/checkpoint/indexFile';
import { assertLive, assertNoStall } from '../helpers/liveness';
import type { OpenResult } from '../helpers/openChild';
import { runNodeAsync } from '../helpers/cli';
import { useTmpDir } from '../helpers/tmp';

async function expectCode(
  work: Promise<unknown>,
  code: ErrorCode,
  file: string,
  tensor?: string,
): Promise<Error> {
  let caught: unknown;
  await work.catch((e: unknown) => (caught = e));
  assert.ok(isModelStockError(caught), `expected ModelStockError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.equal(caught.file, file);
  assert.ok(caught.message.startsWith(file), caught.message);
  if (tensor !== undefined) assert.equal(caught.tensor, tensor);
  return caught;
}

describe('hostile headers and index files', function () {
  this.timeout(120_000);
  const tmp = useTmpDir();
  let n = 0;
  const fresh = (name = 'model.safetensors') => path.join(tmp.dir, `case-${++n}-${name}`);

  it('the liveness check itself fails on 400 ms of synchronous work, and not on 400 ms of waiting', async () => {
    // 400 ms of CPU, like real work (a loop on the wall clock does less work on a busy machine).
    const cpu = (): number => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    };
    const busy = async (): Promise<void> => {
      await new Promise((resolve) => setTimeout(resolve, 20));
      for (const end = cpu() + 400; cpu() < end;);
    };
    await assert.rejects(assertLive('a busy loop', busy), /held for \d{3,} ms/);
    await assertLive('a timer', () => new Promise((resolve) => setTimeout(resolve, 400)));
  });

  it('1.5M zero-size tensors (a 90 MB header) open as a checkpoint without stalling the loop', async () => {
    const dir = path.join(tmp.dir, 'zero-1.5M');
    await mkdir(dir);
    const file = await writeHeaderFile(path.join(dir, 'model.safetensors'), zeroSizeTensors(1_500_000));
    // In a fresh process (test/helpers/openChild.ts): the suite's own heap would lengthen the GC pauses.
    const { code, stdout, stderr } = await runNodeAsync(
      path.join(__dirname, '..', 'helpers', 'openChild.js'),
      [dir, 't123456'],
    );
    assert.equal(code, 0, stderr);
    const r = JSON.parse(stdout) as OpenResult;
    assertNoStall('opening the 1.5M-tensor header', r);
    assert.equal(r.tensors, 1_500_000);
    assert.equal(r.order, 1_500_000);
    assert.equal(r.last, 't1499999');
    assert.deepEqual(r.probe, {
      name: 't123456',
      dtype: 'F32',
      shape: [0],
      offset: 8 + (await headerLength(file)),
      byteLength: 0,
      file,
    });
  });

  it('single tokens of tens of MB: a name, an escaped name, whitespace, a number, a 10M-element shape', async () => {
    const size = 40_000_000;
    const entry = (shape: string, bytes: number) =>
      `{"dtype":"U8","shape":${shape},"data_offsets":[0,${bytes}]}`;

    const longName = 'w'.repeat(size);
    let f = await writeHeaderFile(fresh(), [Buffer.from(`{"${longName}":${entry('[1]', 1)}}`)], 1);
    let st = await assertLive('a 40 MB name', () => readSafetensorsFile(f));
    assert.equal(st.tensors[0]?.name.length, size);

    const escaped = '\\n'.repeat(size / 2);
    f = await writeHeaderFile(fresh(), [Buffer.from(`{"${escaped}":${entry('[1]', 1)}}`)], 1);
    st = await assertLive('a 40 MB escaped name', () => readSafetensorsFile(f));
    assert.equal(st.tensors[0]?.name, '\n'.repeat(size / 2));

    f = await writeHeaderFile(fresh(), [Buffer.from(`{${' '.repeat(size)}}`)]);
    st = await assertLive('40 MB of whitespace', () => readSafetensorsFile(f));
    assert.equal(st.tensors.length, 0);

    // 1.000…0 is the integer 1 (JSON.parse agrees), so this is a valid one-byte tensor.
    f = await writeHeaderFile(fresh(), [Buffer.from(`{"w":${entry(`[1.${'0'.repeat(size)}]`, 1)}}`)], 1);
    st = await assertLive('a 40 MB number', () => readSafetensorsFile(f));
    assert.deepEqual(st.tensors[0]?.shape, [1]);

    f = await writeHeaderFile(fresh(), [Buffer.from(`{"w":${entry(`[${'9'.repeat(size)}]`, 1)}}`)], 1);
    await assertLive('a 40 MB integer', () => expectCode(readSafetensorsFile(f), 'INVALID_SHAPE', f, 'w'));

    const dims = 10_000_000;
    f = await writeHeaderFile(fresh(), [Buffer.from(`{"w":${entry(`[${'1,'.repeat(dims - 1)}0]`, 0)}}`)]);
    st = await assertLive('a 10M-dimension shape', () => readSafetensorsFile(f));
    assert.equal(st.tensors[0]?.shape.length, dims);
  });

  it('nesting 200k deep: coded errors naming file (and tensor), never a RangeError', async () => {
    const deep = (d: number) => `${'['.repeat(d)}${']'.repeat(d)}`;
    const shape = await writeHeaderFile(fresh(), [
      Buffer.from(`{"w":{"dtype":"U8","shape":${deep(200_000)},"data_offsets":[0,0]}}`),
    ]);
    const e = await expectCode(readSafetensorsFile(shape), 'INVALID_SHAPE', shape, 'w');
    assert.match(e.message, /found \[\[\[\[/);

    const offsets = await writeHeaderFile(fresh(), [
      Buffer.from(`{"w":{"dtype":"U8","shape":[0],"data_offsets":${deep(200_000)}}}`),
    ]);
    await expectCode(readSafetensorsFile(offsets), 'INVALID_OFFSETS', offsets, 'w');

    const root = await writeHeaderFile(fresh(), [Buffer.from(deep(1_000_000))]);
    await expectCode(readSafetensorsFile(root), 'INVALID_HEADER', root);

    const objects = `${'{"a":'.repeat(200_000)}1${'}'.repeat(200_000)}`;
    const entry = await writeHeaderFile(fresh(), [Buffer.from(`{"w":${objects}}`)]);
    await expectCode(readSafetensorsFile(entry), 'INVALID_HEADER', entry, 'w');

    const metadata = await writeHeaderFile(fresh(), [Buffer.from(`{"__metadata__":{"k":${deep(200_000)}}}`)]);
    await expectCode(readSafetensorsFile(metadata), 'INVALID_METADATA', metadata);

    // A duplicate key at the bottom of 200k objects is still found, and named by its path.
    const dup = `${'{"a":'.repeat(200_000)}{"k":1,"k":2}${'}'.repeat(200_000)}`;
    const dupFile = await writeHeaderFile(fresh(), [Buffer.from(`{"w":${dup}}`)]);
    await expectCode(readSafetensorsFile(dupFile), 'DUPLICATE_KEY', dupFile, 'w');

    const unclosed = await writeHeaderFile(fresh(), [Buffer.from('['.repeat(1_000_000))]);
    await expectCode(readSafetensorsFile(unclosed), 'INVALID_HEADER', unclosed);

    const index = path.join(tmp.dir, `deep-index-${++n}`);
    await mkdir(index);
    const indexFile = path.join(index, 'model.safetensors.index.json');
    await writeFile(indexFile, `{"weight_map":{"w":${deep(200_000)}}}`);
    await expectCode(openCheckpoint(index), 'INVALID_INDEX', indexFile, 'w');
  });

  it('an index file over 64 MiB: INDEX_TOO_LARGE naming it, refused before it is read', async () => {
    const dir = path.join(tmp.dir, `big-index-${++n}`);
    await mkdir(dir);
    const indexFile = path.join(dir, 'model.safetensors.index.json');
    await writeFile(indexFile, '');
    await truncate(indexFile, MAX_INDEX_SIZE + 1); // sparse: nothing to read, and nothing is
    const e = await expectCode(openCheckpoint(dir), 'INDEX_TOO_LARGE', indexFile);
    assert.match(e.message, /64 MiB/);
  });

  it('an index of 600k tensors (33 MB) parses without stalling the loop', async () => {
    const file = path.join(tmp.dir, `index-${++n}.json`);
    const count = 600_000;
    const lines: string[] = [];
    for (let i = 0; i < count; i++)
      lines.push(`    "model.layers.${i}.weight": "model-0000${i % 4}-of-00004.safetensors"`);
    await writeFile(
      file,
      `{\n  "metadata": {"total_size": 0},\n  "weight_map": {\n${lines.join(',\n')}\n  }\n}\n`,
    );
    const index = await assertLive('parsing a 600k-tensor index', () => readIndexFile(file));
    assert.equal(index.weightMap.size, count);
    assert.deepEqual(
      [...index.shards.keys()].sort(),
      [0, 1, 2, 3].map((i) => `model-0000${i}-of-00004.safetensors`),
    );
    assert.equal(index.weightMap.get('model.layers.599999.weight'), 'model-00003-of-00004.safetensors');
  });
});

async function headerLength(file: string): Promise<number> {
  const handle = await open(file, 'r');
  try {
    const prefix = Buffer.alloc(8);
    await handle.read(prefix, 0, 8, 0);
    return Number(prefix.readBigUInt64LE(0));
  } finally {
    await handle.close();
  }
}
