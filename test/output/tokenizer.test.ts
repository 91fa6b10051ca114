import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelStockError } from '../../lib/errors';
import {
  checkTokenizerSource,
  copyTokenizer,
  sentencePieceCount,
  tokenizerVocabSize,
  writeChatTemplate,
} from '../../lib/output/tokenizer';
import { openCheckpoint } from '../../lib/checkpoint/open';
import { writeModel } from '../helpers/models';
import { sentencePieceModel, tokenizerJson } from '../helpers/tokenizers';
import { useTmpDir } from '../helpers/tmp';

const words = (n: number): string[] => Array.from({ length: n }, (_, i) => `t${i}`);

describe('output tokenizer: vocabulary size, tokenizer_source, chat template', () => {
  const tmp = useTmpDir();
  let k = 0;
  const folder = (files: Record<string, string | Buffer>): string => {
    const dir = path.join(tmp.dir, `t${k++}`);
    fs.mkdirSync(dir);
    for (const [name, data] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), data);
    return dir;
  };

  it('counts distinct ids as len(get_vocab()): tokenizer.json, SentencePiece, vocab.json, vocab.txt', () => {
    // Added tokens overlapping the model vocabulary count once.
    assert.equal(
      tokenizerVocabSize(
        folder({
          'tokenizer.json': tokenizerJson(10, 't', [
            { id: 0, content: 't0' },
            { id: 10, content: '<pad>' },
          ]),
        }),
      ),
      11,
    );
    const unigram = JSON.stringify({ model: { type: 'Unigram', vocab: words(7).map((w) => [w, -1]) } });
    assert.equal(tokenizerVocabSize(folder({ 'tokenizer.json': unigram })), 7);
    assert.equal(tokenizerVocabSize(folder({ 'tokenizer.model': sentencePieceModel(300) })), 300);
    assert.equal(
      tokenizerVocabSize(
        folder({ 'tokenizer.model': sentencePieceModel(5), 'added_tokens.json': '{"<x>": 5, "<y>": 6}' }),
      ),
      7,
    );
    assert.equal(tokenizerVocabSize(folder({ 'vocab.json': JSON.stringify({ a: 0, b: 1, c: 2 }) })), 3);
    assert.equal(tokenizerVocabSize(folder({ 'vocab.txt': '[PAD]\n[UNK]\nhello\n' })), 3);
    assert.equal(tokenizerVocabSize(folder({ 'config.json': '{}' })), undefined);
  });

  it('a file that is not a SentencePiece model is a clear error', () => {
    assert.equal(sentencePieceCount(sentencePieceModel(3)), 3);
    assert.throws(() => sentencePieceCount(Buffer.from([0x0a, 0x7f, 1, 2])), /not a SentencePiece model/);
    assert.throws(() => sentencePieceCount(Buffer.from([0x0b])), /wire type 3/);
  });

  it("another model's tokenizer must address the base's embedding rows", async () => {
    const model = async (rows: number, files: Record<string, string>): Promise<string> =>
      writeModel(
        path.join(tmp.dir, `m${k++}`),
        [
          {
            name: 'model.embed_tokens.weight',
            dtype: 'F32',
            shape: [rows, 2],
            values: new Array(rows * 2).fill(0.5),
          },
          { name: 'lm_head.weight', dtype: 'F32', shape: [rows, 2], values: new Array(rows * 2).fill(0.5) },
        ],
        { files },
      );
    const base = await openCheckpoint(await model(12, {}));
    const check = async (rows: number, vocab: number): Promise<void> =>
      checkTokenizerSource({
        source: await openCheckpoint(await model(rows, { 'tokenizer.json': tokenizerJson(vocab) })),
        sourceLabel: '"org/ft"',
        base,
      });
    await check(12, 12); // the same size
    await check(12, 10); // padded rows, as Qwen and Phi ship them: the source itself has the base's rows
    await assert.rejects(check(14, 14), (e: ModelStockError) => {
      assert.equal(e.code, 'BAD_CONFIG');
      assert.match(
        e.message,
        /tokenizer_source "org\/ft": its tokenizer has 14 tokens but the output's embedding model\.embed_tokens\.weight \(the base's shape\) has 12 rows; model-stock does not resize embeddings/,
      );
      return true;
    });
    await assert.rejects(check(10, 10), /its tokenizer has 10 tokens but .* has 12 rows/);
    assert.throws(() => checkTokenizerSource({ source: base, sourceLabel: '"x"', base }), /has no tokenizer/);
  });

  it('copying a tokenizer replaces every tokenizer file of the base, leaving no mix', async () => {
    const source = folder({ 'tokenizer.json': 'S', 'tokenizer_config.json': 'SC' });
    const out = folder({
      'tokenizer.json': 'B',
      'tokenizer_config.json': 'BC',
      'tokenizer.model': 'BSP',
      'config.json': 'keep',
    });
    assert.deepEqual(await copyTokenizer(source, out, false), ['tokenizer.json', 'tokenizer_config.json']);
    assert.deepEqual(fs.readdirSync(out).sort(), ['config.json', 'tokenizer.json', 'tokenizer_config.json']);
    assert.equal(fs.readFileSync(path.join(out, 'tokenizer.json'), 'utf8'), 'S');
    assert.equal(fs.readFileSync(path.join(out, 'config.json'), 'utf8'), 'keep');
  });

  it('a chat template goes into tokenizer_config.json (and chat_template.jinja when present)', async () => {
    const template = '{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}';
    const out = folder({ 'tokenizer_config.json': '{"bos_token": "<s>"}', 'chat_template.jinja': 'old' });
    assert.equal(await writeChatTemplate(out, template, false), undefined);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(out, 'tokenizer_config.json'), 'utf8')), {
      bos_token: '<s>',
      chat_template: template,
    });
    assert.equal(fs.readFileSync(path.join(out, 'chat_template.jinja'), 'utf8'), template);
    const bare = folder({});
    assert.match((await writeChatTemplate(bare, template, false)) ?? '', /no tokenizer_config\.json/);
    assert.deepEqual(fs.readdirSync(bare), []);
  });
});
