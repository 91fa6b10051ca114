import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type {
  NativeAddon,
  NativeShardWriterOptions,
  NativeWriteMode,
} from '../../../lib/engine/native/addon-types';
import { ModelStockError } from '../../../lib/errors';
import { mulberry32, randomBytes } from '../../helpers/random';
import { useTmpDir } from '../../helpers/tmp';
import { addonOrSkip } from '../../helpers/addon';

/** [start, end) pieces covering [0, size) in random lengths (1 byte up to ~3 blocks), shuffled. */
function randomPieces(size: number, seed: number, maxPiece: number): [number, number][] {
  const rng = mulberry32(seed);
  const pieces: [number, number][] = [];
  for (let at = 0; at < size; ) {
    const n = Math.min(size - at, 1 + Math.floor(rng() * rng() * maxPiece));
    pieces.push([at, at + n]);
    at += n;
  }
  for (let i = pieces.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [pieces[i], pieces[j]] = [pieces[j]!, pieces[i]!];
  }
  return pieces;
}

describe('native shard writer: every mode writes the same bytes, refusals downgrade', function () {
  this.timeout(60_000);
  const tmp = useTmpDir('model-stock-native-writer-');
  let addon: NativeAddon;
  before(function () {
    addon = addonOrSkip(this);
  });

  let n = 0;
  const fresh = (): string => path.join(tmp.dir, `shard-${n++}.safetensors`);

  /**
   * Writes `data` through a writer in random pieces, several in flight at once (the engine has two),
   * closes it and checks the file; returns the writer's mode and fallback at the end.
   */
  async function roundTrip(
    data: Uint8Array,
    options: NativeShardWriterOptions,
    seed: number,
    fsync = seed % 2 === 0,
  ): Promise<{ mode: NativeWriteMode; fallback?: string }> {
    const file = fresh();
    const w = await addon.openShardWriter(file, data.byteLength, options);
    assert.equal(w.path, file);
    assert.equal(w.size, data.byteLength);
    const pieces = randomPieces(data.byteLength, seed, 3 * (options.blockBytes ?? 4096));
    for (let i = 0; i < pieces.length; i += 3) {
      await Promise.all(
        pieces.slice(i, i + 3).map(([a, b]) => addon.shardWrite(w, a, data.subarray(a, b))),
      );
    }
    const info = addon.shardWriterInfo(w);
    const seconds = await addon.closeShardWriter(w, fsync);
    assert.ok(seconds >= 0 && (fsync || seconds === 0), `fsync seconds ${seconds}`);
    assert.deepEqual(new Uint8Array(fs.readFileSync(file)), data, `${options.mode} (${JSON.stringify(options)})`);
    return info;
  }

  for (const refuse of [[], ['directWrite']] as const) {
    it(`direct${refuse.length > 0 ? ', the first O_DIRECT write refused' : ''}: bytes laid out like the file are written from the caller's buffer, staged ones around them`, async () => {
      for (const [i, size] of [50_001, 123_457, 3 * 65536 + 5].entries()) {
        const data = randomBytes(size, 300 + i);
        // At the same offset within a 4 KiB block as in the file; and a copy that never is.
        const aligned = addon.allocHost(size, 4096);
        aligned.set(data);
        const shifted = new Uint8Array(size + 1).subarray(1);
        shifted.set(data);
        const file = fresh();
        const w = await addon.openShardWriter(file, size, { mode: 'direct', blockBytes: 16384, refuse: [...refuse] });
        const pieces = randomPieces(size, 400 + i, 40_000);
        await Promise.all(
          pieces.map(([a, b], k) => addon.shardWrite(w, a, (k % 2 === 0 ? aligned : shifted).subarray(a, b))),
        );
        assert.deepEqual(
          addon.shardWriterInfo(w),
          refuse.length > 0 ? { mode: 'rolling', fallback: 'O_DIRECT write refused (Invalid argument)' } : { mode: 'direct' },
        );
        await addon.closeShardWriter(w, false);
        assert.deepEqual(new Uint8Array(fs.readFileSync(file)), data, `${size} bytes`);
        addon.freeHost(aligned);
      }
      assert.equal(addon.shardWriterStats().stagingBlocks, 0);
    });
  }

  // Sizes that are not multiples of the page, the 4 KiB alignment or the block, and one that is.
  const sizes = [1, 4095, 4096, 8192 * 3, 8192 * 3 + 1, 50_001, 123_457];

  for (const mode of ['direct', 'rolling', 'plain'] as const) {
    it(`${mode}: any size, pieces in any order and length, several in flight, blocks and flushes crossed`, async () => {
      for (const [i, size] of sizes.entries()) {
        const data = randomBytes(size, 100 + i);
        const info = await roundTrip(data, { mode, blockBytes: 8192, flushBytes: 5000 }, i);
        assert.deepEqual(info, { mode });
      }
    });
  }

  it('direct with default sizes (16 MiB blocks): one partial block, truncated to the size at close', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 17, 7);
    assert.deepEqual(await roundTrip(data, { mode: 'direct' }, 1), { mode: 'direct' });
  });

  it('O_DIRECT refused at open: rolling writeback instead, and the reason', async () => {
    const data = randomBytes(50_001, 8);
    const info = await roundTrip(data, { mode: 'direct', blockBytes: 8192, flushBytes: 5000, refuse: ['direct'] }, 3);
    assert.equal(info.mode, 'rolling');
    assert.match(info.fallback ?? '', /O_DIRECT refused \(Invalid argument\)/);
  });

  it('O_DIRECT refused at the first write: that block and the rest go buffered, bytes unchanged', async () => {
    const data = randomBytes(123_457, 9);
    for (const seed of [4, 5]) {
      const info = await roundTrip(
        data,
        { mode: 'direct', blockBytes: 8192, flushBytes: 5000, refuse: ['directWrite'] },
        seed,
      );
      assert.equal(info.mode, 'rolling');
      assert.match(info.fallback ?? '', /O_DIRECT write refused/);
    }
  });

  it('sync_file_range refused: plain writes with a periodic fdatasync, and the reason', async () => {
    const data = randomBytes(50_001, 10);
    const rolling = await roundTrip(data, { mode: 'rolling', flushBytes: 5000, refuse: ['syncFileRange'] }, 6);
    assert.equal(rolling.mode, 'plain');
    assert.match(rolling.fallback ?? '', /sync_file_range refused/);
    // Both refused: direct → rolling → plain; the first reason is the one kept.
    const both = await roundTrip(
      data,
      { mode: 'direct', blockBytes: 8192, flushBytes: 5000, refuse: ['direct', 'syncFileRange'] },
      7,
    );
    assert.equal(both.mode, 'plain');
    assert.match(both.fallback ?? '', /O_DIRECT refused/);
  });

  it('never opens a file that exists: IO_ERROR, and the file is untouched', async () => {
    const file = fresh();
    fs.writeFileSync(file, 'precious');
    for (const mode of ['direct', 'rolling', 'plain'] as const) {
      await assert.rejects(addon.openShardWriter(file, 10, { mode }), (e: unknown) => {
        assert.ok(e instanceof ModelStockError);
        assert.equal(e.code, 'IO_ERROR');
        assert.match(e.message, /cannot create: File exists/);
        return true;
      });
    }
    assert.equal(fs.readFileSync(file, 'utf8'), 'precious');
  });

  it('contract breaches are INVALID_ARGUMENT: bytes outside the file, a closed writer, bad options', async () => {
    const invalid = (e: unknown): boolean => e instanceof ModelStockError && e.code === 'INVALID_ARGUMENT';
    const w = await addon.openShardWriter(fresh(), 100, { mode: 'direct', blockBytes: 8192 });
    await assert.rejects(addon.shardWrite(w, 90, new Uint8Array(11)), invalid);
    await assert.rejects(addon.shardWrite(w, -1, new Uint8Array(1)), invalid);
    await assert.rejects(addon.shardWrite({} as never, 0, new Uint8Array(1)), invalid);
    await assert.rejects(addon.shardWrite(w, 0, [1, 2] as never), invalid);
    await addon.abortShardWriter(w);
    await assert.rejects(addon.shardWrite(w, 0, new Uint8Array(1)), /closed/);
    await assert.rejects(addon.closeShardWriter(w, false), invalid);
    for (const options of [
      { mode: 'fast' },
      { mode: 'direct', blockBytes: 5000 },
      { mode: 'rolling', flushBytes: 0 },
      { mode: 'rolling', refuse: ['everything'] },
    ]) {
      await assert.rejects(addon.openShardWriter(fresh(), 1, options as never), invalid, JSON.stringify(options));
    }
  });

  it('a close with bytes still staged (a block never completed) is refused, and abort still closes', async () => {
    const file = fresh();
    const w = await addon.openShardWriter(file, 10_000, { mode: 'direct', blockBytes: 8192 });
    await addon.shardWrite(w, 0, new Uint8Array(8191));
    await assert.rejects(addon.closeShardWriter(w, false), /never received all their bytes/);
    await addon.abortShardWriter(w);
  });
});

describe('native read-ahead hints', function () {
  const tmp = useTmpDir('model-stock-native-hints-');
  let addon: NativeAddon;
  before(function () {
    addon = addonOrSkip(this);
  });

  it('fileWillNeed and mapWillNeed settle for any range and leave the bytes as they are', async () => {
    const file = path.join(tmp.dir, 'input.bin');
    const data = randomBytes(1_000_003, 3);
    fs.writeFileSync(file, data);
    const fd = fs.openSync(file, 'r');
    const m = addon.mapFile(file);
    try {
      for (const [offset, length] of [
        [0, 0],
        [0, data.length],
        [12_345, 777_777],
        [data.length - 1, 1],
      ] as const) {
        await addon.fileWillNeed(fd, offset, length);
        await addon.mapWillNeed(m, offset, length);
      }
      assert.deepEqual(addon.mapView(m, 0, data.length), data);
    } finally {
      addon.unmap(m);
      fs.closeSync(fd);
    }
    // An unmapped handle: nothing left to advise.
    await addon.mapWillNeed(m, 0, 1);
  });

  it('bad arguments are INVALID_ARGUMENT', async () => {
    const invalid = (e: unknown): boolean => e instanceof ModelStockError && e.code === 'INVALID_ARGUMENT';
    const file = path.join(tmp.dir, 'small.bin');
    fs.writeFileSync(file, 'abc');
    const m = addon.mapFile(file);
    await assert.rejects(addon.fileWillNeed(-1, 0, 1), invalid);
    await assert.rejects(addon.fileWillNeed(0, 0.5, 1), invalid);
    await assert.rejects(addon.mapWillNeed(m, 2, 2), invalid);
    await assert.rejects(addon.mapWillNeed({} as never, 0, 1), invalid);
    addon.unmap(m);
  });
});
