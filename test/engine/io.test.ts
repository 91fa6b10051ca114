import { strict as assert } from 'node:assert';
import * as path from 'node:path';
import { openTensorSource, type IoMode } from '../../lib/engine/io';
import { openCheckpoint } from '../../lib/checkpoint/open';
import { backendsUnderTest } from '../helpers/backends';
import { writeModel } from '../helpers/models';
import { mulberry32, randomTensor } from '../helpers/random';
import { useTmpDir } from '../helpers/tmp';

describe('tensor sources (fs, pread, direct, mmap) read the same bytes', () => {
  const tmp = useTmpDir();

  it('every tensor and window, at odd offsets, across mmap segment boundaries', async () => {
    const rng = mulberry32(4);
    const dir = await writeModel(path.join(tmp.dir, 'm'), [
      { name: 'odd', dtype: 'BOOL', shape: [3], values: new Uint8Array([1, 0, 1]) },
      { name: 'a', dtype: 'F32', shape: [50], values: randomTensor(50, rng) },
      { name: 'b', dtype: 'BF16', shape: [7, 9], values: randomTensor(63, rng) },
      { name: 'c', dtype: 'F16', shape: [129], values: randomTensor(129, rng) },
    ]);
    const cp = await openCheckpoint(dir);
    const reference = openTensorSource('fs');
    const modes: Exclude<IoMode, 'auto'>[] = backendsUnderTest().includes('native')
      ? ['pread', 'direct', 'mmap']
      : [];
    // 64-byte segments: most tensors straddle a boundary, some lie inside one segment.
    const sources = modes.map((m) => openTensorSource(m, { segmentBytes: 64 }));
    try {
      for (const name of cp.order) {
        const t = cp.tensors.get(name)!;
        for (const [start, length] of [
          [0, t.byteLength],
          [1, Math.max(0, t.byteLength - 3)],
          [t.byteLength >> 1, t.byteLength - (t.byteLength >> 1)],
        ] as [number, number][]) {
          const want = new Uint8Array(length);
          await reference.readInto(t, start, want);
          for (const s of sources) {
            const got = new Uint8Array(length);
            await s.readInto(t, start, got);
            assert.deepEqual(got, want, `${s.kind} readInto ${name} [${start}, +${length})`);
            if (s.readRegions !== undefined) {
              // As the pipeline lays a read out: the region the source asks for, the bytes at its head.
              const l = s.layout?.(t, start, length) ?? { head: 0, bytes: length, alignment: 64 };
              assert.ok(l.head + length <= l.bytes, `${s.kind} layout of ${name}`);
              const host = new Uint8Array(l.bytes + 2 * l.alignment);
              const region = host.subarray(l.alignment, l.alignment + l.bytes);
              await s.readRegions([{ tensor: t, byteStart: start, length, region, head: l.head }]);
              assert.deepEqual(
                region.subarray(l.head, l.head + length),
                want,
                `${s.kind} readRegions ${name}`,
              );
              assert.ok(
                host.subarray(0, l.alignment).every((b) => b === 0),
                'nothing before the region',
              );
            }
            if (s.view !== undefined) {
              assert.deepEqual(new Uint8Array(s.view(t, start, length)), want, `${s.kind} view ${name}`);
              s.release?.(t, start, length);
              assert.deepEqual(
                new Uint8Array(s.view(t, start, length)),
                want,
                `${s.kind} view after release`,
              );
            }
          }
        }
      }
    } finally {
      await Promise.all([reference, ...sources].map((s) => s.close()));
    }
  });
});
