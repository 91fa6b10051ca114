/**
 * A merge of LoRA adapters written as a LoRA adapter (lib/output/peft.ts): the merged factors against
 * the float64 reference of a dense Model Stock merge of the materialized fine-tunes (issue 19's bound
 * 1e-5·max|ref − W0| + 2⁻²⁰·|ref| per element), the config PEFT reads (peft-format.md §6.4, §10), the
 * file's bytes in safetensors' layout, and a round trip through our own adapter reader.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { moduleScaling, parseAdapterConfig } from '../../lib/adapter/config';
import { openCheckpoint } from '../../lib/checkpoint/open';
import { decodeFloats } from '../../lib/math/codec';
import { peftSafetensorsHeader } from '../../lib/fixtures/lora';
import {
  ADAPTER_CONFIG_FILE,
  adapterConfigText,
  adapterLayout,
  factorEntries,
  mergeFactors,
  mergedAdapterConfig,
  writeFactors,
  type FactorValues,
  type LowRankMerge,
  type MergedFactors,
} from '../../lib/output/peft';
import { SafetensorsWriter } from '../../lib/safetensors/writer';
import { denseTaskVector } from '../helpers/lowRank';
import { mulberry32, randomTensor, type Rng } from '../helpers/random';
import { referenceMerge } from '../helpers/reference';
import { useTmpDir } from '../helpers/tmp';

interface Case {
  readonly rows: number;
  readonly cols: number;
  readonly transposed: boolean;
  readonly filterWise: boolean;
  /** Per fine-tune: [rank, scale], or undefined for an adapter that leaves the module as it is. */
  readonly adapters: readonly ([number, number] | undefined)[];
}

interface Built {
  readonly w0: Float64Array;
  readonly models: Float64Array[];
  readonly factors: (FactorValues | undefined)[];
}

/** Random factors (A ~ 0.1·N, B ~ 0.02·N) over a random base, and the fine-tunes W0 + d_i in float64. */
function build(c: Case, rng: Rng): Built {
  const { rows: R, cols: C, transposed } = c;
  const w0 = randomTensor(R * C, rng, 0.05);
  const factors = c.adapters.map((x) => {
    if (x === undefined) return undefined;
    const [rank, scale] = x;
    const a = Float64Array.from(randomTensor(rank * (transposed ? R : C), rng, 0.1), Math.fround);
    const b = Float64Array.from(randomTensor(rank * (transposed ? C : R), rng, 0.02), Math.fround);
    return { a, b, rank, scale };
  });
  const models = factors.map((f) => {
    if (f === undefined) return Float64Array.from(w0);
    const d = denseTaskVector(f.a, f.b, f.rank, f.scale, R, C, transposed);
    return w0.map((w, k) => w + d[k]!);
  });
  return { w0, models, factors };
}

/** W0 + B′·A′ in the stored [R, C] layout, sums in float64. */
function reconstruct(
  f: MergedFactors,
  w0: Float64Array,
  R: number,
  C: number,
  transposed: boolean,
): Float64Array {
  const d = denseTaskVector(Float64Array.from(f.a), Float64Array.from(f.b), f.rank, 1, R, C, transposed);
  return w0.map((w, k) => w + d[k]!);
}

/** Issue 19's exactness bound, element by element; throws naming the first element outside it. */
function assertExact(got: Float64Array, ref: Float64Array, w0: Float64Array, label: string): void {
  let maxDelta = 0;
  for (let k = 0; k < ref.length; k++) maxDelta = Math.max(maxDelta, Math.abs(ref[k]! - w0[k]!));
  for (let k = 0; k < ref.length; k++) {
    const tol = 1e-5 * maxDelta + 2 ** -20 * Math.abs(ref[k]!);
    const err = Math.abs(got[k]! - ref[k]!);
    if (!(err <= tol)) throw new Error(`${label}: element ${k} is ${got[k]}, reference ${ref[k]} ± ${tol}`);
  }
}

function mergeCase(
  c: Case,
  seed: number,
): { built: Built; merged: MergedFactors; ref: Float64Array; t: Float64Array } {
  const built = build(c, mulberry32(seed));
  const unitLength = c.filterWise ? c.cols : c.rows * c.cols;
  const { out: ref, t } = referenceMerge(built.w0, built.models, { unitLength, theta: 'mean-cos' });
  const m: LowRankMerge = {
    module: 'model.layers.0.mlp.up_proj',
    rows: c.rows,
    cols: c.cols,
    transposed: c.transposed,
    n: c.adapters.length,
    t,
    factors: built.factors,
  };
  return { built, merged: mergeFactors(m), ref, t };
}

describe('adapter output: merged factors (lib/output/peft.ts)', () => {
  const rsLora = (alpha: number, r: number): [number, number] => [r, alpha / Math.sqrt(r)];
  const cases: [string, Case][] = [
    [
      'N = 2, layer-wise',
      {
        rows: 24,
        cols: 40,
        transposed: false,
        filterWise: false,
        adapters: [
          [4, 2],
          [8, 2],
        ],
      },
    ],
    [
      'N = 2, filter-wise',
      {
        rows: 24,
        cols: 40,
        transposed: false,
        filterWise: true,
        adapters: [
          [4, 2],
          [8, 2],
        ],
      },
    ],
    [
      'N = 3, rsLoRA and a rank_pattern rank, layer-wise',
      {
        rows: 20,
        cols: 33,
        transposed: false,
        filterWise: false,
        adapters: [rsLora(16, 8), [16, 0.5], [2, 4]],
      },
    ],
    [
      'N = 3, filter-wise, one adapter not targeting the module (partial targets: still divided by N = 3)',
      { rows: 20, cols: 33, transposed: false, filterWise: true, adapters: [[4, 2], undefined, [6, 1]] },
    ],
    [
      'Conv1D (fan_in_fan_out), layer-wise',
      {
        rows: 30,
        cols: 18,
        transposed: true,
        filterWise: false,
        adapters: [
          [4, 2],
          [4, 2],
        ],
      },
    ],
    [
      'Conv1D (fan_in_fan_out), filter-wise: t_k on the columns of A',
      { rows: 30, cols: 18, transposed: true, filterWise: true, adapters: [[4, 2], [3, 2], rsLora(8, 3)] },
    ],
  ];
  for (const [label, c] of cases) {
    it(`${label}: W0 + B′A′ within 1e-5·max|ref − W0| + 2⁻²⁰·|ref| of the float64 reference`, () => {
      const { built, merged, ref } = mergeCase(c, label.length * 7919);
      const ranks = c.adapters.reduce((a, x) => a + (x?.[0] ?? 0), 0);
      assert.equal(merged.rank, ranks);
      const [inDim, outDim] = c.transposed ? [c.rows, c.cols] : [c.cols, c.rows];
      assert.deepEqual(merged.aShape, [ranks, inDim]);
      assert.deepEqual(merged.bShape, [outDim, ranks]);
      assertExact(reconstruct(merged, built.w0, c.rows, c.cols, c.transposed), ref, built.w0, label);
    });
  }

  it('a wrong scale, a missing 1/N or a t on the wrong side fails the same check', () => {
    const c = cases[5]![1];
    const { built, ref, t } = mergeCase(c, 5);
    const rec = (f: MergedFactors): Float64Array => reconstruct(f, built.w0, c.rows, c.cols, c.transposed);
    const base: LowRankMerge = {
      module: 'm',
      rows: c.rows,
      cols: c.cols,
      transposed: true,
      n: 3,
      t,
      factors: built.factors,
    };
    const scaled = built.factors.map((f) => (f === undefined ? f : { ...f, scale: f.scale * 1.001 }));
    assert.throws(() => assertExact(rec(mergeFactors({ ...base, factors: scaled })), ref, built.w0, 'scale'));
    assert.throws(() => assertExact(rec(mergeFactors({ ...base, n: 2 })), ref, built.w0, 'N'));
    // t_k applied to the output rows (Linear's rule) instead of the stored rows of a Conv1D layer.
    assert.throws(() =>
      assertExact(
        rec(mergeFactors({ ...base, transposed: false, rows: c.cols, cols: c.rows, t: t.slice(0, c.cols) })),
        ref,
        built.w0,
        'side',
      ),
    );
  });

  it('a pole (t = 0) gives B′ = 0: the base exactly', () => {
    const f: FactorValues = { a: [1, 2], b: [3, 4], rank: 1, scale: 2 };
    const m = mergeFactors({
      module: 'x',
      rows: 2,
      cols: 2,
      transposed: false,
      n: 2,
      t: [0],
      factors: [f, f],
    });
    assert.ok(m.b.every((v) => v === 0));
  });

  it('refuses a t of the wrong length and a module no adapter has factors for', () => {
    const f: FactorValues = { a: [1, 2], b: [3, 4], rank: 1, scale: 2 };
    const shape = { module: 'x', rows: 2, cols: 2, transposed: false, n: 2 };
    assert.throws(
      () => mergeFactors({ ...shape, t: [1, 1, 1], factors: [f, f] }),
      /3 ratios for 2 stored rows/,
    );
    assert.throws(
      () => mergeFactors({ ...shape, t: [1], factors: [undefined, undefined] }),
      /no fine-tune has factors/,
    );
  });
});

describe('adapter output: adapter_config.json (peft-format.md §6.4, §10)', () => {
  const modules = [
    { module: 'model.layers.0.self_attn.q_proj', rank: 16 },
    { module: 'model.layers.0.self_attn.v_proj', rank: 8 },
    { module: 'model.layers.1.self_attn.q_proj', rank: 16 },
  ];
  const input = {
    modules,
    modulesToSave: ['lm_head'],
    knownModules: ['model.embed_tokens', 'lm_head', 'model.layers.0.self_attn.k_proj'],
    fanInFanOut: false,
    baseModel: 'TinyLlama/TinyLlama-1.1B-Chat-v1.0',
    taskType: 'CAUSAL_LM',
  };

  it('r = lora_alpha = the largest rank, use_rslora false, rank_pattern = alpha_pattern for the others: every module at scale 1 through our reader', () => {
    const config = mergedAdapterConfig(input);
    assert.equal(config.r, 16);
    assert.equal(config.lora_alpha, 16);
    assert.equal(config.use_rslora, false);
    assert.deepEqual(config.rank_pattern, { 'model.layers.0.self_attn.v_proj': 8 });
    assert.deepEqual(config.alpha_pattern, config.rank_pattern);
    assert.deepEqual(config.target_modules, modules.map((m) => m.module).sort());
    assert.deepEqual(config.modules_to_save, ['lm_head']);
    assert.equal(config.init_lora_weights, true);
    assert.equal(config.bias, 'none');
    assert.equal(config.peft_type, 'LORA');
    const text = adapterConfigText(config);
    // PEFT 0.13's 24 keys (peft-format.md §1.6), nothing newer: an unknown key is a TypeError there.
    assert.equal(Object.keys(JSON.parse(text) as object).length, 24);
    assert.ok(!text.endsWith('\n'));
    assert.match(text, /"lora_dropout": 0\.0,/);
    const parsed = parseAdapterConfig(text, ADAPTER_CONFIG_FILE);
    for (const m of modules) {
      const s = moduleScaling(parsed, m.module);
      assert.deepEqual(s, { rank: m.rank, alpha: m.rank, scale: 1 }, m.module);
    }
  });

  it('refuses a pattern key that would also match another module, under either PEFT rule', () => {
    const nested = { ...input, knownModules: ['vision.model.layers.0.self_attn.v_proj'] };
    assert.throws(
      () => mergedAdapterConfig(nested),
      (e: Error & { code?: string }) => {
        assert.equal(e.code, 'UNSUPPORTED_ADAPTER');
        assert.match(e.message, /rank_pattern key "model\.layers\.0\.self_attn\.v_proj".*vision\.model/);
        return true;
      },
    );
    // A regex `.` matches any character.
    const wildcard = { ...input, knownModules: ['model.layers.0.self_attn_v_proj'] };
    assert.throws(
      () => mergedAdapterConfig(wildcard),
      /would also match module "model\.layers\.0\.self_attn_v_proj"/,
    );
  });

  it('refuses a modules_to_save entry that would catch a targeted module, and names with regex characters', () => {
    assert.throws(
      () => mergedAdapterConfig({ ...input, modulesToSave: ['q_proj'] }),
      /modules_to_save entry "q_proj" would also catch the LoRA-targeted module/,
    );
    assert.throws(
      () => mergedAdapterConfig({ ...input, modules: [{ module: 'model.h[0].q', rank: 4 }] }),
      /characters PEFT would read as a regular expression/,
    );
    assert.throws(() => mergedAdapterConfig({ ...input, modules: [] }), /no module keeps LoRA factors/);
  });
});

describe('adapter output: adapter_model.safetensors and a round trip through the adapter reader', () => {
  const tmp = useTmpDir();

  it('writes the bytes PEFT writes and reads back as the same factors at scale 1', async () => {
    const cases: [string, Case][] = [
      [
        'model.layers.0.self_attn.q_proj',
        {
          rows: 12,
          cols: 10,
          transposed: false,
          filterWise: true,
          adapters: [
            [2, 2],
            [3, 1],
          ],
        },
      ],
      [
        'model.layers.0.self_attn.v_proj',
        { rows: 6, cols: 10, transposed: false, filterWise: false, adapters: [[2, 2], undefined] },
      ],
      [
        'model.layers.10.self_attn.q_proj',
        {
          rows: 12,
          cols: 10,
          transposed: false,
          filterWise: false,
          adapters: [
            [2, 2],
            [3, 1],
          ],
        },
      ],
    ];
    const merged = cases.map(([module, c], i) => ({ ...mergeCase(c, i + 1).merged, module }));
    const dir = path.join(tmp.dir, 'adapter');
    fs.mkdirSync(dir);
    const entries = merged.flatMap(factorEntries);
    const layout = adapterLayout(entries);
    // safetensors' prepare() order (dtype, then names bytewise: layers.0. < layers.10.) and {"format":"pt"}, as the fixtures write PEFT's files.
    const expected = peftSafetensorsHeader(
      merged.flatMap((f) => [
        {
          name: `base_model.model.${f.module}.lora_A.weight`,
          dtype: 'F32' as const,
          shape: f.aShape,
          values: f.a,
        },
        {
          name: `base_model.model.${f.module}.lora_B.weight`,
          dtype: 'F32' as const,
          shape: f.bShape,
          values: f.b,
        },
      ]),
    );
    assert.deepEqual(Buffer.from(layout.shards[0]!.header), Buffer.from(expected));
    const writer = await SafetensorsWriter.create(dir, layout, { mode: 'node' });
    for (const f of [...merged].reverse()) await writeFactors(writer, f);
    await writer.finish({ fsync: false });
    const config = mergedAdapterConfig({
      modules: merged.map((f) => ({ module: f.module, rank: f.rank })),
      modulesToSave: [],
      knownModules: [],
      fanInFanOut: false,
      baseModel: undefined,
      taskType: 'CAUSAL_LM',
    });
    fs.writeFileSync(path.join(dir, ADAPTER_CONFIG_FILE), adapterConfigText(config));
    assert.deepEqual(fs.readdirSync(dir).sort(), ['adapter_config.json', 'adapter_model.safetensors']);

    const ckpt = await openCheckpoint(dir);
    assert.equal(ckpt.format, 'lora');
    const adapter = ckpt.adapter!;
    assert.equal(adapter.modules.length, 3);
    for (const f of merged) {
      const m = adapter.modules.find((x) => x.module === f.module)!;
      assert.equal(m.rank, f.rank);
      assert.equal(m.scale, 1);
      assert.equal(m.a.name, `base_model.model.${f.module}.lora_A.weight`);
      const bytes = fs.readFileSync(m.a.file);
      const a = decodeFloats(bytes.subarray(m.a.offset, m.a.offset + m.a.byteLength), 'F32');
      assert.deepEqual(Float32Array.from(a), f.a);
      const b = decodeFloats(bytes.subarray(m.b.offset, m.b.offset + m.b.byteLength), 'F32');
      assert.deepEqual(Float32Array.from(b), f.b);
    }
  });
});
