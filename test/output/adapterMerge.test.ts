/**
 * `--out-format peft` end to end (issue 19): adapters in PEFT's on-disk format (test/helpers/adapters.ts)
 * merged into one adapter; every tensor the output changes, rebuilt as PEFT would load it (W0 + B′·A′
 * at scale lora_alpha/r, or the modules_to_save tensor), against the float64 reference of a dense Model
 * Stock merge of the materialized fine-tunes; refusals before any work; --overwrite; CLI and YAML.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { moduleScaling, parseAdapterConfig } from '../../lib/adapter/config';
import { openCheckpoint } from '../../lib/checkpoint/open';
import type { FloatDType } from '../../lib/dtype';
import { decodeFloats } from '../../lib/math/codec';
import { mergeModelStock } from '../../lib/merge';
import { checkAdapterInputs } from '../../lib/output/adapterMerge';
import { readSafetensorsFile } from '../../lib/safetensors/file';
import type { MergeReport } from '../../lib/types';
import {
  asFineTunes,
  buildInputs,
  gpt2Like,
  GPT2_ADAPTERS,
  llamaLike,
  llamaModules,
  SAVED_AND_BIAS_ADAPTERS,
  THREE_ADAPTERS,
  TWO_ADAPTERS,
  writeFullFineTune,
  type AdapterSpec,
  type BaseTensor,
  type BuiltInputs,
} from '../helpers/adapters';
import { backendsUnderTest } from '../helpers/backends';
import { mergeArgs, runCli } from '../helpers/cli';
import { denseTaskVector } from '../helpers/lowRank';
import { hashTree } from '../helpers/models';
import { rejectsWith } from '../helpers/pytorch';
import { mulberry32, randomTensor } from '../helpers/random';
import { peftConfig, writePeftAdapter } from '../../lib/fixtures/lora';
import { assertWithinContract, numel, referenceGram, referenceMerge } from '../helpers/reference';
import { pairCosines } from '../../lib/math/ratio';
import { useTmpDir } from '../helpers/tmp';

interface Case {
  readonly base: BaseTensor[];
  readonly adapters: readonly AdapterSpec[];
  readonly filterWise?: boolean;
  readonly outDtype?: FloatDType;
}

/** Per adapter in `dense`: its dense weights where it changes something. */
type Built = Pick<BuiltInputs, 'base' | 'models' | 'baseValues' | 'dense'>;

const build = (root: string, c: Case, seed: number): Promise<Built> =>
  buildInputs(root, c.base, asFineTunes(c.adapters), seed, 'X');

/** The adapter output's tensors by key, decoded, and its config. */
async function readAdapter(out: string): Promise<{
  config: Record<string, unknown>;
  text: string;
  tensors: Map<string, { shape: readonly number[]; dtype: string; values: Float64Array }>;
}> {
  const text = fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8');
  const file = path.join(out, 'adapter_model.safetensors');
  const parsed = await readSafetensorsFile(file);
  const bytes = fs.readFileSync(file);
  const tensors = new Map<string, { shape: readonly number[]; dtype: string; values: Float64Array }>();
  for (const t of parsed.tensors) {
    const values = Float64Array.from(
      decodeFloats(bytes.subarray(t.offset, t.offset + t.byteLength), t.dtype as FloatDType),
    );
    tensors.set(t.name, { shape: t.shape, dtype: t.dtype, values });
  }
  assert.deepEqual(parsed.metadata, { format: 'pt' });
  return { config: JSON.parse(text) as Record<string, unknown>, text, tensors };
}

/** The base tensor a module of the output changes (GPT-2's modules carry `transformer.`, its checkpoint not). */
function baseTensorOf(c: Case, module: string, param: string): string {
  const name = `${module}.${param}`;
  if (c.base.some((t) => t.name === name)) return name;
  return name.slice(name.indexOf('.') + 1);
}

/**
 * Every base tensor as PEFT would see it after loading the output over the base, against the float64
 * reference: factor tensors within issue 19's bound, whole tensors within the accuracy contract in
 * their dtype, the rest the base's (no adapter changes them).
 */
async function checkAdapterOutput(b: Built, c: Case, out: string, report: MergeReport): Promise<void> {
  const { config, text, tensors } = await readAdapter(out);
  assert.equal(report.outFormat, 'peft');
  assert.equal(config.use_rslora, false);
  assert.equal(config.r, config.lora_alpha);
  const parsed = parseAdapterConfig(text, 'adapter_config.json');
  const fanInFanOut = config.fan_in_fan_out === true;
  const covered = new Set<string>();
  let changedByFactors = 0;
  const saved = (config.modules_to_save as string[] | null) ?? [];
  for (const [key, t] of tensors) {
    assert.ok(key.startsWith('base_model.model.'), key);
    const m = /^base_model\.model\.(.+)\.lora_(A\.weight|embedding_A)$/.exec(key);
    if (m === null) {
      if (/\.lora_(B\.weight|embedding_B)$/.test(key)) continue;
      // A whole tensor: PEFT's plain name, its module in modules_to_save.
      const name = key.slice('base_model.model.'.length);
      const module = name.slice(0, name.lastIndexOf('.'));
      assert.ok(saved.includes(module), `${module} in modules_to_save ${JSON.stringify(saved)}`);
      const baseName = baseTensorOf(c, module, name.slice(name.lastIndexOf('.') + 1));
      covered.add(baseName);
      const { ws, unitLength, ref } = reference(b, c, baseName);
      const entry = report.tensors.find((e) => e.name === baseName)!;
      assert.equal(entry.action, 'merge');
      const spec = c.base.find((x) => x.name === baseName)!;
      assertWithinContract(
        t.values,
        b.baseValues.get(baseName)!,
        ws,
        ref.t,
        unitLength,
        c.outDtype ?? spec.dtype,
        key,
      );
      continue;
    }
    const module = m[1]!;
    const embedding = m[2] === 'embedding_A';
    const bT = tensors.get(`base_model.model.${module}.lora_${embedding ? 'embedding_B' : 'B.weight'}`)!;
    // The config's r (rank_pattern) for this module is the stored rank, its scale 1.
    const scaling = moduleScaling(parsed, module);
    assert.equal(scaling.rank, t.shape[0], `${module}: rank`);
    assert.equal(scaling.scale, 1, `${module}: scale`);
    assert.ok(!saved.some((s) => module.endsWith(s)), `${module} is not also in modules_to_save`);
    const baseName = baseTensorOf(c, module, 'weight');
    covered.add(baseName);
    const [R, C] = c.base.find((x) => x.name === baseName)!.shape as [number, number];
    const w0 = b.baseValues.get(baseName)!;
    // An embedding's factors are always stored transposed (lora_embedding_A [r, vocab], _B [dim, r]).
    const d = denseTaskVector(
      t.values,
      bT.values,
      scaling.rank,
      scaling.scale,
      R,
      C,
      fanInFanOut || embedding,
    );
    const got = w0.map((x, k) => x + d[k]!);
    const { ref } = reference(b, c, baseName);
    let maxDelta = 0;
    for (let k = 0; k < w0.length; k++) maxDelta = Math.max(maxDelta, Math.abs(ref.out[k]! - w0[k]!));
    // t = 0 (one of N = 2 adapters leaves it: cosine 0) writes B′ = 0, the base exactly.
    if (maxDelta > 0) changedByFactors++;
    for (let k = 0; k < w0.length; k++) {
      const tol = 1e-5 * maxDelta + 2 ** -20 * Math.abs(ref.out[k]!);
      assert.ok(
        Math.abs(got[k]! - ref.out[k]!) <= tol,
        `${baseName}[${k}]: ${got[k]} vs ${ref.out[k]} ± ${tol}`,
      );
    }
    const entry = report.tensors.find((e) => e.name === baseName)!;
    if (ref.t.length === 1) {
      // The contract's 1e-9 on cosines (t = 2c/(1+c) amplifies their error near c = −1).
      const cos = pairCosines(referenceGram(w0, reference(b, c, baseName).ws, w0.length), 0, b.dense.length);
      (entry.cosines as number[]).forEach((x, p) =>
        assert.ok(Math.abs(x - cos[p]!) <= 1e-9, `${baseName}: cosine ${p}: ${x} vs ${cos[p]}`),
      );
    }
  }
  assert.ok(changedByFactors > 0, 'some tensor written as factors moves');
  for (const t of c.base) {
    if (covered.has(t.name)) continue;
    assert.ok(
      !b.dense.some((d) => d.has(t.name)),
      `${t.name} is changed by an adapter but not in the output`,
    );
    const entry = report.tensors.find((e) => e.name === t.name)!;
    assert.equal(entry.action, 'copy', t.name);
    assert.match(entry.reason!, /not in the adapter/);
  }
}

/** The error `work` rejects with (it must reject). */
async function failure(work: Promise<unknown>): Promise<Error & { code?: string }> {
  return work.then(
    () => assert.fail('expected a failure'),
    (err: unknown) => err as Error & { code?: string },
  );
}

function reference(b: Built, c: Case, name: string) {
  const w0 = b.baseValues.get(name)!;
  const ws = b.dense.map((d) => d.get(name) ?? w0);
  const shape = c.base.find((t) => t.name === name)!.shape;
  const unitLength = c.filterWise === true && shape.length >= 2 ? numel(shape) / shape[0]! : numel(shape);
  return { ws, unitLength, ref: referenceMerge(w0, ws, { unitLength, theta: 'mean-cos' }) };
}

const { q, k, v, gate, down } = llamaModules;
const TWO = TWO_ADAPTERS;

const CASES: [string, Case][] = [
  [
    'N = 2, layer-wise, partial targets, f32 factors over a bf16 base',
    { base: llamaLike('BF16'), adapters: TWO },
  ],
  [
    'N = 3, filter-wise: rsLoRA, rank_pattern + alpha_pattern, bf16 factors without the prefix, adapter_model.bin',
    { base: llamaLike('BF16'), filterWise: true, adapters: THREE_ADAPTERS },
  ],
  [
    'modules_to_save beside LoRA on the same head, and a lora_B.bias: those modules merged whole (bf16 out)',
    { base: llamaLike('F32'), outDtype: 'BF16', adapters: SAVED_AND_BIAS_ADAPTERS },
  ],
  [
    'GPT-2 Conv1D layout (fan_in_fan_out, modules under transformer.), filter-wise, f16 base',
    { base: gpt2Like('F16'), filterWise: true, adapters: GPT2_ADAPTERS },
  ],
  [
    'GPT-2 Conv1D layout (fan_in_fan_out, modules under transformer.), layer-wise, f16 base',
    { base: gpt2Like('F16'), adapters: GPT2_ADAPTERS },
  ],
];

for (const backend of backendsUnderTest()) {
  describe(`adapter output, --out-format peft (${backend} backend)`, () => {
    const tmp = useTmpDir();
    let seq = 0;
    for (const [label, c] of CASES) {
      it(label, async () => {
        const root = path.join(tmp.dir, `case${seq++}`);
        const b = await build(root, c, seq);
        const out = path.join(root, 'out');
        const before = b.models.map((m) => hashTree(m));
        const report = await mergeModelStock({
          base: b.base,
          models: b.models,
          out,
          outFormat: 'peft',
          backend,
          filterWise: c.filterWise ?? false,
          outDtype: c.outDtype,
          fsync: false,
        });
        await checkAdapterOutput(b, c, out, report);
        assert.deepEqual(fs.readdirSync(out).sort(), [
          'README.md',
          'adapter_config.json',
          'adapter_model.safetensors',
          'model_stock_config.yml',
          'model_stock_report.json',
          'model_stock_report.svg',
        ]);
        assert.deepEqual(
          b.models.map((m) => hashTree(m)),
          before,
          'inputs untouched',
        );
        // Our own reader takes the output as an adapter of the base.
        const again = await openCheckpoint(out);
        assert.equal(again.format, 'lora');
        assert.ok(again.adapter!.modules.every((m) => m.scale === 1));
      });
    }
  });
}

describe('adapter output: config details, refusals, --overwrite, CLI and YAML', () => {
  const tmp = useTmpDir();
  let seq = 0;
  const fresh = async (
    c: Case = { base: llamaLike('BF16'), adapters: TWO },
  ): Promise<Built & { root: string }> => {
    const root = path.join(tmp.dir, `case${seq++}`);
    return { root, ...(await build(root, c, 100 + seq)) };
  };

  it('unequal ranks per module: r = lora_alpha = the largest, the others in rank_pattern = alpha_pattern; no modules_to_save', async () => {
    const b = await fresh();
    const out = path.join(b.root, 'out');
    const report = await mergeModelStock({
      base: b.base,
      models: b.models,
      out,
      outFormat: 'peft',
      fsync: false,
    });
    // Every tensor is written as factors: the base's weights are never read, only the adapters' factors.
    const factorBytes = b.models.reduce((sum, dir) => {
      const file = fs.readFileSync(path.join(dir, 'adapter_model.safetensors'));
      return sum + file.byteLength - 8 - Number(file.readBigUInt64LE(0));
    }, 0);
    assert.equal(report.bytesRead, factorBytes);
    assert.equal(report.bytesWritten, fs.statSync(path.join(out, 'adapter_model.safetensors')).size);
    const { config, text } = await readAdapter(out);
    // q_proj and v_proj: 4 + 4 = 8; k_proj, gate_proj, down_proj: one adapter's 4.
    assert.equal(config.r, 8);
    assert.equal(config.lora_alpha, 8);
    const small = { [`${k}`]: 4, [`${gate}`]: 4, [`${down}`]: 4 };
    assert.deepEqual(config.rank_pattern, small);
    assert.deepEqual(config.alpha_pattern, small);
    assert.deepEqual(config.target_modules, [q, k, v, down, gate].sort());
    assert.equal(config.modules_to_save, null);
    assert.equal(config.task_type, null);
    assert.equal(config.base_model_name_or_path, b.base);
    assert.ok(!text.endsWith('\n'));
    const card = fs.readFileSync(path.join(out, 'README.md'), 'utf8');
    assert.match(card, /library_name: peft/);
    assert.match(card, /PeftModel\.from_pretrained/);
  });

  it('LoRA on an embedding (lora_embedding_A/B): merged factors under the embedding keys', async () => {
    const c: Case = { base: llamaLike('BF16'), adapters: [] };
    const b = await fresh(c);
    const rng = mulberry32(77);
    const w0 = b.baseValues.get('model.embed_tokens.weight')!;
    const models: string[] = [];
    const dense: Map<string, Float64Array>[] = [];
    for (const [i, [rank, alpha]] of [
      [2, 4],
      [3, 3],
    ].entries()) {
      const a = Float64Array.from(randomTensor(rank! * 24, rng, 0.3), Math.fround);
      const bb = Float64Array.from(randomTensor(16 * rank!, rng, 0.05), Math.fround);
      const dir = path.join(b.root, `emb${i}`);
      await writePeftAdapter(dir, {
        config: peftConfig({ r: rank, lora_alpha: alpha, target_modules: ['embed_tokens'] }),
        tensors: [
          {
            name: 'base_model.model.model.embed_tokens.lora_embedding_A',
            dtype: 'F32',
            shape: [rank!, 24],
            values: a,
          },
          {
            name: 'base_model.model.model.embed_tokens.lora_embedding_B',
            dtype: 'F32',
            shape: [16, rank!],
            values: bb,
          },
        ],
      });
      models.push(dir);
      const d = denseTaskVector(a, bb, rank!, alpha! / rank!, 24, 16, true);
      dense.push(new Map([['model.embed_tokens.weight', w0.map((x, k) => x + d[k]!)]]));
    }
    const built: Built = { base: b.base, models, baseValues: b.baseValues, dense };
    const out = path.join(b.root, 'out');
    const report = await mergeModelStock({ base: b.base, models, out, outFormat: 'peft', fsync: false });
    const { tensors } = await readAdapter(out);
    assert.deepEqual([...tensors.keys()].sort(), [
      'base_model.model.model.embed_tokens.lora_embedding_A',
      'base_model.model.model.embed_tokens.lora_embedding_B',
    ]);
    await checkAdapterOutput(built, c, out, report);
  });

  it('a full fine-tune among the models: BAD_CONFIG naming it, before anything is written', async () => {
    const c: Case = { base: llamaLike('BF16'), adapters: TWO };
    const b = await fresh(c);
    const full = path.join(b.root, 'full');
    await writeFullFineTune(full, b.baseValues, c.base, mulberry32(3));
    const out = path.join(b.root, 'out');
    const e = await failure(
      mergeModelStock({ base: b.base, models: [b.models[0]!, full], out, outFormat: 'peft', fsync: false }),
    );
    assert.equal(e.code, 'BAD_CONFIG');
    assert.match(e.message, /--out-format peft.*full safetensors checkpoint/);
    assert.ok(e.message.includes(full), e.message);
    assert.deepEqual(
      fs.readdirSync(b.root).filter((n) => n.includes('out')),
      [],
    );
  });

  it('an adapter applied to another model (BASE+ADAPTER): UNSUPPORTED_ADAPTER naming it', async () => {
    const b = await fresh();
    const [a1, a2] = await Promise.all(b.models.map((m) => openCheckpoint(m)));
    const other = await openCheckpoint(b.base);
    const over = { ...a2!, adapter: { ...a2!.adapter!, over: other } };
    assert.throws(
      () => checkAdapterInputs(b.base, [a1!, over], (i) => `model ${i + 1}`),
      (e: Error & { code?: string }) => {
        assert.equal(e.code, 'UNSUPPORTED_ADAPTER');
        assert.match(e.message, /model 2 is an adapter applied to .*base, not to the base/);
        return true;
      },
    );
    assert.deepEqual(checkAdapterInputs('the-base', [a1!, a2!], String), {
      baseModel: 'the-base',
      taskType: undefined,
    });
  });

  it('MODEL+ADAPTER over a full fine-tune is refused end to end; over the base it is the adapter alone', async () => {
    const c: Case = { base: llamaLike('BF16'), adapters: TWO };
    const b = await fresh(c);
    const full = path.join(b.root, 'full');
    await writeFullFineTune(full, b.baseValues, c.base, mulberry32(5));
    const o = { base: b.base, out: path.join(b.root, 'out'), outFormat: 'peft' as const, fsync: false };
    const e = await failure(mergeModelStock({ ...o, models: [`${full}+${b.models[0]}`, b.models[1]!] }));
    assert.equal(e.code, 'UNSUPPORTED_ADAPTER', e.message);
    assert.match(e.message, /is an adapter applied to .*full, not to the base/);
    assert.equal(fs.existsSync(o.out), false);
    const r = await mergeModelStock({ ...o, models: [`${b.base}+${b.models[0]}`, b.models[1]!] });
    assert.equal(r.outFormat, 'peft');
  });

  it('adapters naming different base models: UNSUPPORTED_ADAPTER naming both', async () => {
    const b = await fresh({
      base: llamaLike('BF16'),
      adapters: TWO.map((a, i) => ({
        ...a,
        config: { ...a.config, base_model_name_or_path: `org/base-${i}` },
      })),
    });
    const out = path.join(b.root, 'out');
    const e = await rejectsWith(
      mergeModelStock({ base: b.base, models: b.models, out, outFormat: 'peft', fsync: false }),
      'UNSUPPORTED_ADAPTER',
      path.join(b.models[1]!, 'adapter_config.json'),
      'org/base-0',
      'org/base-1',
    );
    assert.match(e.message, /different base models/);
    assert.equal(fs.existsSync(out), false);
  });

  it('--overwrite replaces an earlier adapter output, never a PEFT adapter folder model-stock did not write', async () => {
    const b = await fresh();
    const out = path.join(b.root, 'out');
    const o = { base: b.base, models: b.models, out, outFormat: 'peft' as const, fsync: false };
    await mergeModelStock(o);
    const exists = await failure(mergeModelStock(o));
    assert.equal(exists.code, 'BAD_OUTPUT_PATH');
    assert.match(exists.message, /already exists/);
    const r = await mergeModelStock({ ...o, overwrite: true, filterWise: true });
    assert.equal(r.filterWise, true);
    // A user's adapter (one of the inputs' twins) at OUT: refused, left as it is.
    const theirs = path.join(b.root, 'theirs');
    fs.cpSync(b.models[0]!, theirs, { recursive: true });
    const before = hashTree(theirs);
    const e = await failure(mergeModelStock({ ...o, out: theirs, overwrite: true }));
    assert.equal(e.code, 'BAD_OUTPUT_PATH');
    assert.match(e.message, /not written by model-stock/);
    assert.deepEqual(hashTree(theirs), before);
  });

  it('the CLI (--out-format peft) and a YAML (out_format: peft) write the same adapter', async () => {
    const b = await fresh();
    const out = path.join(b.root, 'cli');
    const r = runCli([...mergeArgs(b.base, b.models, out), '--out-format', 'peft', '--no-fsync', '-q']);
    assert.equal(r.code, 0, r.stderr);
    const yaml = path.join(b.root, 'merge.yml');
    fs.writeFileSync(
      yaml,
      `merge_method: model_stock\nbase_model: ${b.base}\nmodels:\n${b.models.map((m) => `  - model: ${m}\n`).join('')}out_format: peft\n`,
    );
    const out2 = path.join(b.root, 'yaml');
    const r2 = runCli(['merge', yaml, out2, '--no-fsync', '-q']);
    assert.equal(r2.code, 0, r2.stderr);
    for (const f of ['adapter_config.json', 'adapter_model.safetensors'])
      assert.deepEqual(fs.readFileSync(path.join(out2, f)), fs.readFileSync(path.join(out, f)), f);
    assert.match(fs.readFileSync(path.join(out, 'model_stock_config.yml'), 'utf8'), /^out_format: peft$/m);
    const bad = runCli([...mergeArgs(b.base, b.models, path.join(b.root, 'x')), '--out-format', 'gguf']);
    assert.equal(bad.code, 2);
  });
});
