/**
 * How users name adapters (issue 18, item 1): an adapter folder as `--model`, mergekit's MODEL+ADAPTER
 * (CLI and API) and its YAML forms — `model: BASE+ADAPTER` and `{model: {path}, lora: {path}}` — where
 * BASE+ADAPTER over the merge's own base is the adapter alone, and over another model is that model with
 * the adapter applied. Every output checked against the float64 reference on the dense weights; the CLI,
 * YAML and API routes write the same bytes.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isModelStockError } from '../../lib/errors';
import { mergeModelStock } from '../../lib/merge';
import { inspectModelStock } from '../../lib/inspect';
import { namesModel } from '../../lib/inputs';
import {
  FactorPool,
  llamaLike,
  writeAdapter,
  writeBase,
  writeFullFineTune,
  type AdapterSpec,
} from '../helpers/adapters';
import { runCli } from '../helpers/cli';
import { readModel } from '../helpers/models';
import { rejectsWith } from '../helpers/pytorch';
import { mulberry32 } from '../helpers/random';
import { assertWithinContract, numel, referenceMerge } from '../helpers/reference';
import { useTmpDir } from '../helpers/tmp';

const q = 'model.layers.0.self_attn.q_proj';
const k = 'model.layers.0.self_attn.k_proj';
const v = 'model.layers.0.self_attn.v_proj';
const down = 'model.layers.0.mlp.down_proj';

const adapter = (modules: string[], alpha: number): AdapterSpec => ({
  config: { r: 4, lora_alpha: alpha },
  modules: modules.map((module) => ({ module, rank: 4, scale: alpha / 4 })),
});

describe('LoRA adapters: references (folder, MODEL+ADAPTER, mergekit YAML)', () => {
  const tmp = useTmpDir();
  const shapes = llamaLike('BF16');
  let dirs: { base: string; full: string; overFull: string; a: string; b: string };
  /** Per model of the merge (full+overFull, a, base+b): its dense weights by tensor. */
  let weights: ((name: string) => Float64Array)[];
  let baseValues: Map<string, Float64Array>;

  before(async () => {
    const rng = mulberry32(21);
    const root = tmp.dir;
    dirs = {
      base: path.join(root, 'base'),
      full: path.join(root, 'full'),
      overFull: path.join(root, 'adapter-of-full'),
      a: path.join(root, 'adapter-a'),
      b: path.join(root, 'adapter b+x'), // a path with "+" in it: an existing path always wins
    };
    baseValues = await writeBase(dirs.base, shapes, rng);
    const pool = new FactorPool(rng);
    const full = await writeFullFineTune(dirs.full, baseValues, shapes, rng);
    // An adapter trained over the full fine-tune: its factors are added to that model's weights.
    const overFull = await writeAdapter(dirs.overFull, adapter([q, v, down], 8), full, shapes, pool, rng);
    const a = await writeAdapter(dirs.a, adapter([q, k, v], 4), baseValues, shapes, pool, rng);
    const b = await writeAdapter(dirs.b, adapter([q, v], 16), baseValues, shapes, pool, rng);
    weights = [
      (n) => overFull.get(n) ?? full.get(n)!,
      (n) => a.get(n) ?? baseValues.get(n)!,
      (n) => b.get(n) ?? baseValues.get(n)!,
    ];
  });

  const models = (): string[] => [`${dirs.full}+${dirs.overFull}`, dirs.a, `${dirs.base}+${dirs.b}`];

  it('the API: MODEL+ADAPTER over another model is that model + the adapter; over the base, the adapter alone', async () => {
    const out = path.join(tmp.dir, 'api');
    const report = await mergeModelStock({ base: dirs.base, models: models(), out, fsync: false });
    const merged = await readModel(out);
    for (const t of shapes) {
      const w0 = baseValues.get(t.name)!;
      const ws = weights.map((w) => w(t.name));
      const ref = referenceMerge(w0, ws, { unitLength: numel(t.shape), theta: 'mean-cos' });
      assertWithinContract(merged.get(t.name)!.values!, w0, ws, ref.t, numel(t.shape), t.dtype, t.name);
    }
    assert.deepEqual(
      report.inputs?.map((x) => [x.ref, x.format]),
      [[dirs.base, 'safetensors'], ...models().map((m) => [m, 'lora'])],
    );
    // Every tensor of the full fine-tune differs from the base: nothing is copied, none is untouched.
    assert.ok(report.tensors.every((t) => t.action === 'merge'));
    const entry = (name: string) => report.tensors.find((t) => t.name === name)!;
    assert.deepEqual(entry(`${k}.weight`).untouched, [2]);
    assert.deepEqual(entry(`${down}.weight`).untouched, [1, 2]);
  });

  it('the CLI (--model MODEL+ADAPTER) and mergekit YAML (both forms) write the same bytes as the API', () => {
    const api = path.join(tmp.dir, 'api', 'model.safetensors');
    const cli = path.join(tmp.dir, 'cli');
    const r = runCli([
      'merge',
      '--base',
      dirs.base,
      ...models().flatMap((m) => ['--model', m]),
      '--out',
      cli,
      '--no-fsync',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(fs.readFileSync(path.join(cli, 'model.safetensors')), fs.readFileSync(api));
    const yml = path.join(tmp.dir, 'merge.yml');
    fs.writeFileSync(
      yml,
      `merge_method: model_stock
base_model: ${JSON.stringify(dirs.base)}
models:
  - model: {model: {path: ${JSON.stringify(dirs.full)}}, lora: {path: ${JSON.stringify(dirs.overFull)}}}
  - model: ${JSON.stringify(dirs.a)}
  - model: ${JSON.stringify(`${dirs.base}+${dirs.b}`)}
`,
    );
    const fromYaml = path.join(tmp.dir, 'yaml');
    const y = runCli(['merge', yml, fromYaml, '--no-fsync']);
    assert.equal(y.code, 0, y.stderr);
    assert.deepEqual(fs.readFileSync(path.join(fromYaml, 'model.safetensors')), fs.readFileSync(api));
  });

  it('inspect takes the same references and gives the numbers the merge reports', async () => {
    const inspected = await inspectModelStock({ base: dirs.base, models: models() });
    const merged = await mergeModelStock({
      base: dirs.base,
      models: models(),
      out: path.join(tmp.dir, 'again'),
      fsync: false,
    });
    for (const t of inspected.tensors) {
      const m = merged.tensors.find((x) => x.name === t.name)!;
      assert.deepEqual([t.action, t.cosines, t.t], [m.action, m.cosines, m.t], t.name);
    }
  });

  it('base_model_name_or_path: a warning when it does not name the model the adapter is applied to', async () => {
    const rng = mulberry32(5);
    const pool = new FactorPool(rng);
    const written = async (dir: string, named: string): Promise<string> => {
      const spec = adapter([q], 4);
      await writeAdapter(
        path.join(tmp.dir, dir),
        { ...spec, config: { ...spec.config, base_model_name_or_path: named } },
        baseValues,
        shapes,
        pool,
        rng,
      );
      return path.join(tmp.dir, dir);
    };
    const other = await written('named-other', 'TinyLlama/TinyLlama-1.1B-Chat-v1.0');
    const same = await written('named-same', 'some-org/base'); // the base's folder is .../base
    const warnings: string[] = [];
    await mergeModelStock({
      base: dirs.base,
      models: [other, same, `${dirs.full}+${other}`],
      out: path.join(tmp.dir, 'named'),
      fsync: false,
      onWarning: (w) => warnings.push(w),
    });
    const said = warnings.filter((w) => w.includes('base_model_name_or_path'));
    assert.equal(said.length, 2, said.join('\n'));
    assert.match(
      said[0]!,
      /^model 1 .*"TinyLlama\/TinyLlama-1\.1B-Chat-v1\.0", but it is applied to ".*base"/,
    );
    assert.match(said[1]!, /^model 3 .*but it is applied to ".*full"/);
    const cache = '/cache/hub/models--TinyLlama--TinyLlama-1.1B-Chat-v1.0/snapshots/abc';
    assert.ok(
      namesModel('TinyLlama/TinyLlama-1.1B-Chat-v1.0', 'TinyLlama/tinyllama-1.1b-chat-v1.0@main', '/x'),
    );
    assert.ok(namesModel('TinyLlama/TinyLlama-1.1B-Chat-v1.0', 'org/x', cache));
    assert.ok(namesModel('/models/base/', '../base', '/models/base'));
    assert.ok(!namesModel('meta-llama/Llama-2-7b-hf', 'TinyLlama/TinyLlama-1.1B-Chat-v1.0', cache));
  });

  it('refused: an adapter as the base, a full model after the "+", an adapter before it', async () => {
    const out = path.join(tmp.dir, 'never');
    await assert.rejects(
      mergeModelStock({ base: `${dirs.base}+${dirs.a}`, models: models(), out }),
      (e: unknown) =>
        isModelStockError(e) &&
        e.code === 'BAD_CONFIG' &&
        e.message.includes('the base must be a full model'),
    );
    await rejectsWith(
      mergeModelStock({ base: dirs.base, models: [`${dirs.base}+${dirs.full}`, dirs.a], out }),
      'BAD_CONFIG',
      dirs.full,
      'what follows the "+" must be a LoRA adapter',
    );
    await rejectsWith(
      mergeModelStock({ base: dirs.base, models: [`${dirs.a}+${dirs.overFull}`, dirs.a], out }),
      'BAD_CONFIG',
      dirs.a,
      'the model before the "+" must be a full model',
    );
    assert.equal(fs.existsSync(out), false);
  });
});
