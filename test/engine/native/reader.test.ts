import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { NativeAddon, NativeInputFile, NativeRangeRead } from '../../../lib/engine/native/addon-types';
import { addonCandidates } from '../../../lib/engine/native/loader';
import { randomBytes } from '../../helpers/random';
import { useTmpDir } from '../../helpers/tmp';
import { addonOrSkip } from '../../helpers/addon';
import { dropFromPageCache, withRamfs } from '../../helpers/pageCache';

const codeOf = (e: unknown): unknown => (e as { code?: unknown }).code;
const BLOCK = 4096;
const alignUp = (n: number): number => Math.ceil(n / BLOCK) * BLOCK;

describe('native reader: direct and buffered reads into pipeline buffers', function () {
  this.timeout(120_000);
  const tmp = useTmpDir('model-stock-reader-');
  let addon: NativeAddon;
  let file: string;
  let data: Uint8Array;
  before(function () {
    addon = addonOrSkip(this);
    file = path.join(tmp.dir, 'data.bin');
    data = randomBytes(9 * 1024 * 1024 + 12345, 22);
    fs.writeFileSync(file, data);
  });

  const ranges: readonly (readonly [number, number])[] = [
    [0, 1],
    [7, 4095],
    [4096, 4096],
    [4095, 2],
    [3, 1024 * 1024 + 3],
    [1, 5 * 1024 * 1024 + 77],
    [0, 9 * 1024 * 1024 + 12345],
    [9 * 1024 * 1024 + 12345 - 10, 10], // the tail of a file whose size is no multiple of a block
  ];

  for (const direct of [true, false]) {
    const mode = direct ? 'O_DIRECT' : 'buffered';
    it(`${mode}: laid-out regions get the exact bytes at their head, chunked and in flight at once`, async () => {
      const f = await addon.openInputFile(file, { direct });
      try {
        assert.equal(f.size, data.length);
        assert.deepEqual(addon.inputFileInfo(f), { direct });
        for (const chunkBytes of [4096, 1 << 20]) {
          for (const queueDepth of [1, 3]) {
            // Each range's region starts at the block holding its first byte, as fileSource.ts lays it out.
            const reads: NativeRangeRead[] = ranges.map(([position, length]) => {
              const head = position % BLOCK;
              return { file: f, position, length, head, target: addon.allocHost(alignUp(head + length), BLOCK) };
            });
            await addon.readRanges(reads, { queueDepth, chunkBytes });
            for (const r of reads) {
              const got = r.target.subarray(r.head, r.head + r.length);
              assert.ok(
                Buffer.from(got).equals(Buffer.from(data.subarray(r.position, r.position + r.length))),
                `${mode}, chunks of ${chunkBytes}, depth ${queueDepth}: ${r.length} at ${r.position}`,
              );
              addon.freeHost(r.target);
            }
          }
        }
      } finally {
        addon.closeInputFile(f);
      }
    });

    it(`${mode}: unaligned targets (any buffer, any head) are read through bounce blocks`, async () => {
      const f = await addon.openInputFile(file, { direct });
      try {
        for (const [position, length] of ranges) {
          const host = new Uint8Array(length + 40);
          const target = host.subarray(3, 3 + length + 20);
          await addon.readRanges([{ file: f, position, length, head: 11, target }], {
            queueDepth: 2,
            chunkBytes: 8192,
          });
          assert.ok(
            Buffer.from(target.subarray(11, 11 + length)).equals(Buffer.from(data.subarray(position, position + length))),
            `${mode}: ${length} at ${position}`,
          );
          assert.ok(host.subarray(0, 14).every((b) => b === 0), 'nothing written before the head');
          assert.ok(host.subarray(14 + length).every((b) => b === 0), 'nothing written after the range');
        }
      } finally {
        addon.closeInputFile(f);
      }
    });
  }

  it('a file that shrank is an IO_ERROR naming it (short read); bad arguments are INVALID_ARGUMENT', async () => {
    const copy = path.join(tmp.dir, 'shrinks.bin');
    fs.writeFileSync(copy, data);
    for (const direct of [true, false]) {
      const f = await addon.openInputFile(copy, { direct });
      try {
        fs.truncateSync(copy, 3 * 1024 * 1024 + 5);
        const target = addon.allocHost(2 * 1024 * 1024, BLOCK);
        await assert.rejects(
          addon.readRanges([{ file: f, position: 2 * 1024 * 1024, length: 2 * 1024 * 1024, head: 0, target }], {
            queueDepth: 2,
            chunkBytes: 1 << 20,
          }),
          (e: unknown) => {
            assert.equal(codeOf(e), 'IO_ERROR');
            assert.match((e as Error).message, /short read/);
            assert.ok((e as Error).message.startsWith(copy));
            return true;
          },
        );
        addon.freeHost(target);
      } finally {
        addon.closeInputFile(f);
        fs.writeFileSync(copy, data);
      }
    }
    const f = await addon.openInputFile(file, { direct: true });
    const opts = { queueDepth: 1, chunkBytes: 4096 };
    const read = (r: Partial<NativeRangeRead>, o: object = opts): Promise<void> =>
      addon.readRanges([{ file: f, position: 0, length: 4, head: 0, target: new Uint8Array(8), ...r }], o as never);
    await assert.rejects(read({ position: data.length - 2 }), (e: unknown) => codeOf(e) === 'INVALID_ARGUMENT');
    await assert.rejects(read({ head: 5 }), (e: unknown) => codeOf(e) === 'INVALID_ARGUMENT');
    await assert.rejects(read({ position: 0.5 }), (e: unknown) => codeOf(e) === 'INVALID_ARGUMENT');
    await assert.rejects(read({ target: new Float32Array(2) as never }), (e: unknown) => codeOf(e) === 'INVALID_ARGUMENT');
    await assert.rejects(read({ file: { path: file } as NativeInputFile }), /expected an open file/);
    await assert.rejects(read({}, { queueDepth: 0, chunkBytes: 4096 }), (e: unknown) => codeOf(e) === 'INVALID_ARGUMENT');
    await assert.rejects(read({}, { queueDepth: 1, chunkBytes: 4097 }), (e: unknown) => codeOf(e) === 'INVALID_ARGUMENT');
    addon.closeInputFile(f);
    await assert.rejects(read({}), /expected an open file/);
    await assert.rejects(addon.openInputFile(path.join(tmp.dir, 'missing'), { direct: true }), (e: unknown) => {
      assert.equal(codeOf(e), 'IO_ERROR');
      assert.match((e as Error).message, /missing: cannot open/);
      return true;
    });
  });

  it('a set abort flag stops a batch between chunks: CANCELLED', async () => {
    const f = await addon.openInputFile(file, { direct: true });
    try {
      const abort = new Int32Array(new SharedArrayBuffer(4));
      Atomics.store(abort, 0, 1);
      const target = addon.allocHost(alignUp(data.length), BLOCK);
      await assert.rejects(
        addon.readRanges([{ file: f, position: 0, length: data.length, head: 0, target }], {
          queueDepth: 2,
          chunkBytes: 4096,
          abort,
        }),
        (e: unknown) => codeOf(e) === 'CANCELLED',
      );
      addon.freeHost(target);
    } finally {
      addon.closeInputFile(f);
    }
  });

  it('refused O_DIRECT (injected at open, or at the first read) reads buffered, saying why', async () => {
    for (const refuse of [['directOpen'], ['directRead']] as const) {
      const f = await addon.openInputFile(file, { direct: true, refuse });
      try {
        const target = addon.allocHost(alignUp(5000 + 7), BLOCK);
        await addon.readRanges([{ file: f, position: 4096 + 7, length: 5000, head: 7, target }], {
          queueDepth: 2,
          chunkBytes: 4096,
        });
        assert.ok(Buffer.from(target.subarray(7, 5007)).equals(Buffer.from(data.subarray(4103, 9103))), refuse[0]);
        const info = addon.inputFileInfo(f);
        assert.equal(info.direct, false, refuse[0]);
        assert.match(
          info.fallback ?? '',
          refuse[0] === 'directOpen' ? /^O_DIRECT refused \(Invalid argument\)$/ : /^O_DIRECT read refused \(Invalid argument\)$/,
        );
        addon.freeHost(target);
      } finally {
        addon.closeInputFile(f);
      }
    }
    await assert.rejects(addon.openInputFile(file, { direct: true, refuse: ['nope' as never] }), /unknown refusal/);
  });

  it('ramfs refuses O_DIRECT (EINVAL): the file is read buffered, and the probe says so', async function () {
    await withRamfs(this, async (dir) => {
      const onRamfs = path.join(dir, 'data.bin');
      fs.writeFileSync(onRamfs, data.subarray(0, 100_000));
      const f = await addon.openInputFile(onRamfs, { direct: true });
      try {
        assert.deepEqual(addon.inputFileInfo(f), { direct: false, fallback: 'O_DIRECT refused (Invalid argument)' });
        const target = new Uint8Array(1000);
        await addon.readRanges([{ file: f, position: 99_000, length: 1000, head: 0, target }], {
          queueDepth: 1,
          chunkBytes: 4096,
        });
        assert.deepEqual(target, data.subarray(99_000, 100_000));
      } finally {
        addon.closeInputFile(f);
      }
      const probe = await addon.probeDirectIo(dir);
      assert.match(String(probe.read), /Invalid argument/);
      assert.match(String(probe.write), /Invalid argument/);
      assert.deepEqual(fs.readdirSync(dir), ['data.bin'], 'the probe file is gone');
    });
  });

  it('probeDirectIo: a folder on a file system that takes O_DIRECT; a missing folder says why', async () => {
    const probe = await addon.probeDirectIo(tmp.dir);
    assert.deepEqual([probe.read, probe.write], [true, true]);
    assert.ok(!fs.readdirSync(tmp.dir).some((n) => n.startsWith('.model-stock-direct-probe')), 'probe removed');
    const missing = await addon.probeDirectIo(path.join(tmp.dir, 'missing'));
    assert.match(String(missing.write), /cannot create a probe file: No such file/);
    assert.match(String(missing.read), /cannot list the folder/);
  });

  it('inputResidency says how much of a file the page cache holds; direct reads leave it out', async function () {
    if (process.platform !== 'linux') this.skip();
    const cold = path.join(tmp.dir, 'cold.bin');
    fs.writeFileSync(cold, data);
    const [warm] = await addon.inputResidency([cold]);
    assert.equal(warm!.size, data.length);
    assert.equal(warm!.exact, true);
    assert.ok(warm!.resident > data.length * 0.9, `just written: ${warm!.resident} of ${data.length} cached`);
    dropFromPageCache(cold);
    const [dropped] = await addon.inputResidency([cold]);
    assert.ok(dropped!.resident < 64 * 1024, `dropped: ${dropped!.resident} cached`);
    const f = await addon.openInputFile(cold, { direct: true });
    const target = addon.allocHost(alignUp(data.length), BLOCK);
    await addon.readRanges([{ file: f, position: 0, length: data.length, head: 0, target }], {
      queueDepth: 4,
      chunkBytes: 1 << 20,
    });
    addon.closeInputFile(f);
    assert.ok(Buffer.from(target.subarray(0, data.length)).equals(Buffer.from(data)));
    addon.freeHost(target);
    const [after] = await addon.inputResidency([cold]);
    assert.ok(after!.resident < 64 * 1024, `after a direct read: ${after!.resident} cached`);
    const [missing] = await addon.inputResidency([path.join(tmp.dir, 'missing')]);
    assert.match(missing!.error ?? '', /cannot open/);
  });

  it('nothing is left open: files close once their last read settled, no batch stays in flight', async () => {
    const before = addon.inputReaderStats();
    const f = await addon.openInputFile(file, { direct: true });
    assert.equal(addon.inputReaderStats().openFiles, before.openFiles + 1);
    const target = addon.allocHost(alignUp(data.length), BLOCK);
    const reading = addon.readRanges([{ file: f, position: 0, length: data.length, head: 0, target }], {
      queueDepth: 2,
      chunkBytes: 4096,
    });
    addon.closeInputFile(f); // the batch holds the file until it settles
    await reading;
    assert.ok(Buffer.from(target.subarray(0, data.length)).equals(Buffer.from(data)));
    addon.freeHost(target);
    const after = addon.inputReaderStats();
    assert.equal(after.openFiles, before.openFiles);
    assert.equal(after.batches, 0);
    assert.ok(after.ioThreads >= 2 && after.ioThreads <= 64);
    // the process exits with nothing pending: a child reads and ends normally
    const script = `
      const a = require(process.argv[1]);
      a.openInputFile(process.argv[2], { direct: true }).then(async (f) => {
        await a.readRanges([{ file: f, position: 0, length: 10, head: 0, target: new Uint8Array(10) }], { queueDepth: 1, chunkBytes: 4096 });
        a.closeInputFile(f);
        console.log(JSON.stringify(a.inputReaderStats()));
      });`;
    const out = execFileSync(process.execPath, ['-e', script, addonCandidates()[0]!.file, file], {
      encoding: 'utf8',
      env: { ...process.env },
    });
    assert.equal(JSON.parse(out).batches, 0);
  });
});
