import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { NativeAddon } from '../../../lib/engine/native/addon-types';
import { addonCandidates } from '../../../lib/engine/native/loader';
import { randomBytes } from '../../helpers/random';
import { useTmpDir } from '../../helpers/tmp';
import { addonOrSkip } from '../../helpers/addon';

function codeOf(e: unknown): unknown {
  return (e as { code?: unknown }).code;
}

describe('native I/O: file mappings', function () {
  this.timeout(120_000);
  const tmp = useTmpDir('model-stock-native-io-');
  let addon: NativeAddon;
  let file: string;
  let data: Uint8Array;
  before(function () {
    addon = addonOrSkip(this);
  });
  beforeEach(() => {
    file = path.join(tmp.dir, 'data.bin');
    data = randomBytes(9 * 1024 * 1024 + 12345, 21);
    fs.writeFileSync(file, data);
  });

  it('mapView gives the file bytes at any offset; views outlive unmap; bad ranges are refused', () => {
    const m = addon.mapFile(file);
    assert.equal(m.size, data.length);
    assert.equal(m.path, file);
    const views: Uint8Array[] = [];
    for (const [offset, length] of [
      [0, data.length],
      [0, 100], // two external buffers over the same address
      [1, 4095],
      [12345, 1 << 20],
      [data.length, 0],
    ] as const) {
      const v = addon.mapView(m, offset, length);
      assert.equal(v.byteLength, length);
      assert.ok(Buffer.from(v).equals(Buffer.from(data.subarray(offset, offset + length))), `${length} at ${offset}`);
      views.push(v);
    }
    assert.throws(() => addon.mapView(m, data.length - 1, 2), (e: unknown) => codeOf(e) === 'INVALID_ARGUMENT');
    assert.throws(() => addon.mapView(m, -1, 2), (e: unknown) => codeOf(e) === 'INVALID_ARGUMENT');
    assert.throws(() => addon.mapView({ path: file, size: 1 }, 0, 1), /expected a mapping/);
    addon.unmap(m);
    addon.unmap(m); // twice is harmless
    assert.throws(() => addon.mapView(m, 0, 1), /unmapped/);
    // the views still own the mapping
    assert.ok(Buffer.from(views[3]!).equals(Buffer.from(data.subarray(12345, 12345 + (1 << 20)))));
    // a write lands in a private copy of the page, never in the file
    views[0]![0] = views[0]![0]! ^ 0xff;
    assert.equal(fs.readFileSync(file)[0], data[0]);
  });

  it('a file larger than RAM + swap maps (nothing is reserved up front)', function () {
    const huge = path.join(tmp.dir, 'huge.bin');
    const fd = fs.openSync(huge, 'w');
    try {
      fs.ftruncateSync(fd, 2 ** 38); // 256 GiB, sparse
    } catch (e) {
      if ((e as { code?: unknown }).code === 'EFBIG') this.skip(); // the temp filesystem caps file size
      throw e;
    } finally {
      fs.closeSync(fd);
    }
    const m = addon.mapFile(huge);
    try {
      assert.equal(addon.mapView(m, 2 ** 37, 3).byteLength, 3);
    } finally {
      addon.unmap(m);
      fs.rmSync(huge);
    }
  });

  it('files over 4 GiB map; views must stay under 4 GiB', () => {
    const big = path.join(tmp.dir, 'sparse.bin');
    const fd = fs.openSync(big, 'w');
    try {
      fs.ftruncateSync(fd, 5 * 2 ** 30); // sparse: no disk used
      fs.writeSync(fd, Buffer.from([1, 2, 3]), 0, 3, 2 ** 32 + 1);
    } finally {
      fs.closeSync(fd);
    }
    const m = addon.mapFile(big);
    try {
      assert.equal(m.size, 5 * 2 ** 30);
      assert.deepEqual([...addon.mapView(m, 2 ** 32, 5)], [0, 1, 2, 3, 0]);
      assert.throws(() => addon.mapView(m, 0, 2 ** 32), /under 4 GiB/);
    } finally {
      addon.unmap(m);
    }
  });

  it('mapRelease drops resident pages from the process; views still read the file bytes after it', function () {
    if (process.platform !== 'linux') this.skip();
    const m = addon.mapFile(file);
    const v = addon.mapView(m, 0, data.byteLength);
    let sum = 0;
    for (let k = 0; k < v.byteLength; k += 4096) sum += v[k] as number; // fault every page in
    assert.ok(sum > 0);
    const rss = (): number => Number(fs.readFileSync('/proc/self/statm', 'utf8').split(' ')[1]) * 4096;
    const before = rss();
    addon.mapRelease(m, 0, data.byteLength);
    const after = rss();
    assert.ok(before - after > 8 * 1024 * 1024, `RSS fell by only ${before - after} bytes`);
    assert.deepEqual(v.subarray(4097, 70000), data.subarray(4097, 70000), 'released pages fault back in');
    addon.mapRelease(m, 3, 5000); // unaligned ranges are fine
    assert.equal(v[10], data[10]);
    assert.throws(() => addon.mapRelease(m, data.byteLength, 1), /mapRelease/);
    addon.unmap(m);
  });

  it('mapFile of a missing file is an IO_ERROR naming it; an empty file maps to empty views', () => {
    const missing = path.join(tmp.dir, 'missing.bin');
    assert.throws(
      () => addon.mapFile(missing),
      (e: unknown) => codeOf(e) === 'IO_ERROR' && (e as Error).message.includes(missing),
    );
    const empty = path.join(tmp.dir, 'empty.bin');
    fs.writeFileSync(empty, '');
    const m = addon.mapFile(empty);
    assert.equal(m.size, 0);
    assert.equal(addon.mapView(m, 0, 0).byteLength, 0);
    addon.unmap(m);
  });

  it('the mapping is released once unmapped and every view is collected (Linux /proc/self/maps)', function () {
    if (process.platform !== 'linux') this.skip();
    const script = `
      const addon = require(process.argv[1]);
      const file = process.argv[2];
      const mapped = () => require('fs').readFileSync('/proc/self/maps', 'utf8').includes(file);
      let m = addon.mapFile(file);
      let v = addon.mapView(m, 5, 1000);
      const states = [mapped()];
      addon.unmap(m);
      m = undefined;
      const first = v[0];
      (async () => {
        for (let i = 0; i < 3; i++) { global.gc(); await new Promise((r) => setImmediate(r)); }
        states.push(mapped(), first);
        v = undefined;
        for (let i = 0; i < 5; i++) { global.gc(); await new Promise((r) => setImmediate(r)); }
        states.push(mapped());
        console.log(JSON.stringify(states));
      })();`;
    const addonFile = addonCandidates()[0]!.file;
    const out = execFileSync(process.execPath, ['--expose-gc', '-e', script, addonFile, file], { encoding: 'utf8' });
    assert.deepEqual(JSON.parse(out), [true, true, data[5], false]);
  });
});
