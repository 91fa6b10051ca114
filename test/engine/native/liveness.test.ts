import { strict as assert } from 'node:assert';
import type { NativeAddon } from '../../../lib/engine/native/addon-types';
import { addonOrSkip } from '../../helpers/addon';

/** Native work runs off the event loop: a 5 ms interval keeps firing during ~256 MiB of passes. */
describe('native passes leave the event loop free', function () {
  this.timeout(120_000);
  let addon: NativeAddon;
  before(function () {
    addon = addonOrSkip(this);
  });

  it('a 5 ms setInterval keeps ticking while gram and interpolate run on 256 MiB', async () => {
    const count = 1 << 24; // F32: 3 inputs × 64 MiB + 64 MiB out
    const inputs = [0, 1, 2].map((i) => {
      const f = new Float32Array(count);
      for (let k = 0; k < count; k += 4099) f[k] = i + k * 1e-9;
      return { bytes: new Uint8Array(f.buffer), dtype: 'F32' as const };
    });
    const out = new Uint8Array(count * 4);
    // The slowest configuration, so the passes take long enough to measure the loop against.
    const job = {
      base: inputs[0]!,
      models: inputs.slice(1),
      count,
      firstElement: 0,
      unitLength: count,
      isa: 'scalar' as const,
      threads: 1,
    };
    const ticks: number[] = [];
    const timer = setInterval(() => ticks.push(performance.now()), 5);
    const start = performance.now();
    try {
      await addon.gram({ ...job, gram: new Float64Array(3) });
      await addon.interpolate({ ...job, t: new Float64Array([0.5]), out, outDtype: 'F32' });
    } finally {
      clearInterval(timer);
    }
    const elapsed = performance.now() - start;
    let maxGap = 0;
    for (let k = 1; k < ticks.length; k++) maxGap = Math.max(maxGap, ticks[k]! - ticks[k - 1]!);
    assert.ok(elapsed > 20, `passes too fast to measure (${elapsed.toFixed(1)} ms)`);
    assert.ok(ticks.length >= elapsed / 20, `${ticks.length} ticks in ${elapsed.toFixed(0)} ms`);
    assert.ok(maxGap < 100, `the loop stalled for ${maxGap.toFixed(1)} ms (${ticks.length} ticks in ${elapsed.toFixed(0)} ms)`);
  });
});
