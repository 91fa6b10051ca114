import { strict as assert } from 'node:assert';
import * as path from 'node:path';
import type {
  NativeAddon,
  NativeGramJob,
  NativeInterpolateJob,
} from '../../../lib/engine/native/addon-types';
import { loadNativeAddon } from '../../../lib/engine/native/loader';
import { createBackend } from '../../../lib/engine/registry';
import { ModelStockError, isModelStockError } from '../../../lib/errors';
import { addonOrSkip } from '../../helpers/addon';

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

function goodJob(): Mutable<NativeInterpolateJob & NativeGramJob> {
  const count = 10;
  return {
    base: { bytes: new Uint8Array(count * 2), dtype: 'BF16' },
    models: [
      { bytes: new Uint8Array(count * 4), dtype: 'F32' },
      { bytes: new Uint8Array(count * 2), dtype: 'F16' },
    ],
    count,
    firstElement: 5,
    unitLength: 4, // units 1 … 3
    gram: new Float64Array(4 * 3),
    t: new Float64Array(4),
    out: new Uint8Array(count * 2),
    outDtype: 'BF16',
  };
}

/** Each bad job, the pass it breaks and a word the message must contain. */
const BAD: [string, 'gram' | 'interpolate' | 'both', (j: Mutable<NativeInterpolateJob & NativeGramJob>) => void, RegExp][] = [
  ['count not an integer', 'both', (j) => (j.count = 2.5), /job\.count/],
  ['negative count', 'both', (j) => (j.count = -1), /job\.count/],
  ['firstElement NaN', 'both', (j) => (j.firstElement = NaN), /job\.firstElement/],
  ['unitLength 0', 'both', (j) => (j.unitLength = 0), /job\.unitLength/],
  ['one fine-tune', 'both', (j) => (j.models = j.models.slice(0, 1)), /job\.models/],
  ['models not an array', 'both', (j) => (j.models = {} as never), /job\.models/],
  ['unknown dtype', 'both', (j) => (j.base = { ...j.base, dtype: 'F8_E4M3' as never }), /job\.base\.dtype/],
  ['bytes too short', 'both', (j) => (j.models = [j.models[0]!, { bytes: new Uint8Array(19), dtype: 'F16' }]), /job\.models\[1\]\.bytes/],
  ['bytes a Float32Array', 'both', (j) => (j.base = { bytes: new Float32Array(5) as never, dtype: 'BF16' }), /job\.base\.bytes/],
  ['gram too short', 'gram', (j) => (j.gram = new Float64Array(11)), /job\.gram/],
  ['gram a Float32Array', 'gram', (j) => (j.gram = new Float32Array(12) as never), /job\.gram/],
  ['t too short', 'interpolate', (j) => (j.t = new Float64Array(3)), /job\.t/],
  ['out too long', 'interpolate', (j) => (j.out = new Uint8Array(21)), /job\.out/],
  ['bad outDtype', 'interpolate', (j) => (j.outDtype = 'I32' as never), /job\.outDtype/],
  ['an unknown isa', 'both', (j) => (j.isa = 'sse9' as never), /job\.isa/],
  ['threads −1', 'both', (j) => (j.threads = -1), /job\.threads/],
  ['threads 1.5', 'both', (j) => (j.threads = 1.5), /job\.threads/],
  ['threads 2000', 'both', (j) => (j.threads = 2000), /job\.threads/],
];

async function rejectsWith(p: Promise<unknown>, code: string, message: RegExp, label: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ModelStockError, `${label}: not a ModelStockError`);
    assert.equal((e as { code?: unknown }).code, code, `${label}: code`);
    assert.match(e.message, message, label);
    return true;
  });
}

describe('native argument checks', function () {
  let addon: NativeAddon;
  before(function () {
    addon = addonOrSkip(this);
  });

  it('a good job passes both checks (the baseline the bad ones mutate), on every ISA', async () => {
    for (const isa of addon.info().availableIsas) {
      await addon.gram({ ...goodJob(), isa, threads: 2 });
      await addon.interpolate({ ...goodJob(), isa, threads: 1 });
    }
  });

  for (const [what, pass, mutate, message] of BAD) {
    it(`the addon's last-line check rejects ${what}: a ModelStockError, code INVALID_ARGUMENT`, async () => {
      const passes = pass === 'both' ? (['gram', 'interpolate'] as const) : [pass];
      for (const p of passes) {
        const job = goodJob();
        mutate(job);
        await rejectsWith(addon[p](job), 'INVALID_ARGUMENT', message, `addon.${p}: ${what}`);
      }
    });
  }

  it('rejects a missing or non-object job', async () => {
    await rejectsWith(addon.gram(undefined as never), 'INVALID_ARGUMENT', /expected job to be an object/, 'undefined');
    await rejectsWith(addon.interpolate([] as never), 'INVALID_ARGUMENT', /expected job to be an object/, 'array');
  });

  it('an ISA this CPU lacks is named with what is missing; bad backend settings are BAD_CONFIG', async () => {
    for (const isa of ['avx512', 'avx2'] as const) {
      if (addon.info().availableIsas.includes(isa)) continue;
      await rejectsWith(addon.gram({ ...goodJob(), isa }), 'INVALID_ARGUMENT', /lacks|not compiled in/, isa);
    }
    const badConfig = (e: unknown) => isModelStockError(e) && e.code === 'BAD_CONFIG';
    assert.throws(() => createBackend('native', { isa: 'sse9' }), badConfig);
    assert.throws(() => createBackend('native', { threads: 0 }), badConfig);
    assert.equal(addon.info().isa, addon.info().availableIsas[0]);
  });

  it('allocHost refuses sizes and alignments it cannot honour', () => {
    const invalid = (e: unknown) => isModelStockError(e) && e.code === 'INVALID_ARGUMENT';
    assert.throws(() => addon.allocHost(0, 64), invalid);
    assert.throws(() => addon.allocHost(2 ** 32, 64), invalid);
    assert.throws(() => addon.allocHost(64, 3), invalid);
    const a = addon.allocHost(100, 4096);
    assert.equal(a.byteLength, 100);
    addon.freeHost(a);
    assert.equal(a.byteLength, 0, 'freed memory is detached, not left dangling');
  });
});

describe('native addon loader', () => {
  const saved = process.env.MODEL_STOCK_ADDON;
  afterEach(() => {
    if (saved === undefined) delete process.env.MODEL_STOCK_ADDON;
    else process.env.MODEL_STOCK_ADDON = saved;
  });

  it('MODEL_STOCK_ADDON naming a missing file: that file is the only reason, and BACKEND_UNAVAILABLE', () => {
    const missing = path.resolve('/nonexistent/model-stock/model_stock.node');
    process.env.MODEL_STOCK_ADDON = missing;
    const r = loadNativeAddon();
    assert.equal(r.addon, undefined);
    assert.ok(r.addon === undefined);
    assert.equal(r.reasons.length, 1);
    assert.ok(r.reasons[0]!.includes(missing), r.reasons[0]);
    assert.match(r.reasons[0]!, /MODEL_STOCK_ADDON/);
    assert.throws(
      () => createBackend('native'),
      (e: unknown) => isModelStockError(e) && e.code === 'BACKEND_UNAVAILABLE' && e.message.includes(missing),
    );
  });

  it('MODEL_STOCK_ADDON naming a file that is not an addon: why it cannot be loaded', () => {
    const notAddon = path.resolve(__dirname, '..', '..', '..', '..', 'package.json');
    process.env.MODEL_STOCK_ADDON = notAddon;
    const r = loadNativeAddon();
    assert.ok(r.addon === undefined);
    assert.match(r.reasons[0]!, /cannot be loaded/);
    assert.ok(r.reasons[0]!.includes(notAddon));
  });
});
