/**
 * Merges of PyTorch inputs end to end: read in place through every input mode and backend, checked
 * against the float64 reference, and byte for byte the merge of the same weights saved as safetensors.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { FloatDType } from '../../lib/dtype';
import type { IoMode } from '../../lib/engine/io';
import { isModelStockError } from '../../lib/errors';
import { saveAsPytorch, writeTorchFile } from '../../lib/fixtures/torchZip';
import { openCheckpoint } from '../../lib/checkpoint/open';
import { inspectModelStock } from '../../lib/inspect';
import { mergeModelStock } from '../../lib/merge';
import { REPORT_FILE } from '../../lib/output/atomic';
import type { MergeReport } from '../../lib/types';
import { loadNativeAddon } from '../../lib/engine/native/loader';
import { backendsUnderTest } from '../helpers/backends';
import { mergeArgs, runCli } from '../helpers/cli';
import { hashTree, readModel, writeModel, type TensorSpec } from '../helpers/models';
import { fixture, f32 } from '../helpers/pytorch';
import { correlatedModels, mulberry32, randomTensor } from '../helpers/random';
import { assertWithinContract, numel, referenceMerge } from '../helpers/reference';
import { useTmpDir } from '../helpers/tmp';

const SHAPES: { name: string; shape: number[]; cos: number }[] = [
  { name: 'model.embed_tokens.weight', shape: [37, 16], cos: 0.35 },
  { name: 'model.layers.0.self_attn.q_proj.weight', shape: [16, 16], cos: 0.7 },
  { name: 'model.layers.0.mlp.up_proj.weight', shape: [3, 5, 7], cos: 0.1 },
  { name: 'model.layers.0.input_layernorm.weight', shape: [16], cos: 0.5 },
  { name: 'model.scale', shape: [], cos: 0.9 },
];

/** base + 2 fine-tunes as safetensors folders (bf16 base, f32/f16 fine-tunes, an I64 buffer), sharded. */
async function safetensorsModels(root: string): Promise<{ base: string; models: string[] }> {
  const rng = mulberry32(17);
  const dtypes: FloatDType[] = ['BF16', 'F32', 'F16'];
  const per: TensorSpec[][] = [[], [], []];
  for (const s of SHAPES) {
    const w0 = randomTensor(numel(s.shape), rng, 0.5);
    [w0, ...correlatedModels(w0, 2, s.cos, rng)].forEach((v, i) =>
      per[i]!.push({ name: s.name, dtype: dtypes[i]!, shape: s.shape, values: v }),
    );
  }
  per[0]!.push({
    name: 'model.position_ids',
    dtype: 'I64',
    shape: [1, 4],
    values: new Uint8Array(new BigInt64Array([0n, 1n, 2n, 3n]).buffer),
  });
  const config = JSON.stringify({ architectures: ['LlamaForCausalLM'], torch_dtype: 'bfloat16' });
  const dirs = await Promise.all(
    per.map((tensors, i) =>
      writeModel(path.join(root, i === 0 ? 'base' : `ft${i}`), tensors, {
        shardSize: 1200,
        files: { 'config.json': config, ...(i === 0 ? { 'tokenizer.json': '{"version":"1.0"}' } : {}) },
      }),
    ),
  );
  return { base: dirs[0]!, models: dirs.slice(1) };
}

async function checkAgainstReference(base: string, models: string[], out: string): Promise<void> {
  const inB = await readModel(base);
  const inM = await Promise.all(models.map(readModel));
  const merged = await readModel(out);
  assert.deepEqual([...merged.keys()], [...inB.keys()], 'the base tensors, in its order');
  const report = JSON.parse(fs.readFileSync(path.join(out, REPORT_FILE), 'utf8')) as MergeReport;
  for (const [name, b] of inB) {
    const o = merged.get(name)!;
    if (b.values === undefined) {
      assert.deepEqual(o.bytes, b.bytes, `${name} copied`);
      continue;
    }
    const unitLength = numel(b.shape);
    const ms = inM.map((m) => m.get(name)!.values!);
    const ref = referenceMerge(b.values, ms, { unitLength, theta: 'mean-cos' });
    assertWithinContract(o.values!, b.values, ms, ref.t, unitLength, b.dtype as FloatDType, name);
    const entry = report.tensors.find((t) => t.name === name)!;
    assert.ok(Math.abs(entry.t! - ref.t[0]!) < 1e-9, `${name}: t`);
  }
}

function weightFiles(dir: string): Record<string, Buffer> {
  return Object.fromEntries(
    fs
      .readdirSync(dir)
      .filter((f) => /\.safetensors(\.index\.json)?$/.test(f))
      .map((f) => [f, fs.readFileSync(path.join(dir, f))]),
  );
}

describe('merging PyTorch checkpoints', function () {
  this.timeout(120_000);
  const tmp = useTmpDir();
  let st: { base: string; models: string[] };
  let pt: { base: string; models: string[] };

  before(async () => {
    st = await safetensorsModels(path.join(tmp.dir, 'st'));
    const to = (d: string) => path.join(tmp.dir, 'pt', path.basename(d));
    for (const d of [st.base, ...st.models]) await saveAsPytorch(d, to(d));
    pt = { base: to(st.base), models: st.models.map(to) };
  });

  it('the inputs are sharded pytorch_model-*.bin folders with an index', () => {
    const names = fs.readdirSync(pt.base).sort();
    assert.ok(names.includes('pytorch_model.bin.index.json'), names.join(', '));
    assert.ok(
      names.filter((n) => /^pytorch_model-\d{5}-of-\d{5}\.bin$/.test(n)).length > 1,
      names.join(', '),
    );
    assert.ok(!names.some((n) => n.endsWith('.safetensors')));
  });

  const ioModes: IoMode[] =
    loadNativeAddon().addon === undefined ? ['fs'] : ['mmap', 'direct', 'pread', 'fs'];
  for (const backend of backendsUnderTest()) {
    for (const io of ioModes) {
      it(`${backend}, --io ${io}: within the contract of the float64 reference, byte for byte the safetensors merge`, async () => {
        const outPt = path.join(tmp.dir, `out-pt-${backend}-${io}`);
        const outSt = path.join(tmp.dir, `out-st-${backend}-${io}`);
        const before = hashTree(path.join(tmp.dir, 'pt'));
        const report = await mergeModelStock({ base: pt.base, models: pt.models, out: outPt, backend, io });
        await mergeModelStock({ base: st.base, models: st.models, out: outSt, backend, io });
        assert.deepEqual(hashTree(path.join(tmp.dir, 'pt')), before, 'inputs untouched');
        await checkAgainstReference(pt.base, pt.models, outPt);
        assert.deepEqual(weightFiles(outPt), weightFiles(outSt));
        assert.deepEqual(
          report.inputs?.map((i) => [i.format, i.io]),
          [0, 1, 2].map(() => ['pytorch', io]),
        );
        assert.ok(
          fs.existsSync(path.join(outPt, 'tokenizer.json')),
          "the base folder's side files are copied",
        );
        assert.ok(!fs.readdirSync(outPt).some((f) => f.endsWith('.bin')));
        const card = fs.readFileSync(path.join(outPt, 'README.md'), 'utf8');
        assert.ok(card.includes(`- base: \`${pt.base}\` (PyTorch checkpoint)`), card);
      });
    }
  }

  it('--io direct: archive tensors (storages at offsets no 4 KiB block starts at) byte for byte as mmap reads them', async function () {
    if (loadNativeAddon().addon === undefined) return this.skip();
    const checkpoints = await Promise.all([pt.base, ...pt.models].map((d) => openCheckpoint(d)));
    const offsets = checkpoints.flatMap((c) => [...c.tensors.values()].map((t) => t.offset));
    assert.ok(
      offsets.some((o) => o % 4096 !== 0),
      'some tensor starts inside a block',
    );
    const outs = new Map<IoMode, Record<string, Buffer>>();
    for (const io of ['mmap', 'direct'] as const) {
      const out = path.join(tmp.dir, `out-pt-aligned-${io}`);
      const report = await mergeModelStock({ base: pt.base, models: pt.models, out, io });
      assert.deepEqual(
        report.inputs?.map((i) => [i.format, i.io, i.fallback]),
        [0, 1, 2].map(() => ['pytorch', io, undefined]),
      );
      outs.set(io, weightFiles(out));
    }
    assert.deepEqual(outs.get('direct'), outs.get('mmap'));
  });

  it('a .bin base with .pt fine-tunes, and single .safetensors files beside them: layouts may differ', async () => {
    const mixed = path.join(tmp.dir, 'mixed');
    fs.mkdirSync(mixed);
    const single = async (from: string, file: string): Promise<string> => {
      const m = await readModel(from);
      const names = [...m.keys()];
      await writeTorchFile(
        file,
        names.map((n) => ({ name: n, dtype: m.get(n)!.dtype, shape: m.get(n)!.shape })),
        (i) => m.get(names[i]!)!.bytes,
      );
      return file;
    };
    const base = await single(st.base, path.join(mixed, 'base.bin'));
    const ft1 = await single(st.models[0]!, path.join(mixed, 'ft1.pt'));
    fs.writeFileSync(path.join(mixed, 'config.json'), '{}');
    const out = path.join(tmp.dir, 'out-mixed');
    await mergeModelStock({ base, models: [ft1, st.models[1]!], out });
    const same = path.join(tmp.dir, 'out-mixed-st');
    await mergeModelStock({ base: st.base, models: st.models, out: same });
    assert.deepEqual(weightFiles(out), weightFiles(same));
    // A single-file base: nothing beside it is copied.
    assert.deepEqual(
      fs
        .readdirSync(out)
        .filter((f) => !f.startsWith('model'))
        .sort(),
      ['README.md'],
    );
  });

  it('a base whose tied head shares the embedding storage: both names in the output, each with its bytes', async () => {
    const base = fixture('sharded-bf16');
    const b = await readModel(base);
    const fts: string[] = [];
    for (const seed of [1, 2]) {
      const names = [...b.keys()];
      const file = path.join(tmp.dir, `tied-ft${seed}.bin`);
      await writeTorchFile(
        file,
        names.map((n) => ({ name: n, dtype: b.get(n)!.dtype, shape: b.get(n)!.shape })),
        (i) => {
          const t = b.get(names[i]!)!;
          if (t.values === undefined) return t.bytes;
          // Nudge each bf16 value's low mantissa bits by its position: equal inputs (a tied head and its
          // embedding) stay equal.
          const out = Uint8Array.from(t.bytes);
          for (let k = 0; k < out.length; k += 2) out[k] = (out[k]! + ((k * seed) % 7)) & 0xff;
          return out;
        },
      );
      fts.push(file);
    }
    const out = path.join(tmp.dir, 'out-tied');
    const report = await mergeModelStock({ base, models: fts, out });
    const merged = await readModel(out);
    assert.deepEqual([...merged.keys()], [...b.keys()]);
    assert.equal(report.tensors.find((t) => t.name === 'lm_head.weight')?.action, 'merge');
    // The tied fine-tunes' heads equal their embeddings, so the merged head equals the merged embedding.
    assert.deepEqual(merged.get('lm_head.weight')!.bytes, merged.get('model.embed_tokens.weight')!.bytes);
    assert.deepEqual(merged.get('model.position_ids')!.bytes, b.get('model.position_ids')!.bytes);
    await checkAgainstReference(base, fts, out);
    // The same weights as safetensors, in the state dict's order, each tied name with its own bytes.
    const asSafetensors = path.join(tmp.dir, 'tied-base-st');
    await writeModel(
      asSafetensors,
      [...b].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, values: t.bytes })),
      { files: { 'config.json': fs.readFileSync(path.join(base, 'config.json'), 'utf8') } },
    );
    const outSt = path.join(tmp.dir, 'out-tied-st');
    await mergeModelStock({ base: asSafetensors, models: fts, out: outSt });
    assert.deepEqual(weightFiles(out), weightFiles(outSt));
  });

  it('a Lightning .ckpt whose names carry model.: NO_COMMON_TENSORS naming it, one name of each side', async () => {
    const base = path.join(tmp.dir, 'visual');
    await writeModel(base, [
      { name: 'visual.conv1.weight', dtype: 'F32', shape: [4, 3, 2, 2], values: new Float64Array(48) },
      { name: 'visual.proj', dtype: 'F32', shape: [4, 3], values: new Float64Array(12) },
    ]);
    const ckpt = fixture('lightning.ckpt');
    const e = await mergeModelStock({ base, models: [ckpt, ckpt], out: path.join(tmp.dir, 'never') }).catch(
      (x: unknown) => x,
    );
    assert.ok(isModelStockError(e) && e.code === 'NO_COMMON_TENSORS', String(e));
    assert.equal(e.file, ckpt);
    assert.match(
      e.message,
      /"model\.visual\.conv1\.weight" where the base has e\.g\. "visual\.conv1\.weight"/,
    );
    assert.ok(!fs.existsSync(path.join(tmp.dir, 'never')));
  });

  it("a nested .pt (module. stripped) merges; its warnings and a hostile pickle's reach onWarning and the report", async () => {
    const base = fixture('torch2.bin');
    const warnings: string[] = [];
    const report = await mergeModelStock({
      base,
      models: [fixture('nested.pt'), fixture('exploit.pt')],
      out: path.join(tmp.dir, 'out-nested'),
      onWarning: (w) => warnings.push(w),
    });
    assert.equal(report.tensors.filter((t) => t.action === 'merge').length, 3);
    for (const w of [/NOT run/, /module\./, /argparse\.Namespace/, /left out 9 other entries/]) {
      assert.ok(
        warnings.some((x) => w.test(x)),
        `${w} said`,
      );
      assert.ok(
        report.warnings.some((x) => w.test(x)),
        `${w} in the report`,
      );
    }
  });

  it('stateDictKey applies to every PyTorch input: a base without it is BAD_CONFIG naming the file', async () => {
    const e = await mergeModelStock({
      base: fixture('torch2.bin'),
      models: [fixture('nested.pt'), fixture('nested.pt')],
      out: path.join(tmp.dir, 'never-ema'),
      stateDictKey: 'state_dict_ema',
    }).catch((x: unknown) => x);
    assert.ok(isModelStockError(e) && e.code === 'BAD_CONFIG', String(e));
    assert.equal(e.file, fixture('torch2.bin'));
  });

  it('an archive changed during the work is an IO_ERROR at the end (the identity check covers archives)', async () => {
    const model = path.join(tmp.dir, 'changing');
    fs.mkdirSync(model);
    await saveAsPytorch(st.models[0]!, model);
    let touched = false;
    const e = await inspectModelStock({
      base: pt.base,
      models: [model, pt.models[1]!],
      onProgress: () => {
        if (touched) return;
        touched = true;
        fs.appendFileSync(
          path.join(
            model,
            fs.readdirSync(model).find((f) => f.endsWith('.bin'))!,
          ),
          'x',
        );
      },
    }).catch((x: unknown) => x);
    assert.ok(isModelStockError(e) && e.code === 'IO_ERROR' && /changed during/.test(e.message), String(e));
  });

  it('zip64: a base whose storages lie past 4 GiB is merged through every input mode', async function () {
    const big = path.join(tmp.dir, 'big.bin');
    const w0 = f32(0.5, -1, 2, 0.25);
    try {
      await writeTorchFile(big, [{ name: 'w', dtype: 'F32', shape: [4] }], () => w0, {
        padding: 2 ** 32 + 64,
      });
    } catch (e) {
      if (['EFBIG', 'ENOSPC'].includes((e as NodeJS.ErrnoException).code ?? '')) return this.skip();
      throw e;
    }
    const fts = [f32(1, -1, 2, 0), f32(0.5, 0, 3, 0.25)].map((v, i) => {
      const file = path.join(tmp.dir, `small${i}.pt`);
      return { file, v };
    });
    for (const f of fts) await writeTorchFile(f.file, [{ name: 'w', dtype: 'F32', shape: [4] }], () => f.v);
    try {
      const outs: Buffer[] = [];
      for (const io of ioModes) {
        const out = path.join(tmp.dir, `out-big-${io}`);
        await mergeModelStock({ base: big, models: fts.map((f) => f.file), out, io });
        outs.push(fs.readFileSync(path.join(out, 'model.safetensors')));
      }
      for (const o of outs) assert.deepEqual(o, outs[0]);
      const m = await readModel(path.join(tmp.dir, `out-big-${ioModes[0]}`));
      assert.equal(m.get('w')!.values!.length, 4);
    } finally {
      fs.rmSync(big, { force: true });
    }
  });

  describe('command line', () => {
    it('merge --state-dict-key: recorded as state_dict_key in model_stock_config.yml, which merges the same again', () => {
      const base = path.join(tmp.dir, 'ema-base');
      fs.mkdirSync(base);
      const out = path.join(tmp.dir, 'out-ema');
      // Copies of nested.pt: the state_dict_ema entry of each is read (the config keeps models apart by path).
      fs.copyFileSync(fixture('nested.pt'), path.join(base, 'model.pt'));
      const [ft1, ft2] = ['ft1.pt', 'ft2.pt'].map((f) => path.join(base, f));
      fs.copyFileSync(fixture('nested.pt'), ft1!);
      fs.copyFileSync(fixture('nested.pt'), ft2!);
      const r = runCli([
        ...mergeArgs(path.join(base, 'model.pt'), [ft1!, ft2!], out),
        '--state-dict-key',
        'state_dict_ema',
      ]);
      assert.equal(r.code, 0, r.stderr);
      const yml = fs.readFileSync(path.join(out, 'model_stock_config.yml'), 'utf8');
      assert.match(yml, /^state_dict_key: state_dict_ema$/m);
      const again = runCli([
        'merge',
        path.join(out, 'model_stock_config.yml'),
        path.join(tmp.dir, 'out-ema-again'),
      ]);
      assert.equal(again.code, 0, again.stderr);
      assert.deepEqual(weightFiles(path.join(tmp.dir, 'out-ema-again')), weightFiles(out));
    });

    it('inspect reads PyTorch inputs', () => {
      const r = runCli([
        'inspect',
        '--base',
        pt.base,
        '--model',
        pt.models[0]!,
        '--model',
        pt.models[1]!,
        '--json',
      ]);
      assert.equal(r.code, 0, r.stderr);
      const report = JSON.parse(r.stdout) as MergeReport;
      assert.deepEqual(
        report.inputs?.map((i) => i.format),
        ['pytorch', 'pytorch', 'pytorch'],
      );
      assert.equal(report.tensors.filter((t) => t.action === 'merge').length, SHAPES.length);
    });

    it('a refused file: exit 1, the file and the code on the first line of stderr', () => {
      const r = runCli(
        mergeArgs(
          fixture('legacy.pt'),
          [fixture('nested.pt'), fixture('nested.pt')],
          path.join(tmp.dir, 'x'),
        ),
      );
      assert.equal(r.code, 1);
      assert.match(r.stderr.split('\n')[0]!, /legacy\.pt.*legacy format/);
    });
  });
});
