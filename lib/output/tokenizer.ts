/**
 * The output's tokenizer when it is not the base's: mergekit's `tokenizer_source` naming another
 * model of the merge, and `chat_template`. model-stock keeps the base's embedding shape, so another
 * model's tokenizer is only usable when it addresses exactly those rows; no vocabulary is merged and no
 * embedding resized (mergekit's `union` and token surgery are refused upstream).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelStockError } from '../errors';
import type { Checkpoint } from '../checkpoint/types';
import { copyFileSynced, writeFileSynced } from './atomic';
import { onPath } from './fsops';

/** The files that make up a Hugging Face tokenizer (transformers' names, mergekit's copy list). */
export const TOKENIZER_FILES: readonly string[] = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'tokenizer.model',
  'vocab.json',
  'merges.txt',
  'vocab.txt',
  'added_tokens.json',
  'chat_template.jinja',
  'chat_template.json',
];

/** Suffixes of input-embedding tensor names across the architectures transformers ships. */
const EMBEDDING_SUFFIXES = [
  'embed_tokens.weight',
  'wte.weight',
  'word_embeddings.weight',
  'embed_in.weight',
  'tok_embeddings.weight',
];

/** The input embedding: the first rank-2 tensor named like one. */
export function inputEmbedding(cp: Checkpoint): { name: string; rows: number } | undefined {
  for (const name of cp.order) {
    const t = cp.tensors.get(name);
    if (t !== undefined && t.shape.length === 2 && EMBEDDING_SUFFIXES.some((s) => name.endsWith(s))) {
      return { name, rows: t.shape[0] as number };
    }
  }
  return undefined;
}

/**
 * The number of distinct token ids a tokenizer folder defines (transformers' `len(get_vocab())`):
 * tokenizer.json (model vocabulary ∪ added tokens), else a SentencePiece tokenizer.model, vocab.json
 * or vocab.txt, each with added_tokens.json. Undefined when there is no tokenizer there.
 */
export function tokenizerVocabSize(dir: string): number | undefined {
  const read = (name: string): Buffer | undefined => {
    try {
      return fs.readFileSync(path.join(dir, name));
    } catch {
      return undefined;
    }
  };
  const ids = new Set<number>();
  const json = (name: string, bytes: Buffer): unknown => {
    try {
      return JSON.parse(bytes.toString('utf8'));
    } catch (e) {
      throw new ModelStockError('BAD_CONFIG', `not valid JSON: ${(e as Error).message}`, {
        file: path.join(dir, name),
      });
    }
  };
  const addIds = (values: Iterable<unknown>): void => {
    for (const v of values) if (Number.isSafeInteger(v)) ids.add(v as number);
  };

  const tokenizerJson = read('tokenizer.json');
  if (tokenizerJson !== undefined) {
    const t = json('tokenizer.json', tokenizerJson) as {
      model?: { vocab?: unknown };
      added_tokens?: { id?: unknown }[];
    };
    const vocab = t?.model?.vocab;
    // BPE / WordPiece / WordLevel: token → id; Unigram: [[piece, score], …] in id order.
    if (Array.isArray(vocab)) vocab.forEach((_, i) => ids.add(i));
    else if (vocab !== null && typeof vocab === 'object') addIds(Object.values(vocab));
    if (Array.isArray(t?.added_tokens)) addIds(t.added_tokens.map((a) => a?.id));
    return ids.size > 0 ? ids.size : undefined;
  }
  const sentencePiece = read('tokenizer.model');
  const vocabJson = read('vocab.json');
  const vocabTxt = read('vocab.txt');
  if (sentencePiece !== undefined) {
    const n = sentencePieceCount(sentencePiece);
    for (let i = 0; i < n; i++) ids.add(i);
  } else if (vocabJson !== undefined) {
    addIds(Object.values((json('vocab.json', vocabJson) as Record<string, unknown>) ?? {}));
  } else if (vocabTxt !== undefined) {
    const lines = vocabTxt.toString('utf8').split('\n');
    if (lines[lines.length - 1] === '') lines.pop();
    lines.forEach((_, i) => ids.add(i));
  } else {
    return undefined;
  }
  const added = read('added_tokens.json');
  if (added !== undefined) addIds(Object.values((json('added_tokens.json', added) as object) ?? {}));
  return ids.size > 0 ? ids.size : undefined;
}

/**
 * Pieces in a SentencePiece ModelProto: the count of top-level field 1 (`repeated SentencePiece
 * pieces`), read from the protobuf wire format without a protobuf library.
 */
export function sentencePieceCount(bytes: Uint8Array): number {
  let pos = 0;
  let count = 0;
  const varint = (): number => {
    let result = 0;
    let shift = 1;
    for (let i = 0; i < 10; i++) {
      if (pos >= bytes.length) throw new Error('truncated varint');
      const b = bytes[pos++] as number;
      result += (b & 0x7f) * shift;
      if ((b & 0x80) === 0) return result;
      shift *= 128;
    }
    throw new Error('varint too long');
  };
  try {
    while (pos < bytes.length) {
      const key = varint();
      const field = Math.floor(key / 8);
      const wire = key % 8;
      if (wire === 0) varint();
      else if (wire === 1) pos += 8;
      else if (wire === 5) pos += 4;
      else if (wire === 2) {
        const len = varint();
        if (field === 1) count++;
        pos += len;
      } else throw new Error(`wire type ${wire}`);
      if (pos > bytes.length) throw new Error('field runs past the end');
    }
  } catch (e) {
    throw new ModelStockError(
      'BAD_CONFIG',
      `tokenizer.model is not a SentencePiece model (${(e as Error).message})`,
    );
  }
  return count;
}

/**
 * Refuses another model's tokenizer unless its ids address exactly the output's embedding rows (the
 * base's): the same size, or smaller when that model's own embedding has those rows too (vocabularies
 * padded to a multiple, as Qwen's and Phi's are). Called before any tensor is merged.
 */
export function checkTokenizerSource(o: {
  readonly source: Checkpoint;
  readonly sourceLabel: string;
  readonly base: Checkpoint;
}): void {
  const bad = (m: string): ModelStockError =>
    new ModelStockError('BAD_CONFIG', `tokenizer_source ${o.sourceLabel}: ${m}`, { file: o.source.dir });
  const embedding = inputEmbedding(o.base);
  if (embedding === undefined) {
    throw bad(
      "cannot find the base's input embedding (…embed_tokens.weight, …wte.weight, …) to check the vocabulary against; use tokenizer_source: base",
    );
  }
  const vocab = tokenizerVocabSize(o.source.dir);
  if (vocab === undefined) {
    throw bad('has no tokenizer (tokenizer.json, tokenizer.model, vocab.json or vocab.txt)');
  }
  if (vocab === embedding.rows) return;
  const own = inputEmbedding(o.source);
  if (vocab < embedding.rows && own !== undefined && own.rows === embedding.rows) return;
  throw bad(
    `its tokenizer has ${vocab} tokens but the output's embedding ${embedding.name} (the base's shape) has ` +
      `${embedding.rows} rows; model-stock does not resize embeddings or merge vocabularies — use ` +
      'tokenizer_source: base, or a model whose tokenizer matches the base',
  );
}

/**
 * Replaces the tokenizer files in `outDir` (copied from the base) by `sourceDir`'s: the base's are
 * removed first so no file of one tokenizer is left beside the other's.
 */
export async function copyTokenizer(sourceDir: string, outDir: string, fsync: boolean): Promise<string[]> {
  const copied: string[] = [];
  for (const name of TOKENIZER_FILES) {
    const to = path.join(outDir, name);
    await onPath(to, 'cannot remove', () => fs.promises.rm(to, { force: true }));
    const from = path.join(sourceDir, name);
    const st = await fs.promises.stat(from).catch(() => undefined);
    if (st === undefined || !st.isFile()) continue;
    await copyFileSynced(from, to, fsync);
    copied.push(name);
  }
  return copied;
}

/** mergekit's test for a literal template (its other values name bundled files or mean "auto"). */
export function isTemplateString(s: string): boolean {
  return s.length >= 20 && s.includes('{');
}

/**
 * Writes a chat template into the output's tokenizer_config.json, and into chat_template.jinja /
 * chat_template.json when the output has them (transformers prefers those files). Returns a warning
 * when there is no tokenizer config to write it into.
 */
export async function writeChatTemplate(
  outDir: string,
  template: string,
  fsync: boolean,
): Promise<string | undefined> {
  const configFile = path.join(outDir, 'tokenizer_config.json');
  const update = async (file: string): Promise<boolean> => {
    let text: string;
    try {
      text = await fs.promises.readFile(file, 'utf8');
    } catch {
      return false;
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      throw new ModelStockError(
        'BAD_CONFIG',
        `cannot set chat_template: not valid JSON (${(e as Error).message})`,
        {
          file,
        },
      );
    }
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
      throw new ModelStockError('BAD_CONFIG', 'cannot set chat_template: not a JSON object', { file });
    }
    const updated = { ...(doc as Record<string, unknown>), chat_template: template };
    // writeFileSynced writes in place: the file is our own copy in the staging folder.
    await onPath(file, 'cannot remove', () => fs.promises.rm(file));
    await writeFileSynced(file, JSON.stringify(updated, null, 2) + '\n', fsync);
    return true;
  };
  const wrote = await update(configFile);
  await update(path.join(outDir, 'chat_template.json'));
  const jinja = path.join(outDir, 'chat_template.jinja');
  if (
    await fs.promises.stat(jinja).then(
      () => true,
      () => false,
    )
  ) {
    await onPath(jinja, 'cannot remove', () => fs.promises.rm(jinja));
    await writeFileSynced(jinja, template, fsync);
  }
  return wrote
    ? undefined
    : 'chat_template: the output has no tokenizer_config.json (none in the tokenizer source), so the template was not saved';
}
