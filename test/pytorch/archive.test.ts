/**
 * One PyTorch file read as a tensor table (lib/pytorch/archive.ts, zip.ts) from crafted archives: the
 * zip structure checked at every offset and length, storages against the tensors on them, the state
 * dict rule, and every damaged file ending in a coded error naming it.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isModelStockError, type ErrorCode } from '../../lib/errors';
import { readPytorchFile, readPytorchSource } from '../../lib/pytorch/archive';
import { memorySource } from '../../lib/pytorch/source';
import { crc32OfZeros, stateDictPickle, torchFileBytes, writeTorchFile } from '../../lib/fixtures/torchZip';
import { archiveOf, f32, fixture, PickleBuilder, sha256, tensorBytes, rejectsWith } from '../helpers/pytorch';
import { mulberry32 } from '../helpers/random';
import { useTmpDir } from '../helpers/tmp';

const FILE = '/test/model.bin';
const P = (): PickleBuilder => new PickleBuilder().proto(2);
const read = (bytes: Uint8Array, stateDictKey?: string) =>
  readPytorchSource(memorySource(FILE, bytes), stateDictKey === undefined ? {} : { stateDictKey });

const rejects = (bytes: Uint8Array, code: ErrorCode, ...mention: (string | RegExp)[]) =>
  rejectsWith(read(bytes), code, FILE, ...mention);

const CODED: readonly ErrorCode[] = [
  'INVALID_ARCHIVE',
  'INVALID_PICKLE',
  'INVALID_STORAGE',
  'UNSUPPORTED_FORMAT',
  'NON_CONTIGUOUS',
];

/** A one-tensor archive: `w` = [1, 2, 3, 4] float32 over storage "0" (numel `numel`). */
function oneTensor(
  o: { numel?: number; offset?: number; shape?: number[]; stride?: number[]; type?: string } = {},
) {
  return P()
    .emptyDict()
    .str('w')
    .tensorV2(o.type ?? 'FloatStorage', '0', o.numel ?? 4, o.shape ?? [4], {
      offset: o.offset ?? 0,
      ...(o.stride !== undefined ? { stride: o.stride } : {}),
    })
    .setitem()
    .stop()
    .bytes();
}

describe('PyTorch archives', () => {
  const tmp = useTmpDir();

  describe('storages and the tensors on them', () => {
    it('a tensor is its storage entry + offset · itemsize: a view into the file, no copy', async () => {
      const bytes = await archiveOf([
        ['data.pkl', oneTensor({ numel: 6, offset: 2, shape: [4] })],
        ['data/0', f32(0, 0, 1, 2, 3, 4)],
      ]);
      const { tensors } = await read(bytes);
      const [w] = tensors;
      assert.equal(w!.byteLength, 16);
      assert.deepEqual([...new Float32Array(bytes.slice(w!.offset, w!.offset + 16).buffer)], [1, 2, 3, 4]);
    });

    it('a storage shorter than its record says: INVALID_STORAGE naming the tensor', async () => {
      const bytes = await archiveOf([
        ['data.pkl', oneTensor({ numel: 8, shape: [8] })],
        ['data/0', f32(1, 2, 3, 4)],
      ]);
      const e = await rejects(bytes, 'INVALID_STORAGE', 'holds 16 bytes, fewer than the 32');
      assert.equal(e.tensor, 'w');
    });

    it('a tensor reaching past its storage: INVALID_STORAGE naming it', async () => {
      const bytes = await archiveOf([
        ['data.pkl', oneTensor({ numel: 4, offset: 2, shape: [4] })],
        ['data/0', f32(1, 2, 3, 4)],
      ]);
      await rejects(bytes, 'INVALID_STORAGE', 'needs bytes [8, 24) of storage data/0, which holds 16');
    });

    it('a storage with no record in the archive: INVALID_STORAGE', async () => {
      await rejects(
        await archiveOf([['data.pkl', oneTensor()]]),
        'INVALID_STORAGE',
        'no record archive/data/0',
      );
    });

    it('a storage type model-stock cannot read (QInt8Storage): INVALID_STORAGE naming the tensor', async () => {
      const bytes = await archiveOf([
        ['data.pkl', oneTensor({ type: 'QInt8Storage' })],
        ['data/0', new Uint8Array(4)],
      ]);
      await rejects(bytes, 'INVALID_STORAGE', 'torch.QInt8Storage');
    });

    it('strided views: NON_CONTIGUOUS; size-1 dimensions and empty tensors are contiguous whatever their strides', async () => {
      const data = f32(1, 2, 3, 4, 5, 6);
      await rejects(
        await archiveOf([
          ['data.pkl', oneTensor({ numel: 6, shape: [2, 3], stride: [1, 2] })],
          ['data/0', data],
        ]),
        'NON_CONTIGUOUS',
        'strides [1, 2]',
      );
      await rejects(
        await archiveOf([
          ['data.pkl', oneTensor({ numel: 6, shape: [3], stride: [2] })],
          ['data/0', data],
        ]),
        'NON_CONTIGUOUS',
      );
      const ok = await read(
        await archiveOf([
          ['data.pkl', oneTensor({ numel: 6, shape: [1, 3], stride: [99, 1] })],
          ['data/0', data],
        ]),
      );
      assert.deepEqual(ok.tensors[0]!.shape, [1, 3]);
      const empty = await read(
        await archiveOf([
          ['data.pkl', oneTensor({ numel: 6, shape: [0, 3], stride: [7, 7] })],
          ['data/0', data],
        ]),
      );
      assert.equal(empty.tensors[0]!.byteLength, 0);
    });

    it('v3 with a typed storage of another dtype: INVALID_STORAGE', async () => {
      const pickle = P()
        .emptyDict()
        .str('w')
        .global('torch._utils', '_rebuild_tensor_v3')
        .mark()
        .storage('FloatStorage', '0', 1)
        .int(0)
        .ints([2])
        .ints([1])
        .bool(false)
        .global('collections', 'OrderedDict')
        .emptyTuple()
        .reduce()
        .global('torch', 'float16')
        .tuple()
        .reduce()
        .setitem()
        .stop()
        .bytes();
      await rejects(
        await archiveOf([
          ['data.pkl', pickle],
          ['data/0', f32(1)],
        ]),
        'INVALID_STORAGE',
        'F16 tensor over',
      );
    });

    it('tensors of the dict only: non-tensor values beside them are counted, not read', async () => {
      const pickle = P()
        .emptyDict()
        .mark()
        .str('w')
        .tensorV2('FloatStorage', '0', 4, [4])
        .str('_extra_state')
        .int(3)
        .str('nested')
        .emptyDict()
        .setitems()
        .stop()
        .bytes();
      const { tensors, stateDict } = await read(
        await archiveOf([
          ['data.pkl', pickle],
          ['data/0', f32(1, 2, 3, 4)],
        ]),
      );
      assert.deepEqual(
        tensors.map((t) => t.name),
        ['w'],
      );
      assert.equal(stateDict.ignored, 2);
      assert.deepEqual(stateDict.ignoredNames, ['_extra_state', 'nested']);
    });
  });

  describe('finding the state dict', () => {
    const nested = (keys: readonly string[]) => {
      const b = P().emptyDict().mark().str('epoch').int(3);
      keys.forEach((k, i) =>
        b.str(k).emptyDict().str(`${k}.w`).tensorV2('FloatStorage', String(i), 1, [1]).setitem(),
      );
      return b.setitems().stop().bytes();
    };
    const withStorages = async (pickle: Uint8Array, n: number) =>
      archiveOf([
        ['data.pkl', pickle],
        ...Array.from({ length: n }, (_, i) => [`data/${i}`, f32(i)] as const),
      ]);

    for (const key of ['state_dict', 'model_state_dict', 'model', 'module']) {
      it(`nested under "${key}"`, async () => {
        const { tensors, stateDict } = await read(await withStorages(nested(['optimizer_junk', key]), 2));
        // Under "module" every name starts with "module.": stripped as a DDP prefix.
        assert.deepEqual(
          tensors.map((t) => t.name),
          [key === 'module' ? 'w' : `${key}.w`],
        );
        assert.equal(stateDict.key, key);
      });
    }

    it('the first of state_dict, model_state_dict, model, module that holds tensors wins', async () => {
      const { stateDict } = await read(await withStorages(nested(['module', 'model', 'state_dict']), 3));
      assert.equal(stateDict.key, 'state_dict');
    });

    it('*_ema only when asked for; no state dict: INVALID_PICKLE naming the entries and the dicts of tensors', async () => {
      const bytes = await withStorages(nested(['model_ema']), 1);
      await rejects(bytes, 'INVALID_PICKLE', 'no state dict', '"epoch", "model_ema"', '--state-dict-key');
      const { tensors } = await read(bytes, 'model_ema');
      assert.deepEqual(
        tensors.map((t) => t.name),
        ['model_ema.w'],
      );
    });

    it('a whole pickled model (an object, not a dict): INVALID_PICKLE saying to save its state_dict()', async () => {
      const pickle = P().global('__main__', 'Net').emptyTuple().raw(0x81).emptyDict().build().stop().bytes();
      await rejects(
        await archiveOf([['data.pkl', pickle]]),
        'INVALID_PICKLE',
        '__main__.Net',
        'state_dict()',
      );
    });

    it('a module. prefix only on some names is kept', async () => {
      const pickle = P()
        .emptyDict()
        .mark()
        .str('module.a')
        .tensorV2('FloatStorage', '0', 1, [1])
        .str('b')
        .tensorV2('FloatStorage', '1', 1, [1])
        .setitems()
        .stop()
        .bytes();
      const { tensors, stateDict } = await read(await withStorages(pickle, 2));
      assert.deepEqual(
        tensors.map((t) => t.name),
        ['module.a', 'b'],
      );
      assert.equal(stateDict.strippedPrefix, false);
    });
  });

  describe('the zip container', () => {
    const valid = () =>
      archiveOf([
        ['data.pkl', oneTensor()],
        ['data/0', f32(1, 2, 3, 4)],
        ['version', Buffer.from('3\n')],
      ]);

    it('not a zip: tar, bare pickle and legacy streams are UNSUPPORTED_FORMAT; anything else INVALID_ARCHIVE', async () => {
      const tar = new Uint8Array(1024);
      tar.set(Buffer.from('ustar'), 257);
      await rejects(tar, 'UNSUPPORTED_FORMAT', 'tar archive');
      await rejects(oneTensor(), 'UNSUPPORTED_FORMAT', 'bare pickle');
      await rejects(fs.readFileSync(fixture('legacy.pt')), 'UNSUPPORTED_FORMAT', 'legacy');
      await rejects(Buffer.from('{"not": "a checkpoint"}'), 'INVALID_ARCHIVE', 'not a zip archive');
      await rejects(new Uint8Array(0), 'INVALID_ARCHIVE');
    });

    it('a comment after the end record is read past; no data.pkl or a bad byteorder is INVALID_ARCHIVE', async () => {
      const bytes = Buffer.from(await valid());
      // The end record's comment length (its last two bytes), then the comment.
      const commented = Buffer.concat([
        bytes.subarray(0, -2),
        Buffer.from([4, 0]),
        Buffer.from('PK\x05\x06'),
      ]);
      assert.equal((await read(commented)).tensors.length, 1);
      await rejects(await archiveOf([['data/0', f32(1)]]), 'INVALID_ARCHIVE', 'no archive/data.pkl');
      await rejects(
        await archiveOf([
          ['byteorder', Buffer.from('middle')],
          ['data.pkl', oneTensor()],
          ['data/0', f32(1, 2, 3, 4)],
        ]),
        'INVALID_ARCHIVE',
        'byteorder',
      );
    });

    it('entry names: one top folder, no .. or absolute paths, no backslash', async () => {
      const bytes = Buffer.from(await valid());
      const rename = (from: string, to: string): Buffer => {
        assert.equal(from.length, to.length);
        const out = Buffer.from(bytes);
        for (let at = out.indexOf(from); at >= 0; at = out.indexOf(from, at + 1)) out.write(to, at, 'latin1');
        return out;
      };
      await rejects(
        rename('archive/version', 'other00/version'),
        'INVALID_ARCHIVE',
        'outside',
        'top folder "archive/"',
      );
      await rejects(rename('archive/version', 'archive/../vers'), 'INVALID_ARCHIVE', 'not a plain path');
      await rejects(rename('archive/version', '/rchive/version'), 'INVALID_ARCHIVE', 'no top folder');
      await rejects(rename('archive/version', 'archive/ver\\ion'), 'INVALID_ARCHIVE', 'not a plain path');
    });

    it('a record named twice: INVALID_ARCHIVE', async () => {
      const bytes = Buffer.from(
        await archiveOf([
          ['data.pkl', oneTensor()],
          ['data/0', f32(1, 2, 3, 4)],
          ['data/1', f32(5)],
        ]),
      );
      for (let at = bytes.indexOf('archive/data/1'); at >= 0; at = bytes.indexOf('archive/data/1', at + 1))
        bytes.write('archive/data/0', at, 'latin1');
      await rejects(bytes, 'INVALID_ARCHIVE', 'appears twice');
    });

    it('every truncation of a valid archive ends in a coded error naming the file', async () => {
      const bytes = await valid();
      for (let n = 0; n < bytes.byteLength; n++) {
        const e = await read(bytes.subarray(0, n)).then(
          () => undefined,
          (err: unknown) => err,
        );
        assert.ok(
          isModelStockError(e) && CODED.includes(e.code) && e.file === FILE,
          `${n} bytes: ${String(e)}`,
        );
      }
    });

    it('bit flips anywhere: the same tensors, or a coded error naming the file (seeded, 3000 flips)', async () => {
      const bytes = await valid();
      const rng = mulberry32(20_260_117);
      for (let i = 0; i < 3000; i++) {
        const copy = Buffer.from(bytes);
        const at = Math.floor(rng() * copy.byteLength);
        copy[at] = (copy[at] as number) ^ (1 << Math.floor(rng() * 8));
        const r = await read(copy).then(
          (ok) => ok,
          (err: unknown) => err,
        );
        if (r instanceof Error) {
          assert.ok(
            isModelStockError(r) && CODED.includes(r.code) && r.file === FILE,
            `flip at ${at}: ${String(r)}`,
          );
        } else {
          for (const t of (r as { tensors: { offset: number; byteLength: number }[] }).tensors)
            assert.ok(
              t.offset >= 0 && t.offset + t.byteLength <= copy.byteLength,
              `flip at ${at}: in the file`,
            );
        }
      }
    });

    it('zip64: storages past 4 GiB (a sparse hole before them) are read at their offsets', async function () {
      this.timeout(120_000);
      const file = path.join(tmp.dir, 'big.bin');
      const values = f32(1.5, -2, 3.25);
      try {
        await writeTorchFile(file, [{ name: 'w', dtype: 'F32', shape: [3] }], () => values, {
          padding: 2 ** 32 + 1000,
        });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EFBIG' || (e as NodeJS.ErrnoException).code === 'ENOSPC')
          return this.skip();
        throw e;
      }
      try {
        const { tensors } = await readPytorchFile(file);
        const [w] = tensors;
        assert.ok(w!.offset > 2 ** 32, `offset ${w!.offset}`);
        assert.deepEqual([...tensorBytes(w!)], [...values]);
      } finally {
        fs.rmSync(file, { force: true });
      }
    });
  });

  describe('the fixture writer (lib/fixtures/torchZip.ts)', () => {
    it("writes a shard byte for byte as torch.save 1.13 did (test/data's shard 2 from its own tensors)", async () => {
      const torchMade = fixture('sharded-bf16', 'pytorch_model-00002-of-00002.bin');
      const { tensors } = await readPytorchFile(torchMade);
      const out = path.join(tmp.dir, 'pytorch_model-00002-of-00002.bin');
      await writeTorchFile(out, tensors, (i) => tensorBytes(tensors[i]!));
      assert.equal(sha256(fs.readFileSync(out)), sha256(fs.readFileSync(torchMade)));
    });

    it('reads back what it wrote, every dtype torch has a storage for, storages keyed in string order', async () => {
      const dtypes = ['F32', 'F64', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL'] as const;
      const specs = Array.from({ length: 12 }, (_, i) => ({
        name: `t${i}`,
        dtype: dtypes[i % dtypes.length]!,
        shape: i === 3 ? [] : [i + 1, 2],
      }));
      const itemSize = { F32: 4, F64: 8, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
      const data = specs.map((s, i) => {
        const bytes = new Uint8Array(s.shape.reduce((a, b) => a * b, 1) * itemSize[s.dtype]);
        bytes.forEach((_, k) => (bytes[k] = (i * 31 + k) & (s.dtype === 'BOOL' ? 1 : 0xff)));
        return bytes;
      });
      const bytes = await torchFileBytes(specs, (i) => data[i]!);
      const { tensors } = await read(bytes);
      assert.deepEqual(
        tensors.map((t) => [t.name, t.dtype, [...t.shape]]),
        specs.map((s) => [s.name, s.dtype, s.shape]),
      );
      tensors.forEach((t, i) => assert.deepEqual(bytes.subarray(t.offset, t.offset + t.byteLength), data[i]));
      const names = [
        ...Buffer.from(bytes)
          .toString('latin1')
          .matchAll(/archive\/data\/(\d+)/g),
      ].map((m) => m[1]);
      assert.deepEqual(names.slice(0, 12), ['0', '1', '10', '11', '2', '3', '4', '5', '6', '7', '8', '9']);
      assert.ok(stateDictPickle(specs).byteLength > 0);
    });

    it('CRC-32 of a run of zeros without reading it equals zlib’s', async () => {
      const zlib = await import('node:zlib');
      for (const n of [0, 1, 7, 64, 1000, 65_537])
        assert.equal(crc32OfZeros(n), zlib.crc32(Buffer.alloc(n)), `${n}`);
    });
  });
});
