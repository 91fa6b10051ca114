import { strict as assert } from 'node:assert';
import { floatSize } from '../../lib/dtype';
import type { NativeAddon } from '../../lib/engine/addon-types';
import { CudaBackend } from '../../lib/engine/cuda/backend';
import type { CudaAddon } from '../../lib/engine/cuda/addon-types';
import { ModelStockError } from '../../lib/errors';
import { mulberry32 } from '../helpers/random';
import {
  DTYPE_MIXES,
  assertSameBytes,
  assertSameGram,
  cudaExports,
  deviceOrSkip,
  gramJob,
  interpolateJob,
  makeCase,
  newGram,
  ratiosOf,
} from './cases';

/** lib/engine/cuda/backend.ts: availability errors everywhere; on a device, its results and errors. */
describe('CUDA backend', function () {
  let cuda: CudaAddon;
  let native: NativeAddon;

  before(function () {
    ({ cuda, native } = cudaExports(this));
  });

  it('without a usable device: BACKEND_UNAVAILABLE saying why', function () {
    const info = cuda.cudaInfo();
    if (info.reason === undefined && info.devices.length > 0) this.skip();
    assert.throws(
      () => new CudaBackend(),
      (e: unknown) =>
        e instanceof ModelStockError &&
        e.code === 'BACKEND_UNAVAILABLE' &&
        /CUDA backend unavailable: (no CUDA device|CUDA is not compiled)/.test(e.message),
    );
  });

  describe('on a device', function () {
    let backend: CudaBackend;

    before(function () {
      deviceOrSkip(this, cuda);
      backend = new CudaBackend();
    });

    it('window-at-a-time jobs: Gram bit for bit the emulation, interpolation byte for byte native', async function () {
      const rng = mulberry32(1320);
      for (const mix of DTYPE_MIXES) {
        const c = makeCase(rng, mix, 20011, 2000, 3);
        const got = newGram(c);
        const want = newGram(c);
        for (const [from, to] of [
          [0, 7000],
          [7000, c.count],
        ] as const) {
          await backend.gram(gramJob(c, got, from, to));
          await cuda.cudaEmulateGram(gramJob(c, want, from, to));
        }
        assertSameGram(got, want, c.label);
        const t = ratiosOf(want, mix.length - 1, c.units);
        const out = new Uint8Array(c.count * floatSize('BF16'));
        const ref = new Uint8Array(out.byteLength);
        await backend.interpolate(interpolateJob(c, t, 'BF16', out, 0, 9001));
        await backend.interpolate(interpolateJob(c, t, 'BF16', out, 9001, c.count));
        await native.interpolate(interpolateJob(c, t, 'BF16', ref));
        assertSameBytes(out, ref, 'BF16', c.label);
      }
    });

    it('sessions, pinned host memory and capacity; errors are ModelStockErrors naming the tensor', async function () {
      const info = backend.info();
      assert.equal(info.name, 'cuda');
      assert.match(info.cudaDevice ?? '', /GiB, compute \d+\.\d+/);
      const cap = await backend.capacity();
      assert.ok(cap.memory > 0 && cap.memory < cuda.cudaInfo().devices[0]!.totalMemory);
      const host = backend.allocHost(1 << 20);
      assert.equal(host.byteLength, 1 << 20);
      backend.freeHost(host);
      assert.equal(host.byteLength, 0, 'freed and detached');
      backend.freeHost(host); // once freed, no longer the backend's: a no-op
      const c = makeCase(mulberry32(1321), ['BF16', 'BF16', 'BF16'], 1000, 1000);
      const session = backend.openTensor({
        name: 'lm_head.weight',
        count: 1000,
        unitLength: 1000,
        base: 'BF16',
        models: ['BF16', 'BF16'],
        outDtype: 'BF16',
      });
      await session.gram(gramJob(c, newGram(c)));
      await assert.rejects(
        session.gram({ ...gramJob(c, newGram(c), 0, 500), firstElement: 900 }),
        (e: unknown) =>
          e instanceof ModelStockError && e.code === 'NATIVE_ERROR' && e.tensor === 'lm_head.weight',
      );
      await session.close();
    });
  });
});
