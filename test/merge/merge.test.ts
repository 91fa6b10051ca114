import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DType, FloatDType } from '../../lib/dtype';
import { mergeModelStock } from '../../lib/merge';
import { ThetaRule } from '../../lib/math/ratio';
import { assertWithinContract, numel, referenceMerge } from '../helpers/reference';
import { REPORT_FILE } from '../../lib/output/atomic';
import type { MergeReport } from '../../lib/types';
import type { IoMode } from '../../lib/engine/io';
import { backendsUnderTest } from '../helpers/backends';
import { readModel, writeModel, TensorSpec } from '../helpers/models';
import { correlatedModels, mulberry32, randomTensor } from '../helpers/random';
import { useTmpDir } from '../helpers/tmp';

interface Case {
  dtypes: FloatDType[]; // base, then each fine-tune
  filterWise: boolean;
  theta: ThetaRule;
  outDtype?: FloatDType;
  shardSize?: number;
  memory?: number;
}

/** Tensors of a tiny transformer: 0-D to 3-D, cosines chosen per tensor (negative included). */
const SHAPES: { name: string; shape: number[]; cos: number }[] = [
  { name: 'model.embed_tokens.weight', shape: [37, 16], cos: 0.35 },
  { name: 'model.layers.0.self_attn.q_proj.weight', shape: [16, 16], cos: 0.7 },
  { name: 'model.layers.0.mlp.up_proj.weight', shape: [3, 5, 7], cos: 0.1 },
  { name: 'model.layers.0.input_layernorm.weight', shape: [16], cos: 0.5 },
  { name: 'model.scale', shape: [], cos: 0.9 },
  { name: 'model.layers.0.mlp.down_proj.weight', shape: [9, 11], cos: -0.3 },
];

async function makeModels(root: string, c: Case, seed: number): Promise<{ base: string; models: string[] }> {
  const rng = mulberry32(seed);
  const n = c.dtypes.length - 1;
  const perModel: TensorSpec[][] = Array.from({ length: n + 1 }, () => []);
  for (const s of SHAPES) {
    const base = randomTensor(numel(s.shape), rng, 0.5);
    const cos = Math.max(s.cos, -1 / (n - 1) + 0.05);
    const fts = correlatedModels(base, n, cos, rng);
    [base, ...fts].forEach((v, i) =>
      (perModel[i] as TensorSpec[]).push({
        name: s.name,
        dtype: c.dtypes[i] as DType,
        shape: s.shape,
        values: v,
      }),
    );
  }
  const ids = new Uint8Array(new BigInt64Array([0n, 1n, 2n, 3n, 4n, 5n, 6n, 7n]).buffer);
  (perModel[0] as TensorSpec[]).push({
    name: 'model.position_ids',
    dtype: 'I64',
    shape: [1, 8],
    values: ids,
  });
  const config = JSON.stringify({ architectures: ['LlamaForCausalLM'], torch_dtype: 'bfloat16' });
  const dirs = await Promise.all(
    perModel.map((tensors, i) =>
      writeModel(path.join(root, i === 0 ? 'base' : `ft${i}`), tensors, {
        shardSize: c.shardSize,
        files: i === 0 ? { 'config.json': config, 'tokenizer.json': '{"version":"1.0"}' } : {},
      }),
    ),
  );
  return { base: dirs[0] as string, models: dirs.slice(1) };
}

/** Checks every merged element against the float64 formula on the stored inputs, and the report's t. */
async function checkAgainstReference(
  base: string,
  models: string[],
  out: string,
  c: Case,
  report: MergeReport,
) {
  const inB = await readModel(base);
  const inM = await Promise.all(models.map(readModel));
  const merged = await readModel(out);
  assert.deepEqual([...merged.keys()], [...inB.keys()], 'output keeps the base tensors, in order');
  for (const [name, b] of inB) {
    const o = merged.get(name)!;
    const entry = report.tensors.find((t) => t.name === name)!;
    if (b.values === undefined) {
      assert.equal(entry.action, 'copy');
      assert.deepEqual(o.bytes, b.bytes, `${name} copied byte for byte`);
      continue;
    }
    assert.equal(entry.action, 'merge', name);
    const outDtype = c.outDtype ?? (b.dtype as FloatDType);
    assert.equal(o.dtype, outDtype);
    assert.deepEqual(o.shape, b.shape);
    const unitLength =
      c.filterWise && b.shape.length >= 2 ? numel(b.shape) / (b.shape[0] as number) : numel(b.shape);
    const ref = referenceMerge(
      b.values,
      inM.map((m) => m.get(name)!.values!),
      { unitLength, theta: c.theta },
    );
    assertWithinContract(
      o.values!,
      b.values,
      inM.map((m) => m.get(name)!.values!),
      ref.t,
      unitLength,
      outDtype,
      name,
    );
    if (ref.t.length === 1) {
      assert.ok(Math.abs(entry.t! - (ref.t[0] as number)) < 1e-9, `${name}: t ${entry.t} vs ${ref.t[0]}`);
    } else {
      const mean = ref.t.reduce((a, b) => a + b, 0) / ref.t.length;
      assert.ok(Math.abs(entry.tStats!.mean - mean) < 1e-9, `${name}: mean t`);
      assert.ok(Math.abs(entry.tStats!.min - Math.min(...ref.t)) < 1e-9, `${name}: min t`);
    }
  }
}

for (const backend of backendsUnderTest()) {
  describe(`mergeModelStock end to end (${backend} backend)`, () => {
    const tmp = useTmpDir();
    let seq = 0;
    const cases: [string, Case][] = [
      [
        'bf16, N = 2, layer-wise, one file',
        { dtypes: ['BF16', 'BF16', 'BF16'], filterWise: false, theta: 'mean-cos' },
      ],
      [
        'f16, N = 3, filter-wise, sharded',
        { dtypes: ['F16', 'F16', 'F16', 'F16'], filterWise: true, theta: 'mean-cos', shardSize: 900 },
      ],
      [
        'f32, N = 3, mean-angle, sharded',
        { dtypes: ['F32', 'F32', 'F32', 'F32'], filterWise: false, theta: 'mean-angle', shardSize: 1500 },
      ],
      ['f32, N = 2, filter-wise', { dtypes: ['F32', 'F32', 'F32'], filterWise: true, theta: 'mean-cos' }],
      [
        'bf16, N = 3, filter-wise, sharded',
        { dtypes: ['BF16', 'BF16', 'BF16', 'BF16'], filterWise: true, theta: 'mean-angle', shardSize: 700 },
      ],
      [
        'mixed bf16/f32/f16 → f32',
        { dtypes: ['BF16', 'F32', 'F16'], filterWise: false, theta: 'mean-cos', outDtype: 'F32' },
      ],
      [
        'f64 → bf16',
        { dtypes: ['F64', 'F64', 'F64'], filterWise: true, theta: 'mean-cos', outDtype: 'BF16' },
      ],
      [
        'windows far smaller than tensors (two passes)',
        { dtypes: ['BF16', 'F16', 'F32'], filterWise: true, theta: 'mean-cos', memory: 200 },
      ],
    ];
    for (const [label, c] of cases) {
      it(label, async () => {
        const root = path.join(tmp.dir, `case${seq++}`);
        const { base, models } = await makeModels(root, c, 1000 + seq);
        const out = path.join(root, 'merged');
        const report = await mergeModelStock({
          base,
          models,
          out,
          backend,
          filterWise: c.filterWise,
          theta: c.theta,
          outDtype: c.outDtype,
          shardSize: c.shardSize,
          memory: c.memory,
          fsync: false,
        });
        assert.equal(report.backend.name, backend);
        await checkAgainstReference(base, models, out, c, report);
        const files = fs.readdirSync(out).sort();
        assert.ok(
          files.includes(REPORT_FILE) &&
            files.includes('model_stock_config.yml') &&
            files.includes('README.md'),
        );
        assert.ok(files.includes('tokenizer.json'));
        const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
        // The base is bfloat16; --out-dtype changes config.json's torch_dtype to torch's name for it.
        const torchName = { F64: 'float64', F32: 'float32', F16: 'float16', BF16: 'bfloat16' } as const;
        assert.equal(config.torch_dtype, c.outDtype === undefined ? 'bfloat16' : torchName[c.outDtype]);
        if (c.shardSize !== undefined)
          assert.ok(files.includes('model.safetensors.index.json'), 'sharded output');
        else assert.ok(files.includes('model.safetensors'));
        assert.deepEqual(
          JSON.parse(fs.readFileSync(path.join(out, REPORT_FILE), 'utf8')).tensors,
          report.tensors,
        );
        assert.equal(
          fs.readdirSync(root).filter((f) => f.startsWith('.')).length,
          0,
          'no staging folder left',
        );
      });
    }

    it('windowed (two-pass) and whole-tensor merges give identical bytes', async () => {
      const c: Case = { dtypes: ['BF16', 'BF16', 'F16', 'F32'], filterWise: true, theta: 'mean-cos' };
      const root = path.join(tmp.dir, `same${seq++}`);
      const { base, models } = await makeModels(root, c, 77);
      const a = path.join(root, 'a');
      const b = path.join(root, 'b');
      await mergeModelStock({ base, models, out: a, backend, filterWise: true, fsync: false });
      await mergeModelStock({
        base,
        models,
        out: b,
        backend,
        filterWise: true,
        fsync: false,
        memory: 64,
        window: 8,
      });
      assert.deepEqual(
        fs.readFileSync(path.join(a, 'model.safetensors')),
        fs.readFileSync(path.join(b, 'model.safetensors')),
      );
    });
  });
}

describe('every input mode gives the same bytes (fs, pread, direct, mmap, auto)', () => {
  const tmp = useTmpDir();
  const modes: IoMode[] = backendsUnderTest().includes('native')
    ? ['fs', 'pread', 'direct', 'mmap', 'auto']
    : ['fs', 'auto'];
  for (const [label, extra] of [
    ['whole tensors', {}],
    ['windows, two passes', { memory: 300, window: 64 }],
  ] as const) {
    it(label, async () => {
      const c: Case = {
        dtypes: ['BF16', 'F16', 'F32'],
        filterWise: true,
        theta: 'mean-cos',
        shardSize: 1000,
      };
      const root = path.join(tmp.dir, label.replace(/\W+/g, '-'));
      const { base, models } = await makeModels(root, c, 9);
      const outputs: Buffer[][] = [];
      for (const io of modes) {
        const out = path.join(root, `out-${io}`);
        const report = await mergeModelStock({
          base,
          models,
          out,
          io,
          filterWise: true,
          shardSize: 1000,
          fsync: false,
          ...extra,
        });
        await checkAgainstReference(base, models, out, c, report);
        const shards = fs
          .readdirSync(out)
          .filter((f) => f.endsWith('.safetensors'))
          .sort();
        outputs.push(shards.map((f) => fs.readFileSync(path.join(out, f))));
      }
      for (const o of outputs.slice(1)) assert.deepEqual(o, outputs[0]);
    });
  }
});
