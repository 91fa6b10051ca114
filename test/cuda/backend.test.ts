import { strict as assert } from 'node:assert';
import { floatSize } from '../../lib/dtype';
import type { TensorSpec } from '../../lib/engine/backend';
import { CudaBackend } from '../../lib/engine/cuda/backend';
import type { CudaAddon } from '../../lib/engine/cuda/addon-types';
import type { NativeAddon } from '../../lib/engine/native/addon-types';
import { backendEntries, createBackend } from '../../lib/engine/registry';
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
  type CudaCase,
} from './cases';

/**
 * lib/engine/cuda/backend.ts beyond the contract suite (test/engine/contract.test.ts runs it like every
 * backend when a device is present): why it is unavailable, and on a device, `holds` with inputs left
 * out of the interpolation pass, pinned host buffers, device info, errors naming the tensor.
 */
describe('CUDA backend', function () {
  let cuda: CudaAddon;
  let native: NativeAddon;

  before(function () {
    ({ cuda, native } = cudaExports(this));
  });

  it('without a usable device: unavailable, and BACKEND_UNAVAILABLE saying why', function () {
    const info = cuda.cudaInfo();
    if (info.reason === undefined && info.devices.length > 0) this.skip();
    const why = backendEntries()
      .find((e) => e.name === 'cuda')!
      .unavailable();
    assert.equal(why.length, 1);
    assert.match(why[0]!, /no CUDA device|not compiled into this build/);
    assert.throws(
      () => createBackend('cuda'),
      (e: unknown) =>
        e instanceof ModelStockError && e.code === 'BACKEND_UNAVAILABLE' && e.message.includes(why[0]!),
    );
  });

  describe('on a device', function () {
    let backend: CudaBackend;

    before(function () {
      deviceOrSkip(this, cuda);
      backend = new CudaBackend();
    });

    function specOf(c: CudaCase, name: string): TensorSpec {
      return {
        name,
        dtypes: c.inputs.map((w) => w.dtype),
        outDtype: 'BF16',
        numel: c.count,
        unitLength: c.unitLength,
      };
    }

    function windowOf(c: CudaCase, from: number, to: number, withInputs = true) {
      const job = gramJob(c, new Float64Array(0), from, to);
      return {
        firstElement: from,
        count: to - from,
        inputs: withInputs ? [job.base.bytes, ...job.models.map((m) => m.bytes)] : undefined,
      };
    }

    it('holds the Gram pass’s windows: the interpolation without inputs writes native’s bytes', async function () {
      const rng = mulberry32(1320);
      for (const mix of DTYPE_MIXES) {
        const c = makeCase(rng, mix, 20000, 2000, 3);
        const session = backend.openTensor(specOf(c, `held ${mix.join('+')}`));
        const cuts = [0, 6000, c.count];
        const want = newGram(c);
        for (let w = 0; w + 1 < cuts.length; w++) {
          await session.gram(windowOf(c, cuts[w]!, cuts[w + 1]!));
          await cuda.cudaEmulateGram(gramJob(c, want, cuts[w], cuts[w + 1]));
        }
        const gram = await session.gramResult();
        assertSameGram(gram, want, c.label);
        assert.ok(session.holds(0, 6000) && session.holds(6000, 14000) && session.holds(100, 50));
        const t = ratiosOf(gram, mix.length - 1, c.units);
        const out = new Uint8Array(c.count * floatSize('BF16'));
        for (let w = 0; w + 1 < cuts.length; w++) {
          const window = windowOf(c, cuts[w]!, cuts[w + 1]!, false);
          await session.interpolate(window, t, out.subarray(cuts[w]! * 2, cuts[w + 1]! * 2));
        }
        await session.close();
        const ref = new Uint8Array(out.byteLength);
        await native.interpolate(interpolateJob(c, t, 'BF16', ref));
        assertSameBytes(out, ref, 'BF16', c.label);
      }
    });

    it('device info, capacity, pinned host buffers; errors are ModelStockErrors naming the tensor', async function () {
      const info = backend.info();
      assert.equal(info.device.kind, 'cuda');
      assert.equal(info.device.memoryBytes, cuda.cudaInfo().devices[0]!.totalMemory);
      assert.match(info.device.computeCapability ?? '', /^\d+\.\d+$/);
      const cap = backend.capacity();
      assert.ok(cap.sessionBytes > 0 && cap.sessionBytes < info.device.memoryBytes!);
      const host = backend.allocHost(1 << 20);
      assert.equal(host.byteLength, 1 << 20);
      assert.equal(host.byteOffset % cap.alignment, 0);
      backend.freeHost(host);
      assert.equal(host.byteLength, 0, 'freed and detached');

      const c = makeCase(mulberry32(1321), ['BF16', 'BF16', 'BF16'], 1000, 1000);
      const session = backend.openTensor(specOf(c, 'lm_head.weight'));
      // Nothing was uploaded for these elements: leaving the inputs out is an error, not garbage.
      await assert.rejects(
        session.interpolate(windowOf(c, 0, 1000, false), new Float64Array([0.5]), new Uint8Array(2000)),
        (e: unknown) =>
          e instanceof ModelStockError &&
          e.code === 'INVALID_ARGUMENT' &&
          e.tensor === 'lm_head.weight' &&
          /does not hold elements 0…1000/.test(e.message),
      );
      await session.close();
    });
  });
});
