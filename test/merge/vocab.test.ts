import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { FloatDType } from '../../lib/dtype';
import { isModelStockError } from '../../lib/errors';
import { mergeModelStock } from '../../lib/merge';
import type { MergeReport } from '../../lib/types';
import { backendsUnderTest } from '../helpers/backends';
import { mergeArgs, runCli } from '../helpers/cli';
import { readModel, writeModel, type TensorSpec } from '../helpers/models';
import { correlatedModels, mulberry32, randomTensor, type Rng } from '../helpers/random';
import { assertWithinContract, referenceMerge } from '../helpers/reference';
import { assertValidReport } from '../helpers/schema';
import { useTmpDir } from '../helpers/tmp';

/**
 * Fine-tunes that added tokens (docs/merge-contract.md's embedding row): the vocabulary dimension of the input
 * embedding and output head may differ; the output keeps the base's shape, rows every input has are
 * merged (cosines and t over exactly those rows), the base's further rows are copied, rows only
 * fine-tunes have are left out. Every other shape mismatch stays an error.
 */

const HIDDEN = 16;
const CONFIG = (tie: boolean) =>
  JSON.stringify({ architectures: ['LlamaForCausalLM'], tie_word_embeddings: tie, torch_dtype: 'bfloat16' });

interface Model {
  readonly vocab: number;
  /** Rows of lm_head, or undefined for a model that ties its head (saves none). */
  readonly head: number | undefined;
}

/** Base + fine-tunes whose first `baseVocab` embedding rows are correlated; extra rows are random. */
async function makeModels(
  root: string,
  base: Model,
  fineTunes: readonly Model[],
  opts: { dtype: FloatDType; shardSize?: number; seed: number; hidden?: number[] },
): Promise<{ base: string; models: string[] }> {
  const rng = mulberry32(opts.seed);
  const maxVocab = Math.max(base.vocab, ...fineTunes.map((m) => m.vocab), base.head ?? 0);
  const all = [base, ...fineTunes];
  const rowsOf = (values: Float64Array, rows: number, width: number): Float64Array =>
    values.subarray(0, rows * width);
  const correlated = (rows: number, width: number): Float64Array[] => {
    const w0 = randomTensor(rows * width, rng, 0.5);
    return [w0, ...correlatedModels(w0, fineTunes.length, 0.4, rng)];
  };
  const embed = correlated(maxVocab, HIDDEN);
  const head = correlated(maxVocab, HIDDEN);
  const mlp = correlated(HIDDEN, 24);
  const tensors: TensorSpec[][] = all.map((m, i) => {
    const width = opts.hidden?.[i] ?? HIDDEN;
    const list: TensorSpec[] = [
      {
        name: 'model.embed_tokens.weight',
        dtype: opts.dtype,
        shape: [m.vocab, width],
        values: width === HIDDEN ? rowsOf(embed[i]!, m.vocab, HIDDEN) : randomTensor(m.vocab * width, rng),
      },
      {
        name: 'model.layers.0.mlp.down_proj.weight',
        dtype: opts.dtype,
        shape: [HIDDEN, 24],
        values: mlp[i]!,
      },
    ];
    if (m.head !== undefined) {
      list.push({
        name: 'lm_head.weight',
        dtype: opts.dtype,
        shape: [m.head, HIDDEN],
        values: rowsOf(head[i]!, m.head, HIDDEN),
      });
    }
    return list;
  });
  const dirs = await Promise.all(
    tensors.map((t, i) =>
      writeModel(path.join(root, i === 0 ? 'base' : `ft${i}`), t, {
        shardSize: opts.shardSize,
        files: { 'config.json': CONFIG(all[i]!.head === undefined) },
      }),
    ),
  );
  return { base: dirs[0]!, models: dirs.slice(1) };
}

/** The merged rows against the float64 reference on those rows; the base's further rows copied. */
async function checkEmbedding(
  name: string,
  fixture: { base: string; models: string[] },
  out: string,
  report: MergeReport,
  filterWise: boolean,
): Promise<void> {
  const base = (await readModel(fixture.base)).get(name)!;
  const models = await Promise.all(fixture.models.map(async (m) => (await readModel(m)).get(name)!));
  const merged = (await readModel(out)).get(name)!;
  assert.deepEqual(merged.shape, base.shape, `${name} keeps the base's shape`);
  const vocab = [base, ...models].map((t) => t.shape[0]!);
  const r = Math.min(...vocab);
  const width = base.shape[1]!;
  const n = r * width;
  const prefix = (v: Float64Array) => v.subarray(0, n);
  const unitLength = filterWise ? width : n;
  const ref = referenceMerge(
    prefix(base.values!),
    models.map((m) => prefix(m.values!)),
    {
      unitLength,
      theta: 'mean-cos',
    },
  );
  assertWithinContract(
    prefix(merged.values!),
    prefix(base.values!),
    models.map((m) => prefix(m.values!)),
    ref.t,
    unitLength,
    merged.dtype as FloatDType,
    name,
  );
  const size = merged.bytes.byteLength / merged.values!.length;
  assert.ok(
    Buffer.from(merged.bytes.subarray(n * size)).equals(Buffer.from(base.bytes.subarray(n * size))),
    `${name}: rows ${r}… copied from the base`,
  );
  const entry = report.tensors.find((t) => t.name === name)!;
  assert.equal(entry.action, 'merge');
  const dropped = vocab.slice(1).reduce((s, v) => s + Math.max(0, v - vocab[0]!), 0);
  assert.deepEqual(entry.rows, { merged: r, copied: vocab[0]! - r, dropped, vocab });
  if (filterWise) {
    assert.ok(Math.abs(entry.tStats!.mean - ref.t.reduce((a, b) => a + b, 0) / ref.t.length) < 1e-9);
  } else {
    assert.ok(Math.abs(entry.t! - ref.t[0]!) < 1e-9, `${name}: t ${entry.t} vs ${ref.t[0]}`);
  }
  assert.equal(report.warnings.filter((w) => w.startsWith(`${name}: vocabulary sizes differ`)).length, 1);
}

describe('fine-tunes that added tokens: embedding vocabulary sizes', () => {
  const tmp = useTmpDir();
  let k = 0;
  const fresh = () => path.join(tmp.dir, `case${k++}`);

  for (const backend of backendsUnderTest()) {
    const scenarios: [string, Model[], FloatDType, boolean, number | undefined][] = [
      [
        'N = 2, fine-tunes +2 and +5 rows, bf16, layer-wise',
        [
          { vocab: 102, head: 102 },
          { vocab: 105, head: 105 },
        ],
        'BF16',
        false,
        undefined,
      ],
      [
        'N = 3, +2, +0, +5 rows, f32, filter-wise, sharded',
        [
          { vocab: 102, head: 102 },
          { vocab: 100, head: 100 },
          { vocab: 105, head: 105 },
        ],
        'F32',
        true,
        4000,
      ],
      [
        'one fine-tune with fewer rows than the base, bf16, filter-wise',
        [
          { vocab: 102, head: 102 },
          { vocab: 97, head: 97 },
        ],
        'BF16',
        true,
        undefined,
      ],
      [
        'fewer rows, f32, layer-wise, sharded',
        [
          { vocab: 97, head: 97 },
          { vocab: 98, head: 98 },
          { vocab: 103, head: 103 },
        ],
        'F32',
        false,
        3000,
      ],
    ];
    for (const [what, fineTunes, dtype, filterWise, shardSize] of scenarios) {
      it(`${what} (${backend})`, async () => {
        const root = fresh();
        const fixture = await makeModels(root, { vocab: 100, head: 100 }, fineTunes, {
          dtype,
          shardSize,
          seed: k,
        });
        const out = path.join(root, 'out');
        const report = await mergeModelStock({ ...fixture, out, backend, filterWise, fsync: false });
        assertValidReport(report, what);
        await checkEmbedding('model.embed_tokens.weight', fixture, out, report, filterWise);
        await checkEmbedding('lm_head.weight', fixture, out, report, filterWise);
        // Windowed (a tiny memory budget) gives the same bytes.
        const windowed = path.join(root, 'out-windowed');
        await mergeModelStock({
          ...fixture,
          out: windowed,
          backend,
          filterWise,
          fsync: false,
          memory: 4096,
          window: 1024,
        });
        const files = (dir: string) =>
          fs
            .readdirSync(dir)
            .filter((f) => f.endsWith('.safetensors'))
            .sort()
            .map((f) => fs.readFileSync(path.join(dir, f)));
        assert.deepEqual(files(windowed), files(out));
      });
    }

    it(`--out-dtype converts the base's copied rows too (${backend})`, async () => {
      const root = fresh();
      const fixture = await makeModels(
        root,
        { vocab: 100, head: 100 },
        [
          { vocab: 102, head: 102 },
          { vocab: 96, head: 96 },
        ],
        { dtype: 'BF16', seed: 5 },
      );
      const out = path.join(root, 'out');
      await mergeModelStock({ ...fixture, out, backend, outDtype: 'F32', fsync: false });
      const base = (await readModel(fixture.base)).get('lm_head.weight')!;
      const merged = (await readModel(out)).get('lm_head.weight')!;
      assert.equal(merged.dtype, 'F32');
      assert.deepEqual([...merged.values!.subarray(96 * HIDDEN)], [...base.values!.subarray(96 * HIDDEN)]);
    });
  }

  it('a hidden-size mismatch in an embedding, and a vocabulary-like mismatch elsewhere, stay SHAPE_MISMATCH', async () => {
    const root = fresh();
    const hidden = await makeModels(
      root,
      { vocab: 100, head: 100 },
      [
        { vocab: 102, head: 102 },
        { vocab: 100, head: 100 },
      ],
      {
        dtype: 'BF16',
        seed: 3,
        hidden: [HIDDEN, HIDDEN, 17],
      },
    );
    await assert.rejects(
      mergeModelStock({ ...hidden, out: path.join(root, 'out'), fsync: false }),
      (e: unknown) =>
        isModelStockError(e) && e.code === 'SHAPE_MISMATCH' && e.tensor === 'model.embed_tokens.weight',
    );
    const other = fresh();
    const rng: Rng = mulberry32(4);
    const dirs = await Promise.all(
      [16, 16, 18].map((rows, i) =>
        writeModel(path.join(other, `m${i}`), [
          {
            name: 'model.layers.0.mlp.down_proj.weight',
            dtype: 'BF16',
            shape: [rows, 24],
            values: randomTensor(rows * 24, rng),
          },
        ]),
      ),
    );
    await assert.rejects(
      mergeModelStock({ base: dirs[0]!, models: dirs.slice(1), out: path.join(other, 'out'), fsync: false }),
      (e: unknown) =>
        isModelStockError(e) &&
        e.code === 'SHAPE_MISMATCH' &&
        e.tensor === 'model.layers.0.mlp.down_proj.weight' &&
        /\[18, 24\] in model 2/.test(e.message),
    );
    assert.ok(!fs.existsSync(path.join(other, 'out')));
  });

  it('tied base, fine-tunes that saved lm_head: the output follows the base (no lm_head), said and reported', async () => {
    const root = fresh();
    const fixture = await makeModels(
      root,
      { vocab: 100, head: undefined },
      [
        { vocab: 100, head: 100 },
        { vocab: 100, head: 100 },
      ],
      {
        dtype: 'BF16',
        seed: 6,
      },
    );
    const out = path.join(root, 'out');
    const warnings: string[] = [];
    const report = await mergeModelStock({
      ...fixture,
      out,
      fsync: false,
      onWarning: (w) => warnings.push(w),
    });
    assert.ok(!(await readModel(out)).has('lm_head.weight'));
    const entry = report.tensors.find((t) => t.name === 'lm_head.weight')!;
    assert.equal(entry.action, 'drop');
    assertValidReport(report, 'tied base');
    assert.match(entry.reason!, /tie_word_embeddings/);
    assert.deepEqual(entry.models, [0, 1]);
    assert.ok(
      warnings.some((w) => w.startsWith('lm_head.weight:') && /tie/.test(w)),
      warnings.join('\n'),
    );
  });

  it('untied base, tied fine-tunes: lm_head copied from the base, said and reported', async () => {
    const root = fresh();
    const fixture = await makeModels(
      root,
      { vocab: 100, head: 100 },
      [
        { vocab: 100, head: undefined },
        { vocab: 100, head: undefined },
      ],
      {
        dtype: 'BF16',
        seed: 7,
      },
    );
    const out = path.join(root, 'out');
    const report = await mergeModelStock({ ...fixture, out, fsync: false });
    const base = (await readModel(fixture.base)).get('lm_head.weight')!;
    assert.deepEqual((await readModel(out)).get('lm_head.weight')!.bytes, base.bytes);
    const entry = report.tensors.find((t) => t.name === 'lm_head.weight')!;
    assert.equal(entry.action, 'copy');
    assert.match(entry.reason!, /tie_word_embeddings/);
    assert.ok(
      report.warnings.some((w) => w.startsWith('lm_head.weight: copied from the base') && /tie/.test(w)),
    );
  });

  it('works from a mergekit config, byte for byte like the flags', async () => {
    const root = fresh();
    const fixture = await makeModels(
      root,
      { vocab: 100, head: 100 },
      [
        { vocab: 102, head: 102 },
        { vocab: 105, head: 105 },
      ],
      {
        dtype: 'BF16',
        seed: 8,
      },
    );
    const yml = path.join(root, 'merge.yml');
    fs.writeFileSync(
      yml,
      [
        'merge_method: model_stock',
        `base_model: ${fixture.base}`,
        'models:',
        ...fixture.models.map((m) => `  - model: ${m}`),
        'dtype: bfloat16',
        '',
      ].join('\n'),
    );
    const viaConfig = runCli(['merge', yml, path.join(root, 'via-config'), '--no-fsync']);
    assert.equal(viaConfig.code, 0, viaConfig.stderr);
    assert.match(viaConfig.stderr, /vocabulary sizes differ/);
    const viaFlags = runCli([
      ...mergeArgs(fixture.base, fixture.models, path.join(root, 'via-flags')),
      '--no-fsync',
    ]);
    assert.equal(viaFlags.code, 0, viaFlags.stderr);
    const weights = (dir: string) => fs.readFileSync(path.join(root, dir, 'model.safetensors'));
    assert.ok(weights('via-config').equals(weights('via-flags')));
  });
});
