/**
 * What a tensor is, from its name alone: which repeated block (layer) it belongs to and what kind of
 * weight it is there, or — outside the blocks — whether it is an embedding, a final norm or a head.
 * One table for every consumer (the per-layer pictures, `npm start`'s table, and the plan's
 * embedding rules): the names below are data, matched segment by segment, not patterns spread
 * through the code.
 *
 * Names follow Hugging Face transformers' state dicts: dotted module paths ending in the parameter
 * (`weight`, `bias`) or naming a bare parameter (`vit.embeddings.cls_token`). Wrappers that prefix
 * every name (`base_model.model.`, `language_model.`) change nothing: matching looks at segments, not
 * at the start of the name.
 */

export type TensorGroup = 'embedding' | 'head' | 'norm' | 'layer' | 'other';

/**
 * Which end of the vocabulary a tensor sits at, when its first dimension is the vocabulary: the
 * token embedding (`input`) or the output projection (`output`). Tensors that grow when a fine-tune
 * adds tokens are exactly these.
 */
export type VocabRole = 'input' | 'output';

export interface TensorRole {
  /**
   * The repeated block's index (`model.layers.7.…` → 7), or undefined outside the blocks. Indices
   * restart in each stack (a CLIP vision and text tower both have a layer 0): see `stack`.
   */
  readonly layer: number | undefined;
  /**
   * The module path before the block container (`model`, `transformer`, `vision_model.encoder`);
   * undefined outside the blocks. Distinguishes the towers of a multi-tower model.
   */
  readonly stack: string | undefined;
  /**
   * Inside a block: the path after the index, `weight` dropped, `bias` kept, expert indices folded
   * to `*` (`self_attn.q_proj`, `self_attn.q_proj.bias`, `mlp.experts.*.w1`, `input_layernorm`).
   * Outside: the whole name with `weight` dropped (`model.embed_tokens`, `lm_head`).
   */
  readonly kind: string;
  readonly group: TensorGroup;
  readonly vocab?: VocabRole;
}

/**
 * A module name that places a tensor outside the blocks. `path` is one or more dotted segments that
 * must appear, consecutively, among the tensor's module segments (`predictions.decoder` matches
 * `cls.predictions.decoder.weight`). Rules are tried in order; the first match wins.
 */
export interface NameRule {
  readonly path: string;
  readonly group: Exclude<TensorGroup, 'layer'>;
  readonly vocab?: VocabRole;
}

/** Segments that, followed by a decimal index, mark a repeated block (a layer). */
export const LAYER_CONTAINERS: readonly string[] = [
  'layers', // LLaMA, Mistral, Qwen, Gemma, Phi, GPT-NeoX, CLIP (`encoder.layers`), BART
  'h', // GPT-2, GPT-J, Falcon, BLOOM (`transformer.h`)
  'layer', // BERT, RoBERTa, ViT (`encoder.layer`)
  'block', // T5 (`encoder.block`)
  'blocks', // timm ViT, MPT
  'resblocks', // OpenCLIP (`transformer.resblocks`)
];

/**
 * Segments whose index counts sub-modules of one kind inside a block: folded to `*` in the kind.
 * (Each must end in `experts`: the scan looks for that word.)
 */
export const REPEATED_SUBMODULES: readonly string[] = ['experts', 'local_experts'];

/**
 * Normalisation modules. A module is a norm when one of its segments equals one of these, or
 * contains `norm` (`input_layernorm`, `final_layer_norm`, `q_norm`, `LayerNorm`, CLIP's `pre_layrnorm`).
 */
export const NORM_SEGMENTS: readonly string[] = [
  'ln_f', // GPT-2, GPT-J, Falcon, BLOOM final norm
  'ln_1', // GPT-2 block norms
  'ln_2',
  'ln_attn', // Falcon 40B+ block norms
  'ln_mlp',
];

/** Outside the blocks: embeddings, heads and their vocabulary roles. Norms are found first. */
export const NAME_RULES: readonly NameRule[] = [
  // input embeddings of the vocabulary
  { path: 'embed_tokens', group: 'embedding', vocab: 'input' }, // LLaMA, Mistral, Qwen, Gemma, Phi
  { path: 'wte', group: 'embedding', vocab: 'input' }, // GPT-2, GPT-J
  { path: 'word_embeddings', group: 'embedding', vocab: 'input' }, // BERT, Falcon, BLOOM
  { path: 'embed_in', group: 'embedding', vocab: 'input' }, // GPT-NeoX, Pythia
  { path: 'token_embedding', group: 'embedding', vocab: 'input' }, // CLIP text tower
  { path: 'tok_embeddings', group: 'embedding', vocab: 'input' }, // Meta's original LLaMA layout
  { path: 'shared', group: 'embedding', vocab: 'input' }, // T5, BART
  // output projections onto the vocabulary
  { path: 'lm_head', group: 'head', vocab: 'output' },
  { path: 'embed_out', group: 'head', vocab: 'output' }, // GPT-NeoX
  { path: 'predictions.decoder', group: 'head', vocab: 'output' }, // BERT masked-LM
  // other embeddings: positions, token types, patches, class tokens
  { path: 'wpe', group: 'embedding' },
  { path: 'embed_positions', group: 'embedding' },
  { path: 'embeddings', group: 'embedding' }, // BERT, ViT, CLIP `….embeddings.*`
  { path: 'cls_token', group: 'embedding' },
  // other heads
  { path: 'predictions', group: 'head' }, // BERT masked-LM transform and bias
  { path: 'classifier', group: 'head' },
  { path: 'score', group: 'head' }, // …ForSequenceClassification
  { path: 'qa_outputs', group: 'head' },
  { path: 'pooler', group: 'head' },
  { path: 'visual_projection', group: 'head' }, // CLIP
  { path: 'text_projection', group: 'head' },
];

const LAYER_CONTAINER_SET = new Set(LAYER_CONTAINERS);
const REPEATED_SET = new Set(REPEATED_SUBMODULES);
const NORM_SET = new Set(NORM_SEGMENTS);

function isDigits(s: string, from: number, to: number): boolean {
  if (to <= from || to - from > 9) return false;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/** `norm` in any segment (`LayerNorm`, `q_norm`, `pre_layrnorm`), or a segment of NORM_SEGMENTS. */
function isNormPath(path: string): boolean {
  if (path.includes('norm') || path.includes('Norm') || path.includes('NORM')) return true;
  return path.includes('ln_') && path.split('.').some((seg) => NORM_SET.has(seg));
}

/** `experts.5.w1` → `experts.*.w1`: the index after any of REPEATED_SUBMODULES. */
function foldRepeated(path: string): string {
  for (let at = path.indexOf('experts.'); at >= 0; at = path.indexOf('experts.', at + 1)) {
    const segStart = path.lastIndexOf('.', at) + 1;
    const indexStart = at + 'experts.'.length;
    let indexEnd = path.indexOf('.', indexStart);
    if (indexEnd < 0) indexEnd = path.length;
    if (!isDigits(path, indexStart, indexEnd) || !REPEATED_SET.has(path.slice(segStart, indexStart - 1)))
      continue;
    path = `${path.slice(0, indexStart)}*${path.slice(indexEnd)}`;
  }
  return path;
}

function matches(rule: readonly string[], segments: readonly string[], end: number): boolean {
  const last = end - rule.length;
  for (let start = 0; start <= last; start++) {
    let k = 0;
    while (k < rule.length && rule[k] === segments[start + k]) k++;
    if (k === rule.length) return true;
  }
  return false;
}

const SPLIT_RULES = (rules: readonly NameRule[]): { rule: NameRule; path: string[] }[] =>
  rules.map((rule) => ({ rule, path: rule.path.split('.') }));
const DEFAULT_RULES = SPLIT_RULES(NAME_RULES);

/** Inside a block: the kind and group from the name's tail after the index (param included). */
type BlockKind = { readonly kind: string; readonly group: 'layer' | 'norm' };

function blockKind(tail: string, param: 'weight' | 'bias' | undefined): BlockKind {
  // `tail` is `rest.param`, `rest` alone, or just `param` (`model.layers.5.weight`).
  const rest = foldRepeated(
    param === undefined ? tail : tail === param ? '' : tail.slice(0, tail.length - param.length - 1),
  );
  return {
    kind: rest === '' ? (param as string) : param === 'bias' ? `${rest}.bias` : rest,
    group: isNormPath(rest) ? 'norm' : 'layer',
  };
}

/** A memo of tails is worth its memory up to here (a model has a few thousand distinct tails). */
const MEMO_LIMIT = 1 << 16;

function classify(
  name: string,
  extraRules: readonly NameRule[],
  memo: Map<string, BlockKind> | undefined,
): TensorRole {
  const param = name.endsWith('.weight') ? 'weight' : name.endsWith('.bias') ? 'bias' : undefined;
  // The module path is name[0, stop).
  const stop = param === undefined ? name.length : name.length - param.length - 1;

  let prev = -1;
  for (let seg = 0; seg < stop;) {
    let dot = name.indexOf('.', seg);
    if (dot < 0 || dot > stop) dot = stop;
    if (prev >= 0 && isDigits(name, seg, dot) && LAYER_CONTAINER_SET.has(name.slice(prev, seg - 1))) {
      // A name that ends at the index (`model.layers.5`) is no parameter of the block.
      if (dot < stop || param !== undefined) {
        const tail = name.slice(dot + 1);
        let block = memo?.get(tail);
        if (block === undefined) {
          block = blockKind(tail, param);
          if (memo !== undefined && memo.size < MEMO_LIMIT) memo.set(tail, block);
        }
        return {
          layer: Number(name.slice(seg, dot)),
          stack: prev === 0 ? '' : name.slice(0, prev - 1),
          kind: block.kind,
          group: block.group,
        };
      }
    }
    prev = seg;
    seg = dot + 1;
  }

  const segments = name.split('.');
  const end = param === undefined ? segments.length : segments.length - 1;
  const kind = param === 'weight' ? name.slice(0, name.length - '.weight'.length) : name;
  const outside = { layer: undefined, stack: undefined, kind };
  if (isNormPath(name.slice(0, stop))) return { ...outside, group: 'norm' };
  const rules = extraRules.length === 0 ? DEFAULT_RULES : [...SPLIT_RULES(extraRules), ...DEFAULT_RULES];
  for (const { rule, path } of rules) {
    if (!matches(path, segments, end)) continue;
    return rule.vocab === undefined
      ? { ...outside, group: rule.group }
      : { ...outside, group: rule.group, vocab: rule.vocab };
  }
  return { ...outside, group: 'other' };
}

/**
 * The role of one tensor. `extraRules` are tried before NAME_RULES (e.g. rules a model's config.json
 * implies for names this table does not know). Pure; names inside blocks — nearly all of a model's —
 * are scanned in place without splitting.
 */
export function classifyTensor(name: string, extraRules: readonly NameRule[] = []): TensorRole {
  return classify(name, extraRules, undefined);
}

/**
 * classifyTensor for every tensor of one model: the same results, with the part of a name after the
 * layer index remembered, since every layer repeats it. Use one per model and let it go.
 */
export class TensorClassifier {
  private readonly memo = new Map<string, BlockKind>();
  constructor(private readonly extraRules: readonly NameRule[] = []) {}

  classify(name: string): TensorRole {
    return classify(name, this.extraRules, this.memo);
  }
}
