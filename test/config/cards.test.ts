/**
 * Configs written the way model cards publish them (Hub IDs, comments, slices, weights, tokenizer
 * sources), merged through the CLI against models in Hugging Face cache layout: each output equals
 * the flag-based merge of the same local folders byte for byte, or the run fails with the expected
 * clear error and leaves nothing behind.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { generateFixture, PRESETS, type FixtureInfo } from '../../lib/fixtures/generate';
import { mergeModelStock } from '../../lib/merge';
import { REPORT_FILE } from '../../lib/output/atomic';
import { mergeArgs, runCli, runCliAsync } from '../helpers/cli';
import { addToHfCache } from '../helpers/hfCache';
import { startMockHub } from '../helpers/mockHub';
import { hashTree } from '../helpers/models';
import { useTmpDir } from '../helpers/tmp';
import { sentencePieceModel, tokenizerJson } from '../helpers/tokenizers';

const VOCAB = PRESETS.tiny.vocab; // embedding rows of every fixture model

describe('mergekit configs as model cards publish them, models in the Hugging Face cache', function () {
  const tmp = useTmpDir('model-stock-cards-');
  let fx: FixtureInfo;
  let cache: string;
  let env: Record<string, string>;
  let k = 0;
  const out = (): string => path.join(tmp.dir, `out${k++}`);

  before(async () => {
    fx = await generateFixture({ ...PRESETS.tiny, models: 3, dir: path.join(tmp.dir, 'fx') });
    // Tokenizers: the base's (with a SentencePiece file too), a fine-tune's of the same size but other
    // tokens, and one of a fine-tune that added tokens.
    const [ft1, ft2, ft3] = fx.models as [string, string, string];
    fs.writeFileSync(path.join(fx.base, 'tokenizer.json'), tokenizerJson(VOCAB, 'b'));
    fs.writeFileSync(path.join(fx.base, 'tokenizer.model'), sentencePieceModel(VOCAB));
    fs.writeFileSync(path.join(ft1, 'tokenizer.json'), tokenizerJson(VOCAB, 'b'));
    fs.writeFileSync(path.join(ft2, 'tokenizer.json'), tokenizerJson(VOCAB, 'code'));
    fs.writeFileSync(
      path.join(ft2, 'tokenizer_config.json'),
      JSON.stringify({ tokenizer_class: 'PreTrainedTokenizerFast', model_max_length: 4096 }),
    );
    fs.writeFileSync(path.join(ft3, 'tokenizer.json'), tokenizerJson(VOCAB + 44, 'chat'));
    cache = path.join(tmp.dir, 'hf', 'hub');
    await addToHfCache(cache, 'base-org/Tiny-Base', fx.base);
    await addToHfCache(cache, 'ft-org/Tiny-Math', ft1);
    await addToHfCache(cache, 'ft-org/Tiny-Code', ft2, { revision: 'v1.0' });
    await addToHfCache(cache, 'ft-org/Tiny-Chat', ft3);
    // Offline: a test must never reach for the real Hub; HF_HOME unrelated to the cache on purpose.
    env = { HF_HUB_CACHE: cache, HF_HOME: path.join(tmp.dir, 'nowhere'), HF_HUB_OFFLINE: '1', HF_TOKEN: '' };
  });

  /** The flag merge of local folders (cached per option set): the reference every config must equal. */
  const flagMerges = new Map<string, string>();
  const flagMerge = (models: readonly string[], extra: readonly string[] = []): string => {
    const key = JSON.stringify([models, extra]);
    const done = flagMerges.get(key);
    if (done !== undefined) return done;
    const o = out();
    const r = runCli([...mergeArgs(fx.base, models, o), ...extra, '-q', '--no-fsync'], env);
    assert.equal(r.code, 0, r.stderr);
    flagMerges.set(key, o);
    return o;
  };
  const sameWeights = (a: string, b: string): void => {
    assert.deepEqual(
      fs.readFileSync(path.join(a, 'model.safetensors')),
      fs.readFileSync(path.join(b, 'model.safetensors')),
    );
  };
  const mergeConfig = (
    text: string,
    extraEnv: Record<string, string> = {},
  ): { o: string; r: ReturnType<typeof runCli>; yml: string } => {
    const yml = path.join(tmp.dir, `card${k}.yml`);
    fs.writeFileSync(yml, text);
    const o = out();
    return { o, r: runCli(['merge', yml, o, '--no-fsync'], { ...env, ...extraEnv }), yml };
  };
  const fails = (text: string, code: string, ...patterns: string[]): void => {
    const { o, r, yml } = mergeConfig(text);
    assert.equal(r.code, 1, r.stderr);
    const first = r.stderr.split('\n').find((l) => l.startsWith('model-stock: error')) ?? '';
    assert.ok(first.startsWith(`model-stock: error [${code}]`), r.stderr);
    for (const p of patterns) assert.ok(first.includes(p.replace('$CONFIG', yml)), `"${p}" not in: ${first}`);
    assert.equal(fs.existsSync(o), false, 'no output');
  };

  it('Hub IDs, comments, name, dtype/out_dtype, per-model weights, the base listed, tokenizer_source = base ID', () => {
    const before = [fx.base, ...fx.models, cache].map(hashTree);
    const { o, r, yml } = mergeConfig(`# Tiny-Stock: Model Stock merge of a math and a code fine-tune
name: Tiny-Stock
models:
  - model: ft-org/Tiny-Math
    parameters:
      weight: [{filter: mlp, value: [2, 1]}, {value: 1}]   # mergekit accepts these; model_stock ignores them
  - model: ft-org/Tiny-Code@v1.0
    parameters:
      weight: 1.0
  - model: base-org/Tiny-Base   # the base, listed as cards do
merge_method: model_stock
base_model: base-org/Tiny-Base
parameters:
  filter_wise: false
dtype: float32
out_dtype: bfloat16
tokenizer_source: base-org/Tiny-Base
`);
    assert.equal(r.code, 0, r.stderr);
    const ref = flagMerge([fx.models[0]!, fx.models[1]!], ['--out-dtype', 'bfloat16']);
    sameWeights(o, ref);
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer.model', 'generation_config.json']) {
      assert.deepEqual(fs.readFileSync(path.join(o, f)), fs.readFileSync(path.join(ref, f)), f);
    }
    // Warnings name what was ignored and dropped.
    assert.match(
      r.stderr,
      new RegExp(`warning: ${yml}: models\\[0\\]\\.parameters, models\\[1\\]\\.parameters ignored`),
    );
    assert.match(
      r.stderr,
      /models\[2\] "base-org\/Tiny-Base" is the base_model; .* left out, as mergekit does/,
    );
    // References as the user wrote them: report, config and card.
    const report = JSON.parse(fs.readFileSync(path.join(o, REPORT_FILE), 'utf8'));
    assert.equal(report.base, 'base-org/Tiny-Base');
    assert.deepEqual(report.models, ['ft-org/Tiny-Math', 'ft-org/Tiny-Code@v1.0']);
    const written = fs.readFileSync(path.join(o, 'model_stock_config.yml'), 'utf8');
    assert.match(written, /base_model: base-org\/Tiny-Base\n/);
    assert.match(written, /- model: ft-org\/Tiny-Code@v1\.0\n/);
    assert.match(written, /tokenizer_source: base-org\/Tiny-Base\n/);
    assert.match(fs.readFileSync(path.join(o, 'README.md'), 'utf8'), /`ft-org\/Tiny-Code@v1\.0`/);
    assert.deepEqual([fx.base, ...fx.models, cache].map(hashTree), before, 'inputs and cache untouched');
    // The written config merges again to the same bytes.
    const again = mergeConfig(written);
    assert.equal(again.r.code, 0, again.r.stderr);
    sameWeights(again.o, o);
  });

  it('one slice covering every layer of every model = the models: merge (filter-wise from the slice)', () => {
    const { o, r } = mergeConfig(`slices:
  - sources:
      - model: ft-org/Tiny-Math
        layer_range: [0, 2]
      - model: ft-org/Tiny-Code@v1.0
        layer_range: [0, 2]
      - model: base-org/Tiny-Base
        layer_range: [0, 2]
    parameters:
      filter_wise: true
merge_method: model_stock
base_model: base-org/Tiny-Base
dtype: bfloat16
`);
    assert.equal(r.code, 0, r.stderr);
    sameWeights(o, flagMerge([fx.models[0]!, fx.models[1]!], ['--filter-wise', '--out-dtype', 'bfloat16']));
  });

  it('a partial slice: unsupported, naming the slice source and the layer count', () => {
    fails(
      `merge_method: model_stock
base_model: base-org/Tiny-Base
slices:
  - sources:
      - model: ft-org/Tiny-Math
        layer_range: [0, 2]
      - model: ft-org/Tiny-Code@v1.0
        layer_range: [0, 1]
`,
      'BAD_CONFIG',
      '$CONFIG: slices[0].sources[1] (ft-org/Tiny-Code@v1.0): layer_range [0, 1] is not all 2 layers',
      'partial slices are unsupported',
    );
  });

  it('tokenizer_source: another listed model whose vocabulary fits → its tokenizer files; chat_template written', () => {
    const template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}";
    const { o, r } = mergeConfig(`merge_method: model_stock
base_model: base-org/Tiny-Base
models:
  - model: ft-org/Tiny-Math
  - model: ft-org/Tiny-Code@v1.0
tokenizer_source: ft-org/Tiny-Code@v1.0
chat_template: "${template}"
`);
    assert.equal(r.code, 0, r.stderr);
    sameWeights(o, flagMerge([fx.models[0]!, fx.models[1]!]));
    const ft2 = fx.models[1]!;
    assert.deepEqual(
      fs.readFileSync(path.join(o, 'tokenizer.json')),
      fs.readFileSync(path.join(ft2, 'tokenizer.json')),
    );
    assert.equal(
      fs.existsSync(path.join(o, 'tokenizer.model')),
      false,
      "the base's SentencePiece file is not left beside it",
    );
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(o, 'tokenizer_config.json'), 'utf8')), {
      tokenizer_class: 'PreTrainedTokenizerFast',
      model_max_length: 4096,
      chat_template: template,
    });
    assert.deepEqual(
      fs.readFileSync(path.join(o, 'config.json')),
      fs.readFileSync(path.join(fx.base, 'config.json')),
      'config from the base',
    );
    assert.match(
      fs.readFileSync(path.join(o, 'model_stock_config.yml'), 'utf8'),
      /tokenizer_source: ft-org\/Tiny-Code@v1\.0\n/,
    );
  });

  it('tokenizer_source whose vocabulary does not fit, or union: clear errors, nothing written', () => {
    const head = `merge_method: model_stock
base_model: base-org/Tiny-Base
models:
  - model: ft-org/Tiny-Math
  - model: ft-org/Tiny-Chat
`;
    fails(
      `${head}tokenizer_source: ft-org/Tiny-Chat\n`,
      'BAD_CONFIG',
      `tokenizer_source "ft-org/Tiny-Chat": its tokenizer has ${VOCAB + 44} tokens but the output's embedding model.embed_tokens.weight (the base's shape) has ${VOCAB} rows`,
    );
    fails(
      `${head}tokenizer_source: union\n`,
      'BAD_CONFIG',
      '$CONFIG: tokenizer_source: union is not supported',
    );
    fails(
      `${head}tokenizer_source: ft-org/Tiny-Code\n`,
      'BAD_CONFIG',
      'is neither the base_model nor one of the models',
    );
  });

  it('Windows-style paths: backslash-separated folders are found; a drive path is named as missing', function () {
    if (path.sep !== '/') this.skip(); // on Windows these are ordinary paths, covered by every other test
    const win = (p: string): string => p.replace(/\//g, '\\');
    const { o, r } = mergeConfig(`merge_method: model_stock
base_model: ${win(fx.base)}
models:
  - model: '${win(fx.models[0]!)}'
  - model: ${win(fx.models[1]!)}
`);
    assert.equal(r.code, 0, r.stderr);
    sameWeights(o, flagMerge([fx.models[0]!, fx.models[1]!]));
    fails(
      `merge_method: model_stock\nbase_model: ${fx.base}\nmodels:\n  - model: ${fx.models[0]}\n  - model: 'C:\\models\\ft-b'\n`,
      'IO_ERROR',
      'C:\\models\\ft-b',
    );
  });

  it('LoRA references, several documents, a missing Hub model offline: clear errors', () => {
    fails(
      `merge_method: model_stock\nbase_model: base-org/Tiny-Base\nmodels:\n  - model: ft-org/Tiny-Math+ft-org/adapter\n  - model: ft-org/Tiny-Code@v1.0\n`,
      'MODEL_NOT_CACHED',
      '"ft-org/adapter" is not a local path',
    );
    fails(
      `merge_method: model_stock\nbase_model: base-org/Tiny-Base\nmodels:\n  - model: {model: ft-org/Tiny-Math, lora: ft-org/Tiny-Code@v1.0}\n  - model: ft-org/Tiny-Code@v1.0\n`,
      'BAD_CONFIG',
      '"ft-org/Tiny-Math+ft-org/Tiny-Code@v1.0": what follows the "+" must be a LoRA adapter',
    );
    fails(
      `merge_method: model_stock\nbase_model: base-org/Tiny-Base\nmodels:\n  - model: ft-org/Tiny-Math\n  - model: ft-org/Tiny-Code@v1.0\n---\nmerge_method: model_stock\n`,
      'BAD_CONFIG',
      '$CONFIG: holds 2 YAML documents',
    );
    fails(
      `merge_method: model_stock\nbase_model: base-org/Tiny-Base\nmodels:\n  - model: ft-org/Tiny-Math\n  - model: meta-math/MetaMath-Mistral-7B\n`,
      'MODEL_NOT_CACHED',
      '"meta-math/MetaMath-Mistral-7B" is not a local path',
      cache,
      '`huggingface-cli download meta-math/MetaMath-Mistral-7B`',
    );
  });

  it('flags and the library take Hub IDs too', async () => {
    const o = out();
    const r = runCli(
      [...mergeArgs('base-org/Tiny-Base', ['ft-org/Tiny-Math', 'ft-org/Tiny-Code@v1.0'], o), '-q'],
      env,
    );
    assert.equal(r.code, 0, r.stderr);
    sameWeights(o, flagMerge([fx.models[0]!, fx.models[1]!]));
    const lib = out();
    const report = await mergeModelStock({
      base: 'base-org/Tiny-Base',
      models: ['ft-org/Tiny-Math', 'ft-org/Tiny-Code@v1.0'],
      out: lib,
      fsync: false,
      hub: { cacheDir: cache, offline: true },
    });
    assert.equal(report.base, 'base-org/Tiny-Base');
    sameWeights(lib, o);
    // Online with the Hub out of reach: the cached snapshots serve, and the report says so.
    const seen: string[] = [];
    const fallback = await mergeModelStock({
      base: 'base-org/Tiny-Base',
      models: ['ft-org/Tiny-Math', 'ft-org/Tiny-Code@v1.0'],
      out: out(),
      fsync: false,
      hub: { cacheDir: cache, offline: false, endpoint: 'http://127.0.0.1:9', connectTimeoutMs: 2000 },
      onWarning: (m) => seen.push(m),
    });
    const reached = fallback.warnings.filter((w) => /cannot reach .* using the cached snapshot/.test(w));
    assert.equal(reached.length, 3, fallback.warnings.join('\n'));
    assert.deepEqual(
      seen.filter((w) => reached.includes(w)),
      reached,
    );
  });

  it('online: a card config downloads its models into an empty cache, then merges identically', async () => {
    const hub = await startMockHub([
      { repo: 'base-org/Tiny-Base', dir: fx.base },
      { repo: 'ft-org/Tiny-Math', dir: fx.models[0]! },
      { repo: 'ft-org/Tiny-Code', dir: fx.models[1]!, gatedToken: 'hf_card' },
    ]);
    try {
      const emptyCache = path.join(tmp.dir, 'empty-cache');
      const yml = path.join(tmp.dir, 'online.yml');
      fs.writeFileSync(
        yml,
        'merge_method: model_stock\nbase_model: base-org/Tiny-Base\nmodels:\n  - model: ft-org/Tiny-Math\n  - model: ft-org/Tiny-Code\n',
      );
      const online = {
        HF_HUB_CACHE: emptyCache,
        HF_HUB_OFFLINE: '',
        HF_ENDPOINT: hub.url,
        HF_TOKEN: 'hf_card',
      };
      // An OUT that would be refused is refused before anything is downloaded.
      const taken = out();
      fs.mkdirSync(taken);
      fs.writeFileSync(path.join(taken, 'notes.txt'), 'mine');
      const refusedRun = await runCliAsync(['merge', yml, taken], online);
      assert.equal(refusedRun.code, 1, refusedRun.stderr);
      assert.match(refusedRun.stderr, /BAD_OUTPUT_PATH/);
      assert.equal(hub.requests.length, 0);
      const o = out();
      const r = await runCliAsync(['merge', yml, o, '--no-fsync'], online);
      assert.equal(r.code, 0, r.stderr);
      sameWeights(o, flagMerge([fx.models[0]!, fx.models[1]!]));
      assert.match(r.stderr, /downloading ft-org\/Tiny-Code model\.safetensors/);
      assert.ok(!/pytorch|README/.test(r.stderr));
      // The cache now serves the same merge offline.
      const o2 = out();
      const offline = runCli(['merge', yml, o2, '-q', '--no-fsync'], {
        HF_HUB_CACHE: emptyCache,
        HF_HUB_OFFLINE: '1',
      });
      assert.equal(offline.code, 0, offline.stderr);
      sameWeights(o2, o);
    } finally {
      await hub.close();
    }
  });
});
