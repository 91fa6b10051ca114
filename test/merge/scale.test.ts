/**
 * Work after opening that grows with the tensor count — the plan, the shard layout and headers, the
 * writer's bookkeeping, the index, the report and the model card — gives the event loop turns, and
 * the report keeps the exact bytes of JSON.stringify(report, null, 2) + '\n'. (The engine's
 * per-tensor loop gets its own checkpoints with the engine rework.)
 *
 * 300k tensors rather than the bench's million: three checkpoints, a plan and a layout of a million
 * tensors make a heap of 1.2 GB, and on a contended machine V8 then sometimes falls back to a full
 * atomic collection (1.25 s measured) that no slicing avoids. Synchronous work at this size still
 * stalls for seconds, so the assertion keeps its teeth.
 */
import { strict as assert } from 'node:assert';
import { readFile, stat } from 'node:fs/promises';
import * as path from 'node:path';
import { lowMemoryWarning } from '../../lib/inputs';
import { mergeModelStock } from '../../lib/merge';
import { modelCard, modelCardSliced } from '../../lib/output/extras';
import { writeReportJson } from '../../lib/output/report';
import { makePlanSliced } from '../../lib/plan/plan';
import { indexJsonPieces, planShardsSliced } from '../../lib/safetensors/layout';
import type { Checkpoint, TensorInfo } from '../../lib/checkpoint/types';
import { SafetensorsWriter } from '../../lib/safetensors/writer';
import type { MergeReport, TensorReport } from '../../lib/types';
import { ChunkedMap } from '../../lib/util/chunkedMap';
import { assertLive } from '../helpers/liveness';
import { writeModel } from '../helpers/models';
import { useTmpDir } from '../helpers/tmp';

const COUNT = 300_000;

/** A checkpoint of `count` zero-size F32 tensors, built in memory (opening is tested in safetensors/). */
function syntheticCheckpoint(label: string, count: number, extra: readonly string[] = []): Checkpoint {
  const file = `/synthetic/${label}/model.safetensors`;
  const tensors = new ChunkedMap<TensorInfo>();
  const order: string[] = [];
  for (const name of [...Array.from({ length: count }, (_, i) => `model.layers.${i}.weight`), ...extra]) {
    tensors.set(name, { name, dtype: 'F32', shape: [0], offset: 8, byteLength: 0, file });
    order.push(name);
  }
  return {
    format: 'safetensors',
    warnings: [],
    path: `/synthetic/${label}`,
    dir: `/synthetic/${label}`,
    files: [file],
    indexFile: undefined,
    tensors,
    order,
    metadata: undefined,
    identities: new Map(),
  };
}

function reportOf(tensors: TensorReport[], warnings: string[]): MergeReport {
  return {
    method: 'model_stock',
    base: 'base',
    models: ['a', 'b'],
    out: 'out',
    filterWise: false,
    theta: 'mean-cos',
    backend: { name: 'js', isa: 'scalar', threads: 1 } as unknown as MergeReport['backend'],
    inputs: [],
    tensors,
    warnings,
    bytesRead: 0,
    bytesWritten: 0,
    write: { mode: 'direct', requested: 'auto', fsyncSeconds: 0 },
    seconds: 1.5,
  };
}

function tensorReport(i: number): TensorReport {
  if (i % 3 === 2)
    return { name: `t${i}`, action: 'copy', reason: 'I64 is not a float dtype', dtype: 'I64', shape: [2] };
  return i % 3 === 0
    ? {
        name: `t${i}`,
        action: 'merge',
        n: 2,
        models: [0, 1],
        dtype: 'BF16',
        outDtype: 'BF16',
        shape: [4, 4],
        cosines: [0.25 + i * 1e-7],
        c: 0.25,
        t: 0.4,
      }
    : {
        name: `t"${i}\n😀`,
        action: 'merge',
        n: 3,
        models: [0, 1, 2],
        dtype: 'F32',
        shape: [],
        cosines: [{ min: -0.1, mean: 0.2, max: 0.5 }],
        cStats: { min: 0, mean: NaN, max: 1 },
        tStats: { min: 0, mean: 0.5, max: 1 },
        pole: i % 2 === 0 ? true : undefined,
      };
}

describe('300k tensors after opening', function () {
  this.timeout(300_000);
  const tmp = useTmpDir();

  it('plan, shard layout and headers, writer bookkeeping and index without stalling the loop', async () => {
    const base = syntheticCheckpoint('base', COUNT);
    const models = [syntheticCheckpoint('a', COUNT, ['only.in.a']), syntheticCheckpoint('b', COUNT)];
    const plan = await assertLive('planning', () =>
      makePlanSliced(base, models, { filterWise: false, outDtype: undefined }),
    );
    assert.equal(plan.steps.length, COUNT);
    assert.deepEqual(plan.dropped, [
      { name: 'only.in.a', models: [0], reason: 'not in the base', dtype: 'F32', shape: [0] },
    ]);

    const entries = plan.steps.map((s) => ({
      name: s.name,
      dtype: s.outDtype,
      shape: s.base.shape,
      byteLength: s.outByteLength,
    }));
    const layout = await assertLive('laying out shards', () => planShardsSliced(entries, { shardSize: 1 }));
    assert.equal(layout.shards.length, 1);
    assert.equal(layout.placement.size, COUNT);

    const writer = await assertLive('creating the writer (a 60 MB header)', () =>
      SafetensorsWriter.create(tmp.dir, layout),
    );
    await assertLive('finishing the writer', () => writer.finish({ fsync: false }));
    const written = await stat(path.join(tmp.dir, 'model.safetensors'));
    assert.equal(written.size, layout.shards[0]?.size);

    const pieces = await assertLive('the index JSON', () => indexJsonPieces(layout));
    assert.ok(pieces.join('').includes(`"model.layers.${COUNT - 1}.weight": "model.safetensors"`));
  });

  it('the report: streamed in pieces, byte for byte what JSON.stringify(report, null, 2) gives', async () => {
    const small = reportOf(
      Array.from({ length: 3000 }, (_, i) => tensorReport(i)),
      Array.from({ length: 100 }, (_, i) => `warning ${i}: "quoted"\n`),
    );
    const file = path.join(tmp.dir, 'small.json');
    await writeReportJson(file, small, { fsync: false, flags: 'wx' });
    assert.equal(await readFile(file, 'utf8'), JSON.stringify(small, null, 2) + '\n');
    // Short arrays are written whole; empty ones too.
    const tiny = reportOf([tensorReport(0)], []);
    await writeReportJson(file, tiny, { fsync: false, flags: 'w' });
    assert.equal(await readFile(file, 'utf8'), JSON.stringify(tiny, null, 2) + '\n');
    assert.equal(await modelCardSliced(small, 'x: 1\n'), modelCard(small, 'x: 1\n'));
    assert.match(modelCard(small, ''), /tensors: 2000 merged, 1000 copied from the base/);

    const big = reportOf(
      Array.from({ length: COUNT }, (_, i) => tensorReport(i)),
      Array.from({ length: COUNT }, (_, i) => `w${i}`),
    );
    const bigFile = path.join(tmp.dir, 'big.json');
    await assertLive('writing a large report', () =>
      writeReportJson(bigFile, big, { fsync: false, flags: 'wx' }),
    );
    assert.equal(await readFile(bigFile, 'utf8'), JSON.stringify(big, null, 2) + '\n');
    const card = await assertLive('the model card of a large report', () => modelCardSliced(big, ''));
    assert.match(card, /200000 merged, 100000 copied/);
  });

  it('--memory below 16 MiB is accepted with a warning that says why', async () => {
    const tensor = { name: 'w', dtype: 'F32' as const, shape: [4], values: [1, 2, 3, 4] };
    const [base, a, b] = await Promise.all(
      ['base', 'a', 'b'].map((m, i) =>
        writeModel(path.join(tmp.dir, m), [{ ...tensor, values: tensor.values.map((v) => v + i * (i + v)) }]),
      ),
    );
    const warnings: string[] = [];
    await mergeModelStock({
      base: base!,
      models: [a!, b!],
      out: path.join(tmp.dir, 'out-low'),
      memory: 1 << 20,
      fsync: false,
      onWarning: (w) => warnings.push(w),
    });
    assert.deepEqual(
      warnings.filter((w) => w.includes('16 MiB')),
      [lowMemoryWarning(1 << 20)],
    );
    assert.match(lowMemoryWarning(1 << 20), /below 16 MiB.*524288 bytes.*windows.*slower/);
    warnings.length = 0;
    await mergeModelStock({
      base: base!,
      models: [a!, b!],
      out: path.join(tmp.dir, 'out-default'),
      fsync: false,
      onWarning: (w) => warnings.push(w),
    });
    assert.deepEqual(
      warnings.filter((w) => w.includes('16 MiB')),
      [],
    );
  });
});
