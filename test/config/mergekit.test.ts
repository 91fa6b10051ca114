import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MERGEKIT_KEYS, mergekitKeysMarkdown, parseMergekitYaml } from '../../lib/config/mergekit';
import { ModelStockError } from '../../lib/errors';

const FILE = 'card.yml';
const parse = (text: string): ReturnType<typeof parseMergekitYaml> => parseMergekitYaml(text, FILE);

function refused(text: string, ...patterns: string[]): void {
  assert.throws(
    () => parse(text),
    (e: unknown) => {
      assert.ok(e instanceof ModelStockError, String(e));
      assert.equal(e.code, 'BAD_CONFIG');
      assert.ok(e.message.startsWith(`${FILE}: `), e.message);
      for (const p of patterns) assert.ok(e.message.includes(p), `"${p}" not in: ${e.message}`);
      return true;
    },
    text,
  );
}

const TWO = 'merge_method: model_stock\nbase_model: org/base\nmodels:\n  - model: org/a\n  - model: org/b\n';

describe('mergekit config: parsing what model cards publish', () => {
  it('comments, key order, name, dtype/out_dtype, per-model weights, the base listed among models', () => {
    const c = parse(`# Model Stock merge, as on the card
name: My-Stock-7B   # a label
models:
  - model: meta-math/MetaMath-Mistral-7B
    parameters:
      weight: [{filter: mlp, value: [2, 1]}, {value: 1}]
  - model: org/code@v1.0
    parameters: {weight: 1.0, density: 0.5}
  - model: mistralai/Mistral-7B-v0.1
merge_method: model_stock
base_model: mistralai/Mistral-7B-v0.1
parameters:
  filter_wise: false
  normalize: true
dtype: float32
out_dtype: bfloat16
tokenizer_source: mistralai/Mistral-7B-v0.1
`);
    assert.equal(c.base, 'mistralai/Mistral-7B-v0.1');
    assert.deepEqual(c.models, ['meta-math/MetaMath-Mistral-7B', 'org/code@v1.0']);
    assert.equal(c.filterWise, false);
    assert.equal(c.outDtype, 'BF16');
    assert.equal(c.tokenizerSource, 'mistralai/Mistral-7B-v0.1', 'kept as written');
    assert.deepEqual(c.layerRanges, []);
    assert.deepEqual(c.warnings, [
      "models[0].parameters, models[1].parameters ignored: model_stock derives each model's weight from the angles between task vectors",
      "parameters.normalize ignored: model_stock's only parameter is filter_wise",
      'models[2] "mistralai/Mistral-7B-v0.1" is the base_model; it is not a fine-tune and is left out, as mergekit does',
    ]);
  });

  it('LoRA adapters: model+lora as written, and mergekit’s {model: {path}, lora: {path}} as the same reference', () => {
    const c = parse(`merge_method: model_stock
base_model: org/base
models:
  - model: org/base+org/adapter-a
  - model: {model: {path: org/base}, lora: {path: org/adapter-b, revision: v2}}
  - model: {model: org/ft@v1, lora: ./adapters/c}
`);
    assert.deepEqual(c.models, [
      'org/base+org/adapter-a',
      'org/base+org/adapter-b@v2',
      'org/ft@v1+./adapters/c',
    ]);
    assert.deepEqual(c.warnings, []);
  });

  it('dtype alone sets the output dtype; torch.-prefixed names are read', () => {
    assert.equal(parse(`${TWO}dtype: torch.float16\n`).outDtype, 'F16');
    assert.equal(parse(TWO).outDtype, undefined);
  });

  it('a slice whose sources cover the models: the same models, ranges kept for the layer check', () => {
    const c = parse(`slices:
  - sources:
      - model: org/a
        layer_range: [0, 32]
        parameters: {weight: 0.5}
      - model: org/b
        layer_range: [0, 32]
      - model: org/base
        layer_range: [0, 32]
    parameters:
      filter_wise: true
merge_method: model_stock
base_model: org/base
`);
    assert.deepEqual(c.models, ['org/a', 'org/b']);
    assert.equal(c.filterWise, true, 'a slice parameter overrides the top level, as in mergekit');
    assert.deepEqual(
      c.layerRanges.map((r) => [r.reference, r.layerRange, r.where]),
      [
        ['org/a', [0, 32], 'slices[0].sources[0]'],
        ['org/b', [0, 32], 'slices[0].sources[1]'],
        ['org/base', [0, 32], 'slices[0].sources[2]'],
      ],
    );
    assert.equal(c.warnings.length, 2);
  });

  it("mergekit's structured references, revision and override_architecture", () => {
    const c = parse(`merge_method: model_stock
base_model:
  model:
    path: org/base
    revision: 0123456789abcdef0123456789abcdef01234567
models:
  - model: {model: {path: org/a, revision: v2}, override_architecture: MistralForCausalLM}
  - model: {model: org/b@main}
`);
    assert.equal(c.base, 'org/base@0123456789abcdef0123456789abcdef01234567');
    assert.deepEqual(c.models, ['org/a@v2', 'org/b@main']);
    assert.match(c.warnings[0] ?? '', /models\[0\]\.model\.override_architecture ignored/);
  });

  it('a model listed twice counts once, as mergekit keys models by reference', () => {
    const c = parse(`${TWO}  - model: Org/A@main\n`);
    assert.deepEqual(c.models, ['org/a', 'org/b']);
    assert.match(c.warnings[0] ?? '', /models\[2\] "Org\/A@main" repeats models\[0\]/);
  });

  it('Windows-style paths in plain and quoted strings arrive untouched', () => {
    const c = parse(`merge_method: model_stock
base_model: C:\\Users\\me\\models\\base
models:
  - model: 'D:\\models\\ft-a'
  - model: .\\ft-b
`);
    assert.equal(c.base, 'C:\\Users\\me\\models\\base');
    assert.deepEqual(c.models, ['D:\\models\\ft-a', '.\\ft-b']);
  });

  it('tokenizer_source: another listed model, the tokenizer: form, and chat templates', () => {
    assert.equal(parse(`${TWO}tokenizer_source: org/b\n`).tokenizerSource, 'org/b');
    assert.equal(parse(`${TWO}tokenizer_source: base\n`).tokenizerSource, 'base');
    assert.equal(parse(`${TWO}tokenizer:\n  source: org/a\n`).tokenizerSource, 'org/a');
    const template = "{% for m in messages %}{{ m['content'] }}{% endfor %}";
    const t = parse(`${TWO}chat_template: "${template}"\n`);
    assert.equal(t.chatTemplate, template);
    for (const name of ['chatml', 'auto']) {
      const n = parse(`${TWO}chat_template: ${name}\n`);
      assert.equal(n.chatTemplate, undefined);
      assert.match(n.warnings[0] ?? '', new RegExp(`chat_template "${name}" ignored`));
    }
  });

  it('refuses, with the reason, what it cannot honour', () => {
    refused(`${TWO}---\n${TWO}`, '2 YAML documents');
    refused(`${TWO}modules: {}\n`, '"modules"');
    refused(TWO.replace('model_stock', 'ties'), 'merge_method must be model_stock');
    refused(`${TWO}slices: []\n`, 'models or slices, not both');
    refused(
      'merge_method: model_stock\nbase_model: org/base\nslices: []\n',
      'slices must be a non-empty list',
    );
    const src = (range: string): string =>
      `      - model: org/a\n        layer_range: ${range}\n      - model: org/b\n        layer_range: [0, 32]\n`;
    refused(
      `merge_method: model_stock\nbase_model: org/base\nslices:\n  - sources:\n${src('[0, 32]')}  - sources:\n${src('[0, 32]')}`,
      'slices[1]: 2 slices are not supported',
    );
    refused(
      `merge_method: model_stock\nbase_model: org/base\nslices:\n  - sources:\n${src('[16, 8]')}`,
      'slices[0].sources[0].layer_range must be [from, to]',
    );
    refused(
      `merge_method: model_stock\nbase_model: org/base\nslices:\n  - sources:\n${src('[0, 32]')}    residual_weight: 0.1\n`,
      'residual_weight',
    );
    refused(
      `merge_method: model_stock\nbase_model: org/base\nslices:\n  - sources:\n${src('[0, 32]')}    base_model: org/other\n`,
      'slices[0].base_model "org/other" differs from base_model "org/base"',
    );
    refused(
      `${TWO}tokenizer_source: union\n`,
      'tokenizer_source: union is not supported',
      'embedding resizing',
    );
    refused(`${TWO}tokenizer: {}\n`, 'tokenizer.source: union is not supported');
    refused(
      `${TWO}tokenizer:\n  source: base\n  tokens: {"<|im_start|>": {source: org/a}}\n`,
      'tokenizer.tokens',
    );
    refused(`${TWO}tokenizer:\n  source: base\n  pad_to_multiple_of: 64\n`, 'pad_to_multiple_of');
    refused(`${TWO}tokenizer_source: base\ntokenizer: {source: base}\n`, 'not both');
    refused(
      `${TWO}tokenizer_source: org/elsewhere\n`,
      'tokenizer_source "org/elsewhere" is neither the base_model nor one of the models',
    );
    refused(
      `${TWO}parameters:\n  filter_wise: [{filter: mlp, value: true}, {value: false}]\n`,
      'parameters.filter_wise',
      'give true or false',
    );
    refused(`${TWO}parameters:\n  filter_wise: [0, 1]\n`, 'per-layer gradients');
    refused(
      'merge_method: model_stock\nmodels:\n  - model: org/a\n  - model: org/b\n',
      'base_model is required',
    );
    refused(`${TWO}base_modle: org/base\n`, 'unsupported key "base_modle"');
    refused(
      'merge_method: model_stock\nbase_model: org/base\nmodels:\n  - model: {model: org/a, lora: {path: org/ad, rev: x}}\n  - model: org/b\n',
      'models[0].model.lora: unsupported key "rev"',
    );
    refused('merge_method: [oops\n', 'not valid YAML');
  });

  it('README.md shows exactly the table of keys the code follows', () => {
    const readme = fs.readFileSync(path.resolve(__dirname, '../../../README.md'), 'utf8').split('\n');
    const header = readme.findIndex((l) => /^\|\s*key\s*\|\s*here\s*\|\s*notes\s*\|$/.test(l));
    assert.ok(header >= 0, 'README.md has no "| key | here | notes |" table');
    const rows: string[][] = [];
    for (const line of readme.slice(header + 2)) {
      if (!line.startsWith('|')) break;
      rows.push(
        line
          .slice(1, -1)
          .split(' | ')
          .map((cell) => cell.trim()),
      );
    }
    // Cells compared after trimming: prettier pads the README's columns.
    const expected = mergekitKeysMarkdown()
      .split('\n')
      .slice(2)
      .map((l) =>
        l
          .slice(1, -1)
          .split(' | ')
          .map((cell) => cell.trim()),
      );
    assert.deepEqual(rows, expected, 'README.md differs from MERGEKIT_KEYS: paste mergekitKeysMarkdown()');
    for (const fate of ['honoured', 'ignored', 'refused'])
      assert.ok(MERGEKIT_KEYS.some((k) => k.fate === fate));
  });
});
