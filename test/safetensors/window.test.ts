/** Positional reads (the fs input mode), including tensors at odd file offsets. */
import { strict as assert } from 'node:assert';
import { truncate } from 'node:fs/promises';
import * as path from 'node:path';
import { openCheckpoint } from '../../lib/checkpoint/open';
import { TensorReader } from '../../lib/safetensors/window';
import type { TensorInfo } from '../../lib/checkpoint/types';
import { isModelStockError } from '../../lib/errors';
import { useTmpDir } from '../helpers/tmp';
import { tensor, writeModel } from '../helpers/safetensorsModel';

describe('TensorReader', () => {
  const tmp = useTmpDir();
  // 3 BOOL bytes first: 'w' (F32 [5, 7]) then starts at an odd absolute offset.
  const mask = tensor('mask', 'BOOL', [3], 1, 11);
  const w = tensor('w', 'F32', [5, 7], 4, 12);
  let info: TensorInfo;
  let maskInfo: TensorInfo;

  before(async () => {
    const dir = path.join(tmp.dir, 'm');
    await writeModel(dir, [mask, w]);
    const ckpt = await openCheckpoint(dir);
    info = ckpt.tensors.get('w') as TensorInfo;
    maskInfo = ckpt.tensors.get('mask') as TensorInfo;
    assert.equal(info.offset % 2, 1, 'the test needs an unaligned tensor');
  });

  it('windows read at an unaligned offset reassemble the whole tensor', async () => {
    const reader = new TensorReader();
    try {
      const whole = new Uint8Array(info.byteLength);
      await reader.readInto(info, 0, whole);
      assert.deepEqual(whole, w.data);

      // 5 elements per window (20 bytes) for a 140-byte tensor: smaller than the tensor, concurrent.
      const parts = Array.from({ length: 7 }, (_, k) => ({ start: k * 20, length: 20 }));
      assert.equal(info.byteLength, 140);
      const joined = new Uint8Array(info.byteLength);
      await Promise.all(
        parts.map((p) => reader.readInto(info, p.start, joined.subarray(p.start, p.start + p.length))),
      );
      assert.deepEqual(joined, whole);

      // A view into a larger buffer (non-zero byteOffset) is filled in place.
      const big = new Uint8Array(3 + 8);
      await reader.readInto(info, 8, big.subarray(3));
      assert.deepEqual(big.subarray(3), w.data.subarray(8, 16));

      const m = new Uint8Array(3);
      await reader.readInto(maskInfo, 0, m);
      assert.deepEqual(m, mask.data);
    } finally {
      await reader.close();
    }
  });

  it('refuses reads outside the tensor', async () => {
    const reader = new TensorReader();
    try {
      await assert.rejects(reader.readInto(info, info.byteLength - 4, new Uint8Array(8)), RangeError);
      await assert.rejects(reader.readInto(info, -1, new Uint8Array(1)), RangeError);
    } finally {
      await reader.close();
    }
  });

  it('a file that shrank after validation: IO_ERROR naming file and tensor', async () => {
    const dir = path.join(tmp.dir, 'shrunk');
    await writeModel(dir, [mask, w]);
    const ckpt = await openCheckpoint(dir);
    const shrunk = ckpt.tensors.get('w') as TensorInfo;
    await truncate(shrunk.file, shrunk.offset + 10);
    const reader = new TensorReader();
    try {
      await assert.rejects(
        reader.readInto(shrunk, 0, new Uint8Array(shrunk.byteLength)),
        (e: unknown) =>
          isModelStockError(e) &&
          e.code === 'IO_ERROR' &&
          e.file === shrunk.file &&
          e.tensor === 'w' &&
          e.message.includes('"w"'),
      );
    } finally {
      await reader.close();
    }
  });

  it('rejects reads after close()', async () => {
    const reader = new TensorReader();
    await reader.readInto(info, 0, new Uint8Array(4));
    await reader.close();
    await reader.close();
    await assert.rejects(reader.readInto(info, 0, new Uint8Array(4)), /closed/);
  });
});
