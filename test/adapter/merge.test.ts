/**
 * LoRA adapters as fine-tunes, end to end (issue 18): adapters in PEFT's on-disk format merged with
 * each other and with full fine-tunes, every output element checked against the float64 reference on
 * the dense weights (docs/merge-contract.md's accuracy contract), every reported cosine against the
 * dense Gram's, on every backend.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { FloatDType } from '../../lib/dtype';
import type { ErrorCode } from '../../lib/errors';
import { inspectModelStock } from '../../lib/inspect';
import { decodeFloats, encodeFloats } from '../../lib/math/codec';
import { pairCosines } from '../../lib/math/ratio';
import { mergeModelStock } from '../../lib/merge';
import type { InspectReport, MergeReport, TensorReport } from '../../lib/types';
import { backendsUnderTest } from '../helpers/backends';
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
  writeBase,
  type AdapterSpec,
  type BaseTensor,
  type BuiltInputs,
  type FineTune,
} from '../helpers/adapters';
import { readModel } from '../helpers/models';
import { rejectsWith } from '../helpers/pytorch';
import { mulberry32 } from '../helpers/random';
import { assertWithinContract, numel, referenceGram, referenceMerge } from '../helpers/reference';
import { useTmpDir } from '../helpers/tmp';

interface Case {
  readonly base: BaseTensor[];
  readonly fineTunes: readonly FineTune[];
  readonly filterWise?: boolean;
  readonly memory?: number;
  readonly io?: 'fs' | 'mmap' | 'pread';
  readonly outDtype?: FloatDType;
}

type Built = BuiltInputs;

const build = (root: string, c: Case, seed: number): Promise<Built> =>
  buildInputs(root, c.base, c.fineTunes, seed);

/** The dense weights of fine-tune i for `name`: its own, the base's (an adapter that leaves it), or none. */
function weightsOf(b: Built, i: number, name: string): Float64Array | undefined {
  return b.dense[i]!.get(name) ?? (b.kinds[i] === 'adapter' ? b.baseValues.get(name) : undefined);
}

/** Every tensor of the output against the float64 reference; the report's cosines against the dense Gram's. */
async function checkMerge(b: Built, c: Case, out: string, report: MergeReport): Promise<void> {
  const merged = await readModel(out);
  assert.deepEqual(
    [...merged.keys()],
    c.base.map((t) => t.name),
  );
  for (const t of c.base) {
    const entry = report.tensors.find((e) => e.name === t.name)!;
    const w0 = b.baseValues.get(t.name)!;
    const o = merged.get(t.name)!;
    const have = b.dense.map((_, i) => i).filter((i) => weightsOf(b, i, t.name) !== undefined);
    const changed = have.some((i) => b.dense[i]!.has(t.name));
    if (have.length < 2 || !changed) {
      assert.equal(entry.action, 'copy', `${t.name}: ${JSON.stringify(entry)}`);
      const outDtype = c.outDtype ?? t.dtype;
      assert.deepEqual(
        o.values,
        decodeFloats(encodeFloats(w0, outDtype), outDtype),
        `${t.name} is the base's`,
      );
      continue;
    }
    assert.equal(entry.action, 'merge', t.name);
    assert.deepEqual(entry.models, have, t.name);
    const untouched = have.filter((i) => b.kinds[i] === 'adapter' && !b.dense[i]!.has(t.name));
    assert.deepEqual(entry.untouched ?? [], untouched, `${t.name}: untouched`);
    const ws = have.map((i) => weightsOf(b, i, t.name)!);
    const unitLength =
      c.filterWise === true && t.shape.length >= 2 ? numel(t.shape) / t.shape[0]! : numel(t.shape);
    const ref = referenceMerge(w0, ws, { unitLength, theta: 'mean-cos' });
    assertWithinContract(o.values!, w0, ws, ref.t, unitLength, c.outDtype ?? t.dtype, t.name);
    checkCosines(entry, referenceGram(w0, ws, unitLength), ws.length, ref.t.length);
  }
}

/** The report's cosines (and t) within 1e-9 of the dense float64 Gram's. */
function checkCosines(entry: TensorReport, gram: Float64Array, n: number, units: number): void {
  const p = (n * (n + 1)) / 2;
  const per = Array.from({ length: units }, (_, u) => pairCosines(gram, u * p, n));
  if (units === 1) {
    (entry.cosines as number[]).forEach((c, k) =>
      assert.ok(Math.abs(c - per[0]![k]!) <= 1e-9, `${entry.name}: cosine ${k} ${c} vs ${per[0]![k]}`),
    );
    return;
  }
  (entry.cosines as unknown as { min: number; max: number }[]).forEach((s, k) => {
    const col = per.map((cs) => cs[k]!);
    assert.ok(Math.abs(s.min - Math.min(...col)) <= 1e-9, `${entry.name}: min cosine ${k}`);
    assert.ok(Math.abs(s.max - Math.max(...col)) <= 1e-9, `${entry.name}: max cosine ${k}`);
  });
}

const { q, k, gate } = llamaModules;

/** Two adapters of the LLaMA-like base, partly overlapping targets (f32 factors, s = 2 and 4). */
const TWO = asFineTunes(TWO_ADAPTERS);

const CASES: [string, Case][] = [
  [
    'N = 2 adapters, f32 factors over a bf16 base, layer-wise, partial targets',
    { base: llamaLike('BF16'), fineTunes: TWO },
  ],
  [
    'N = 3 filter-wise: rsLoRA, rank_pattern + alpha_pattern, bf16 factors without base_model.model., adapter_model.bin',
    { base: llamaLike('BF16'), filterWise: true, fineTunes: asFineTunes(THREE_ADAPTERS) },
  ],
  [
    'an adapter mixed with a full fine-tune, modules_to_save beside LoRA on the same head, lora_B.bias',
    {
      base: llamaLike('F32'),
      outDtype: 'BF16',
      fineTunes: [...asFineTunes(SAVED_AND_BIAS_ADAPTERS), { kind: 'full', skip: ['model.norm.weight'] }],
    },
  ],
  [
    'GPT-2 Conv1D layout (fan_in_fan_out, modules under transformer.), filter-wise, f16',
    { base: gpt2Like('F16'), filterWise: true, fineTunes: asFineTunes(GPT2_ADAPTERS) },
  ],
  [
    'windows of a few rows (memory 4 KiB), pread and fs reads',
    { base: llamaLike('BF16'), fineTunes: [...TWO, { kind: 'full' }], memory: 4096, io: 'fs' },
  ],
];

for (const backend of backendsUnderTest()) {
  describe(`LoRA adapters merged (${backend} backend)`, () => {
    const tmp = useTmpDir();
    let seq = 0;

    for (const [label, c] of CASES) {
      it(label, async () => {
        const root = path.join(tmp.dir, `case${seq++}`);
        const b = await build(root, c, seq);
        const out = path.join(root, 'out');
        const warnings: string[] = [];
        const report = await mergeModelStock({
          base: b.base,
          models: b.models,
          out,
          backend,
          filterWise: c.filterWise ?? false,
          outDtype: c.outDtype,
          memory: c.memory,
          io: c.io,
          fsync: false,
          onWarning: (w) => warnings.push(w),
        });
        await checkMerge(b, c, out, report);
        assert.deepEqual(
          report.inputs?.map((x) => x.format),
          ['safetensors', ...c.fineTunes.map((f) => (f.kind === 'adapter' ? 'lora' : 'safetensors'))],
        );
        assert.equal(fs.existsSync(path.join(out, 'adapter_config.json')), false);
      });
    }

    it('untouched tensors: reported per tensor, one warning per adapter; tensors no adapter changes are the base’s', async () => {
      const root = path.join(tmp.dir, `case${seq++}`);
      const b = await build(root, { base: llamaLike('BF16'), fineTunes: TWO }, 7);
      const report = await mergeModelStock({
        base: b.base,
        models: b.models,
        out: path.join(root, 'out'),
        backend,
        fsync: false,
      });
      const entry = (name: string) => report.tensors.find((t) => t.name === name)!;
      assert.deepEqual(entry(`${k}.weight`).untouched, [0]);
      assert.equal(entry(`${k}.weight`).t, 0, 'N = 2 with one zero task vector: cosine 0, t = 0');
      assert.deepEqual(entry(`${gate}.weight`).untouched, [1]);
      assert.equal(entry(`${q}.weight`).untouched, undefined);
      assert.equal(entry('model.embed_tokens.weight').action, 'copy');
      assert.match(entry('model.embed_tokens.weight').reason!, /every adapter leaves it/);
      const said = report.warnings.filter((w) => /leaves \d+ tensor\(s\) as the base has them/.test(w));
      assert.equal(said.length, 2, said.join('\n'));
      assert.match(said.join('\n'), /model 1 .* leaves 2 tensor\(s\).*k_proj.*down_proj/);
      assert.match(said.join('\n'), /model 2 .* leaves 1 tensor\(s\).*gate_proj/);
    });

    it('a tensor that fits the budget is a few tasks whatever the reads (mapped inputs are not a ring of 0 bytes)', async () => {
      // A TinyLlama-sized merge of adapters with mapped inputs once ran one row per task (400k tasks),
      // sized by an input ring that held only the factors' alignment: it ran out of heap.
      const root = path.join(tmp.dir, `case${seq++}`);
      const c: Case = { base: llamaLike('BF16'), fineTunes: TWO };
      const b = await build(root, c, 13);
      for (const io of ['mmap', 'pread', 'fs', 'direct'] as const) {
        const tasks = new Map<string, number>();
        await mergeModelStock({
          base: b.base,
          models: b.models,
          out: path.join(root, `out-${io}`),
          backend,
          io,
          fsync: false,
          onProgress: (p) => {
            if (p.tensor !== undefined) tasks.set(p.tensor, (tasks.get(p.tensor) ?? 0) + 1);
          },
        });
        for (const t of c.base) {
          const rows = t.shape[0]!;
          // The factors' task, one window of rows (two when the base's tail is copied), nothing per row.
          assert.ok(
            (tasks.get(t.name) ?? 0) <= 3,
            `${io}: ${t.name} (${rows} rows) ran ${tasks.get(t.name)} tasks`,
          );
        }
      }
    });

    it('inspect of adapters alone reads no base weight (bytesRead = the factors), with the numbers a merge reports', async () => {
      const root = path.join(tmp.dir, `case${seq++}`);
      const b = await build(root, { base: llamaLike('BF16'), fineTunes: TWO }, 11);
      const inspected: InspectReport = await inspectModelStock({ base: b.base, models: b.models, backend });
      const factorBytes = b.models.reduce((sum, dir) => {
        const file = fs.readFileSync(path.join(dir, 'adapter_model.safetensors'));
        return sum + file.byteLength - 8 - Number(file.readBigUInt64LE(0));
      }, 0);
      assert.equal(inspected.bytesRead, factorBytes);
      const merged = await mergeModelStock({
        base: b.base,
        models: b.models,
        out: path.join(root, 'out'),
        backend,
        fsync: false,
      });
      for (const t of inspected.tensors) {
        const m = merged.tensors.find((x) => x.name === t.name)!;
        assert.deepEqual([t.action, t.cosines, t.t], [m.action, m.cosines, m.t], t.name);
      }
    });
  });
}

describe('LoRA adapters: refusals and errors', () => {
  const tmp = useTmpDir();
  let seq = 0;
  const fail = async (
    c: Case,
    code: ErrorCode,
    fileOf: (b: Built) => string,
    ...mention: (string | RegExp)[]
  ) => {
    const root = path.join(tmp.dir, `case${seq++}`);
    const b = await build(root, c, seq);
    return rejectsWith(
      mergeModelStock({ base: b.base, models: b.models, out: path.join(root, 'out'), fsync: false }),
      code,
      fileOf(b),
      ...mention,
    );
  };
  const adapterOf = (modules: AdapterSpec['modules'], config = {}): FineTune => ({
    kind: 'adapter',
    spec: { config: { r: 2, lora_alpha: 2, ...config }, modules },
  });

  it('an adapter whose factors do not fit the base tensor: SHAPE_MISMATCH naming the module', async () => {
    // Written for a [16, 16] q_proj, merged over a base whose q_proj is [8, 16].
    const root = path.join(tmp.dir, `case${seq++}`);
    const b = await build(root, { base: llamaLike(), fineTunes: TWO }, 3);
    const small = path.join(root, 'small');
    await writeBase(
      small,
      llamaLike().map((t) => (t.name === `${q}.weight` ? { ...t, shape: [8, 16] } : t)),
      mulberry32(1),
    );
    await rejectsWith(
      mergeModelStock({ base: small, models: b.models, out: path.join(root, 'out') }),
      'SHAPE_MISMATCH',
      path.join(b.models[0]!, 'adapter_model.safetensors'),
      `module ${q}`,
      '[8, 16]',
    );
  });

  it('an adapter none of whose modules the base has: NO_COMMON_TENSORS naming it', async () => {
    await fail(
      {
        base: llamaLike(),
        fineTunes: [
          adapterOf([{ module: 'encoder.block.0.q', tensor: `${q}.weight`, rank: 2, scale: 1 }]),
          TWO[0]!,
        ],
      },
      'NO_COMMON_TENSORS',
      (b) => b.models[0]!,
      'LoRA adapter none of whose modules is in the base',
      'encoder.block.0.q.weight',
    );
  });

  it('adapter weights named without their folder: NO_COMMON_TENSORS saying they are LoRA factors', async () => {
    const root = path.join(tmp.dir, `case${seq++}`);
    const b = await build(root, { base: llamaLike(), fineTunes: TWO }, 5);
    const lone = path.join(root, 'lone');
    fs.mkdirSync(lone);
    fs.copyFileSync(
      path.join(b.models[0]!, 'adapter_model.safetensors'),
      path.join(lone, 'weights.safetensors'),
    );
    await rejectsWith(
      mergeModelStock({ base: b.base, models: [lone, b.models[1]!], out: path.join(root, 'out') }),
      'NO_COMMON_TENSORS',
      lone,
      'its tensors are LoRA factors',
    );
  });

  it('NaN in a factor names the adapter and the factor; NaN in the base of an adapted tensor names the base', async () => {
    const root = path.join(tmp.dir, `case${seq++}`);
    const b = await build(root, { base: llamaLike('F32'), fineTunes: TWO }, 9);
    const st = path.join(b.models[1]!, 'adapter_model.safetensors');
    const poison = async (file: string, tensor: string) => {
      const { readSafetensorsFile } = await import('../../lib/safetensors/file');
      const t = (await readSafetensorsFile(file)).tensors.find((x) => x.name === tensor)!;
      const fd = fs.openSync(file, 'r+');
      fs.writeSync(fd, new Uint8Array(new Float32Array([NaN]).buffer), 0, 4, t.offset + 4 * 3);
      fs.closeSync(fd);
    };
    await poison(st, `base_model.model.${k}.lora_B.weight`);
    for (const backend of backendsUnderTest()) {
      await rejectsWith(
        mergeModelStock({ base: b.base, models: b.models, out: path.join(root, `out-${backend}`), backend }),
        'NON_FINITE',
        st,
        'model 2',
        'lora_B',
      );
    }
    const base2 = path.join(root, 'base2');
    fs.cpSync(b.base, base2, { recursive: true });
    await poison(path.join(base2, 'model.safetensors'), `${q}.weight`);
    const clean = path.join(root, 'clean');
    fs.cpSync(b.models[0]!, clean, { recursive: true });
    for (const backend of backendsUnderTest()) {
      await rejectsWith(
        mergeModelStock({
          base: base2,
          models: [b.models[0]!, clean],
          out: path.join(root, `o2-${backend}`),
          backend,
        }),
        'NON_FINITE',
        path.join(base2, 'model.safetensors'),
        'in the base',
      );
    }
  });
});

export type { Built };
export { weightsOf };
