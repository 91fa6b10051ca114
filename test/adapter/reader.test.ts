/**
 * The LoRA adapter reader (lib/adapter): fixtures written in PEFT's exact on-disk format
 * (lib/fixtures/lora.ts, from PEFT's source — /work/notes/peft-format.md), the config fields that
 * decide the task vectors, and every refusal.
 */
import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { moduleScaling, parseAdapterConfig } from '../../lib/adapter/config';
import { chooseWeights } from '../../lib/checkpoint/folder';
import { openCheckpoint } from '../../lib/checkpoint/open';
import type { ErrorCode } from '../../lib/errors';
import {
  loraKey,
  peftConfig,
  peftSafetensorsHeader,
  pythonJson,
  writePeftAdapter,
  type AdapterTensor,
} from '../../lib/fixtures/lora';
import { readSafetensorsFile } from '../../lib/safetensors/file';
import { rejectsWith } from '../helpers/pytorch';
import { useTmpDir } from '../helpers/tmp';

const sha256 = (s: string | Uint8Array): string => crypto.createHash('sha256').update(s).digest('hex');

/** TinyLlama's q_proj and v_proj, r = 8 (peft-format.md §7). */
function tinyLlamaQV(dtype: 'F32' | 'BF16'): AdapterTensor[] {
  const t: AdapterTensor[] = [];
  for (let i = 0; i < 22; i++) {
    for (const [proj, out] of [
      ['q_proj', 2048],
      ['v_proj', 256],
    ] as const) {
      const m = `model.layers.${i}.self_attn.${proj}`;
      t.push({ name: loraKey(m, 'A'), dtype, shape: [8, 2048], values: new Float32Array(8 * 2048) });
      t.push({ name: loraKey(m, 'B'), dtype, shape: [out, 8], values: new Float32Array(out * 8) });
    }
  }
  return t;
}

const TINYLLAMA_FIELDS = {
  base_model_name_or_path: 'TinyLlama/TinyLlama-1.1B-Chat-v1.0',
  r: 8,
  lora_alpha: 16,
  target_modules: ['q_proj', 'v_proj'],
  task_type: 'CAUSAL_LM',
};

/** A small adapter: two Linear modules of a [6, 5] and a [3, 5] weight. */
function small(
  o: { r?: number; prefixed?: boolean; extra?: AdapterTensor[]; rankOf?: Record<string, number> } = {},
): AdapterTensor[] {
  const out: AdapterTensor[] = [];
  for (const [m, rows] of [
    ['model.layers.0.self_attn.q_proj', 6],
    ['model.layers.0.self_attn.v_proj', 3],
  ] as const) {
    const r = o.rankOf?.[m] ?? o.r ?? 2;
    out.push({
      name: loraKey(m, 'A', o.prefixed ?? true),
      dtype: 'F32',
      shape: [r, 5],
      values: new Float32Array(r * 5).fill(0.5),
    });
    out.push({
      name: loraKey(m, 'B', o.prefixed ?? true),
      dtype: 'F32',
      shape: [rows, r],
      values: new Float32Array(rows * r).fill(0.25),
    });
  }
  return [...out, ...(o.extra ?? [])];
}

describe('LoRA adapters: the reader', () => {
  const tmp = useTmpDir();
  let n = 0;
  const adapter = async (
    fields: Record<string, unknown>,
    tensors: AdapterTensor[] = small(),
    weights: 'safetensors' | 'bin' | 'both' = 'safetensors',
  ): Promise<string> =>
    writePeftAdapter(path.join(tmp.dir, `a${n++}`), {
      config: peftConfig({ r: 2, lora_alpha: 4, ...fields }),
      tensors,
      weights,
    });
  const refused = async (dir: string, code: ErrorCode, file: string, ...mention: (string | RegExp)[]) =>
    rejectsWith(openCheckpoint(dir), code, file, ...mention);

  describe('fixtures in PEFT’s bytes', () => {
    it('adapter_config.json as PEFT 0.13.0 and 0.20.0 write it (sha256 of peft-format.md §7.2, §7.3)', () => {
      const v13 = pythonJson(peftConfig(TINYLLAMA_FIELDS, '0.13.0'));
      assert.equal(v13.length, 658);
      assert.equal(sha256(v13), '100fb6e54ab471dfb1600f4015b869c4d687eaf4fe2cc4ca2626b46d48ad9f2a');
      assert.ok(!v13.endsWith('\n') && v13.includes('"lora_dropout": 0.0'));
      const v20 = pythonJson(peftConfig(TINYLLAMA_FIELDS, '0.20.0'));
      assert.equal(v20.length, 1088);
      assert.equal(sha256(v20), '1dea8ad76fdbf724050999aa15b6a7c242e9429816c2f2283694e4c30cfcab88');
    });

    it('adapter_model.safetensors in the safetensors crate’s layout (§7.1: header and file sizes, key order)', async () => {
      for (const [dtype, header, file] of [
        ['F32', 11544, 4517152],
        ['BF16', 11592, 2264400],
      ] as const) {
        const bytes = peftSafetensorsHeader(tinyLlamaQV(dtype));
        assert.equal(Number(Buffer.from(bytes).readBigUInt64LE(0)), header);
        const dir = await writePeftAdapter(path.join(tmp.dir, `tl-${dtype}`), {
          config: peftConfig(TINYLLAMA_FIELDS),
          tensors: tinyLlamaQV(dtype),
        });
        const st = path.join(dir, 'adapter_model.safetensors');
        assert.equal(fs.statSync(st).size, file);
        const text = Buffer.from(bytes.subarray(8)).toString();
        assert.ok(
          text.startsWith(
            `{"__metadata__":{"format":"pt"},"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":{"dtype":"${dtype}","shape":[8,2048],"data_offsets":[0,`,
          ),
        );
        // Names sort bytewise: layers.1., then 10–19, then 2, 20, 21, 3, …; the last key is layer 9's v_proj B.
        const parsed = await readSafetensorsFile(st);
        assert.deepEqual(parsed.metadata, { format: 'pt' });
        const byOffset = [...parsed.tensors].sort((a, b) => a.offset - b.offset).map((t) => t.name);
        assert.equal(byOffset.at(-1), 'base_model.model.model.layers.9.self_attn.v_proj.lora_B.weight');
        assert.equal(byOffset[4], 'base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight');
        assert.equal(byOffset[8], 'base_model.model.model.layers.10.self_attn.q_proj.lora_A.weight');
        const cp = await openCheckpoint(dir);
        assert.equal(cp.format, 'lora');
        assert.equal(cp.adapter?.modules.length, 44);
        for (const m of cp.adapter!.modules) {
          assert.equal(m.rank, 8);
          assert.equal(m.scale, 2);
        }
      }
    });
  });

  describe('which files', () => {
    it('a folder with adapter_config.json is an adapter, whatever else it holds', async () => {
      const choose = (...names: string[]) => {
        const c = chooseWeights(new Set(names));
        return c.kind === 'none' ? [c.kind, c.code] : [c.kind, c.format.name, c.file, c.also, c.shadowed];
      };
      assert.deepEqual(choose('adapter_config.json', 'adapter_model.safetensors', 'README.md'), [
        'single',
        'lora',
        'adapter_config.json',
        ['adapter_model.safetensors'],
        [],
      ]);
      assert.deepEqual(choose('adapter_config.json', 'adapter_model.safetensors', 'adapter_model.bin'), [
        'single',
        'lora',
        'adapter_config.json',
        ['adapter_model.safetensors'],
        [],
      ]);
      assert.deepEqual(choose('adapter_config.json', 'adapter_model.bin'), [
        'single',
        'lora',
        'adapter_config.json',
        ['adapter_model.bin'],
        [],
      ]);
      assert.deepEqual(choose('adapter_config.json', 'adapter_model.safetensors', 'model.safetensors'), [
        'single',
        'lora',
        'adapter_config.json',
        ['adapter_model.safetensors'],
        ['model.safetensors'],
      ]);
      assert.deepEqual(choose('adapter_config.json', 'model.safetensors'), ['none', 'NO_CHECKPOINT']);
      // Without its config, a lone adapter_model.safetensors is still a lone safetensors file (the plan then refuses it).
      assert.deepEqual(choose('adapter_model.safetensors'), [
        'single',
        'safetensors',
        'adapter_model.safetensors',
        [],
        [],
      ]);
    });

    it('adapter_model.bin through the PyTorch reader; with both, the safetensors (as PEFT)', async () => {
      const bin = await adapter({}, small(), 'bin');
      const fromBin = await openCheckpoint(bin);
      assert.equal(fromBin.format, 'lora');
      assert.deepEqual(fromBin.files, [path.join(bin, 'adapter_model.bin')]);
      assert.equal(fromBin.adapter?.modules.length, 2);
      const both = await adapter({}, small(), 'both');
      const cp = await openCheckpoint(both);
      assert.deepEqual(cp.files, [path.join(both, 'adapter_model.safetensors')]);
    });

    it('naming adapter_config.json or a weight file directly reads the same adapter', async () => {
      const dir = await adapter({}, small(), 'both');
      for (const name of ['adapter_config.json', 'adapter_model.safetensors', 'adapter_model.bin']) {
        const cp = await openCheckpoint(path.join(dir, name));
        assert.equal(cp.format, 'lora', name);
        assert.equal(cp.adapter?.modules.length, 2);
      }
      assert.equal(
        (await openCheckpoint(path.join(dir, 'adapter_model.bin'))).files[0],
        path.join(dir, 'adapter_model.bin'),
      );
    });

    it('adapter weights without their config, a config without weights: errors naming them', async () => {
      const dir = await adapter({});
      fs.rmSync(path.join(dir, 'adapter_config.json'));
      await refused(
        path.join(dir, 'adapter_model.safetensors'),
        'UNSUPPORTED_ADAPTER',
        path.join(dir, 'adapter_model.safetensors'),
        'without their adapter_config.json',
      );
      const lone = await adapter({});
      fs.rmSync(path.join(lone, 'adapter_model.safetensors'));
      await refused(
        lone,
        'NO_CHECKPOINT',
        lone,
        'adapter_config.json but neither adapter_model.safetensors nor adapter_model.bin',
      );
    });
  });

  describe('the config', () => {
    const parse = (fields: Record<string, unknown>) =>
      parseAdapterConfig(pythonJson(peftConfig(fields)), 'adapter_config.json');

    it('s = α/r, or α/√r with use_rslora; defaults r = α = 8; lora_alpha may be a float', () => {
      assert.deepEqual(moduleScaling(parse({ r: 8, lora_alpha: 16 }), 'x'), { rank: 8, alpha: 16, scale: 2 });
      assert.equal(moduleScaling(parse({ r: 16, lora_alpha: 32, use_rslora: true }), 'x').scale, 8);
      const bare = parseAdapterConfig('{"peft_type": "LORA"}', 'c');
      assert.deepEqual(moduleScaling(bare, 'x'), { rank: 8, alpha: 8, scale: 1 });
      assert.equal(moduleScaling(parse({ r: 4, lora_alpha: 11.5 }), 'x').scale, 11.5 / 4);
    });

    it('rank_pattern / alpha_pattern: (.*\\.)?(key)$, first match in file order, r and α looked up separately (PEFT ≥ 0.15)', () => {
      const c = parseAdapterConfig(
        JSON.stringify({
          peft_type: 'LORA',
          r: 8,
          lora_alpha: 16,
          // File order, not sorted order, decides: "layers.1.self_attn.q_proj" comes before the suffix "q_proj".
          rank_pattern: { 'layers.1.self_attn.q_proj': 4, q_proj: 2, '^model.layers.3.mlp.down_proj': 32 },
          alpha_pattern: { v_proj: 1 },
        }),
        'c',
      );
      assert.deepEqual(moduleScaling(c, 'model.layers.0.self_attn.q_proj'), { rank: 2, alpha: 16, scale: 8 });
      assert.deepEqual(moduleScaling(c, 'model.layers.1.self_attn.q_proj'), { rank: 4, alpha: 16, scale: 4 });
      assert.deepEqual(moduleScaling(c, 'model.layers.11.self_attn.q_proj'), {
        rank: 2,
        alpha: 16,
        scale: 8,
      });
      // An α-only key does not reset r (PEFT ≤ 0.13's shared key did: bug #2195).
      assert.deepEqual(moduleScaling(c, 'model.layers.0.self_attn.v_proj'), {
        rank: 8,
        alpha: 1,
        scale: 1 / 8,
      });
      // ^full.name works from 0.15 on; a key must end at a dot boundary ("xq_proj" is not "q_proj").
      assert.equal(moduleScaling(c, 'model.layers.3.mlp.down_proj').rank, 32);
      assert.equal(moduleScaling(c, 'model.layers.13.mlp.down_proj').rank, 8);
      assert.equal(moduleScaling(c, 'model.layers.0.self_attn.xq_proj').rank, 8);
    });

    it('SEQ_CLS adds classifier and score to modules_to_save; unknown fields are a warning', () => {
      assert.deepEqual(parse({ task_type: 'SEQ_CLS', modules_to_save: ['pooler'] }).modulesToSave, [
        'pooler',
        'classifier',
        'score',
      ]);
      const c = parseAdapterConfig('{"peft_type": "LORA", "future_field": 1}', 'c');
      assert.match(c.warnings.join(), /future_field unknown to model-stock, ignored/);
    });

    for (const [fields, field] of [
      [{ peft_type: 'IA3' }, 'peft_type'],
      [{ peft_type: 'ADALORA' }, 'peft_type'],
      [{ use_dora: true }, 'use_dora'],
      [{ init_lora_weights: 'pissa' }, 'init_lora_weights'],
      [{ init_lora_weights: 'pissa_niter_16' }, 'init_lora_weights'],
      [{ init_lora_weights: 'olora' }, 'init_lora_weights'],
      [{ init_lora_weights: 'corda' }, 'init_lora_weights'],
      [{ init_lora_weights: 'loftq' }, 'init_lora_weights'],
      [{ layer_replication: [[0, 4]] }, 'layer_replication'],
      [{ target_parameters: ['experts.gate_up_proj'] }, 'target_parameters'],
      [{ trainable_token_indices: [1, 2] }, 'trainable_token_indices'],
      [{ alora_invocation_tokens: [5] }, 'alora_invocation_tokens'],
      [{ use_qalora: true }, 'use_qalora'],
      [{ bias: 'some' }, 'bias'],
      [{ r: 0 }, 'r'],
      [{ rank_pattern: { q_proj: 1.5 } }, 'rank_pattern'],
    ] as const) {
      it(`refuses ${JSON.stringify(fields)}, naming ${field}`, async () => {
        const dir = await adapter(fields as Record<string, unknown>);
        const e = await refused(dir, 'UNSUPPORTED_ADAPTER', path.join(dir, 'adapter_config.json'));
        assert.ok(e.message.includes(field), e.message);
      });
    }

    it('refuses a config without peft_type and one that is not JSON', async () => {
      const dir = await adapter({});
      fs.writeFileSync(path.join(dir, 'adapter_config.json'), '{"r": 8}');
      await refused(dir, 'UNSUPPORTED_ADAPTER', path.join(dir, 'adapter_config.json'), 'peft_type');
      fs.writeFileSync(path.join(dir, 'adapter_config.json'), '{"r": 8');
      await refused(dir, 'UNSUPPORTED_ADAPTER', path.join(dir, 'adapter_config.json'), 'not valid JSON');
    });

    it('warns on lora_ga (merged as PEFT loads it)', async () => {
      const cp = await openCheckpoint(await adapter({ init_lora_weights: 'lora_ga' }));
      assert.match(cp.warnings.join('\n'), /lora_ga/);
    });
  });

  describe('the keys', () => {
    it('keys with or without base_model.model.', async () => {
      for (const prefixed of [true, false]) {
        const cp = await openCheckpoint(await adapter({}, small({ prefixed })));
        assert.deepEqual(
          cp.adapter!.modules.map((m) => m.module),
          ['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.v_proj'],
        );
      }
    });

    it('lora_B.bias, modules_to_save, bias "all" (X.bias and X.base_layer.bias), a base_layer weight', async () => {
      const t = (name: string, shape: number[]): AdapterTensor => ({
        name,
        dtype: 'F32',
        shape,
        values: new Float32Array(shape.reduce((a, b) => a * b, 1)),
      });
      const cp = await openCheckpoint(
        await adapter(
          { modules_to_save: ['lm_head'], bias: 'all', lora_bias: true },
          small({
            extra: [
              t(loraKey('model.layers.0.self_attn.q_proj', 'B.bias'), [6]),
              t('base_model.model.lm_head.weight', [10, 5]),
              t('base_model.model.model.layers.0.self_attn.q_proj.base_layer.bias', [6]),
              t('base_model.model.model.layers.0.self_attn.k_proj.bias', [3]),
              t('base_model.model.model.embed_tokens.base_layer.weight', [10, 5]),
            ],
          }),
        ),
      );
      const a = cp.adapter!;
      assert.equal(a.modules.find((m) => m.module.endsWith('q_proj'))?.biasB?.shape[0], 6);
      assert.deepEqual(a.weights.map((w) => [w.name, w.kind]).sort(), [
        ['lm_head.weight', 'modules_to_save'],
        ['model.embed_tokens.weight', 'base_layer'],
        ['model.layers.0.self_attn.k_proj.bias', 'bias'],
        ['model.layers.0.self_attn.q_proj.bias', 'bias'],
      ]);
    });

    it('embedding factors (lora_embedding_A/B, no .weight) and convolution kernels', async () => {
      const cp = await openCheckpoint(
        await adapter({}, [
          {
            name: 'base_model.model.model.embed_tokens.lora_embedding_A',
            dtype: 'F32',
            shape: [2, 10],
            values: new Float32Array(20),
          },
          {
            name: 'base_model.model.model.embed_tokens.lora_embedding_B',
            dtype: 'F32',
            shape: [5, 2],
            values: new Float32Array(10),
          },
          { name: loraKey('conv', 'A'), dtype: 'BF16', shape: [2, 3, 3, 3], values: new Float32Array(54) },
          { name: loraKey('conv', 'B'), dtype: 'BF16', shape: [4, 2, 1, 1], values: new Float32Array(8) },
        ]),
      );
      const [emb, conv] = cp.adapter!.modules;
      assert.equal(emb?.embedding, true);
      assert.equal(conv?.embedding, false);
      assert.equal(conv?.rank, 2);
    });

    const refusedKey = async (
      tensors: AdapterTensor[],
      code: ErrorCode,
      key: string,
      mention: string,
      fields = {},
    ) => {
      const dir = await adapter(fields, tensors);
      const e = await refused(dir, code, path.join(dir, 'adapter_model.safetensors'), mention);
      assert.equal(e.tensor, key);
    };
    const one = (name: string, shape: number[], dtype: AdapterTensor['dtype'] = 'F32'): AdapterTensor => ({
      name,
      dtype,
      shape,
      values: new Float32Array(shape.reduce((a, b) => a * b, 1)),
    });

    it('refuses DoRA magnitudes, trainable tokens, other methods’ keys and stray tensors, naming the key', async () => {
      const mag = 'base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector';
      await refusedKey(small({ extra: [one(mag, [6])] }), 'UNSUPPORTED_ADAPTER', mag, 'DoRA');
      const tok = 'base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta';
      await refusedKey(small({ extra: [one(tok, [2, 5])] }), 'UNSUPPORTED_ADAPTER', tok, 'trainable token');
      const e = 'base_model.model.model.layers.0.self_attn.q_proj.lora_E';
      await refusedKey(small({ extra: [one(e, [2, 1])] }), 'UNSUPPORTED_ADAPTER', e, 'not a LoRA factor');
      const stray = 'base_model.model.lm_head.weight';
      await refusedKey(
        small({ extra: [one(stray, [10, 5])] }),
        'UNSUPPORTED_ADAPTER',
        stray,
        'modules_to_save',
      );
      const bias = 'base_model.model.model.layers.0.self_attn.k_proj.bias';
      await refusedKey(small({ extra: [one(bias, [3])] }), 'UNSUPPORTED_ADAPTER', bias, 'bias: "none"');
      const lone = 'base_model.model.x.lora_A.weight';
      await refusedKey(small({ extra: [one(lone, [2, 5])] }), 'UNSUPPORTED_ADAPTER', lone, 'no lora_B');
    });

    it('refuses factors that do not fit each other or the config (SHAPE_MISMATCH naming the module)', async () => {
      const q = 'model.layers.0.self_attn.q_proj';
      const tensors = small({ rankOf: { [q]: 3 } });
      const dir = await adapter({}, tensors);
      const e = await refused(
        dir,
        'SHAPE_MISMATCH',
        path.join(dir, 'adapter_model.safetensors'),
        q,
        'rank 3',
        'r = 2',
      );
      assert.equal(e.tensor, loraKey(q, 'A'));
      // rank_pattern makes it fit.
      const cp = await openCheckpoint(await adapter({ rank_pattern: { q_proj: 3 } }, tensors));
      assert.equal(cp.adapter!.modules[0]!.rank, 3);
      const bad = small().map((t) =>
        t.name === loraKey(q, 'B') ? { ...t, shape: [6, 3], values: new Float32Array(18) } : t,
      );
      await refused(
        await adapter({}, bad),
        'SHAPE_MISMATCH',
        path.join(tmp.dir, `a${n - 1}`, 'adapter_model.safetensors'),
        'lora_A has 2 rows but lora_B 3 columns',
      );
      const grouped = [one(loraKey('conv', 'A'), [4, 3, 3, 3]), one(loraKey('conv', 'B'), [8, 2, 1, 1])];
      await refused(
        await adapter({ r: 4 }, grouped),
        'UNSUPPORTED_ADAPTER',
        path.join(tmp.dir, `a${n - 1}`, 'adapter_model.safetensors'),
        'grouped convolution',
      );
    });

    it('a module both LoRA-targeted and saved whole is refused', async () => {
      const dir = await adapter(
        { modules_to_save: ['q_proj'] },
        small({ extra: [one('base_model.model.model.layers.0.self_attn.q_proj.weight', [6, 5])] }),
      );
      await refused(
        dir,
        'UNSUPPORTED_ADAPTER',
        path.join(dir, 'adapter_model.safetensors'),
        'both LoRA factors and a whole tensor',
      );
    });

    it('target_modules is only cross-checked: a module it does not name is merged, with a warning', async () => {
      const cp = await openCheckpoint(await adapter({ target_modules: ['q_proj'] }));
      assert.equal(cp.adapter!.modules.length, 2);
      assert.match(cp.warnings.join('\n'), /does not name 1 module\(s\).*v_proj/);
    });
  });
});
