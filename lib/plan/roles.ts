/**
 * What a tensor is, from its name: which repeated block (layer) it belongs to and what kind of weight
 * it is there, or — outside the blocks — whether it is an embedding, a final norm or a head. The
 * names below are data, matched segment by segment, not patterns spread through the code; which
 * tensors hold the vocabulary comes from the plan's own table (embeddings.ts), so the pictures and
 * the merge's embedding rules never disagree.
 *
 * Names follow Hugging Face transformers' state dicts: dotted module paths ending in the parameter
 * (`weight`, `bias`) or naming a bare parameter (`vit.embeddings.cls_token`). Wrappers that prefix
 * every name (`base_model.model.`, `language_model.`) change nothing: matching looks at segments, not
 * at the start of the name.
 */
import { embeddingRole, type EmbeddingRole, type ModelConfig } from './embeddings';

export type TensorGroup = 'embedding' | 'head' | 'norm' | 'layer' | 'other';

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
  /** Set for the vocabulary's input embedding and output head (EMBEDDING_NAMES in embeddings.ts). */
  readonly vocab?: EmbeddingRole;
}

/**
 * A module name that places a tensor outside the blocks. `path` is one or more dotted segments that
 * must appear, consecutively, among the tensor's module segments (`predictions.decoder` matches
 * `cls.predictions.decoder.weight`). Rules are tried in order; the first match wins.
 */
export interface NameRule {
  readonly path: string;
  readonly group: Exclude<TensorGroup, 'layer'>;
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

/**
 * Outside the blocks: the other embeddings and heads, by module segment. The vocabulary's own
 * tensors (token embeddings, LM heads) are not listed here: they come first, from EMBEDDING_NAMES in
 * embeddings.ts, the table the plan's vocabulary rules use. Norms are found next, then these.
 */
export const NAME_RULES: readonly NameRule[] = [
  // positions, token types, patches, class tokens
  { path: 'wpe', group: 'embedding' }, // GPT-2
  { path: 'embed_positions', group: 'embedding' },
  { path: 'embeddings', group: 'embedding' }, // BERT, ViT, CLIP `….embeddings.*`
  { path: 'cls_token', group: 'embedding' },
  { path: 'predictions', group: 'head' }, // BERT masked-LM
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

const RULES = NAME_RULES.map((rule) => ({ rule, path: rule.path.split('.') }));

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

/** What a classifier remembers between names: block tails, and the last stack (one string object). */
interface Memo {
  readonly tails: Map<string, BlockKind>;
  stack: string;
}

function classify(name: string, config: ModelConfig, memo: Memo | undefined): TensorRole {
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
        let block = memo?.tails.get(tail);
        if (block === undefined) {
          block = blockKind(tail, param);
          if (memo !== undefined && memo.tails.size < MEMO_LIMIT) memo.tails.set(tail, block);
        }
        let layer = 0;
        for (let i = seg; i < dot; i++) layer = layer * 10 + name.charCodeAt(i) - 48;
        let stack = prev === 0 ? '' : undefined;
        // Reusing one string per stack spares an allocation, and its hash, per tensor.
        if (
          stack === undefined &&
          memo !== undefined &&
          memo.stack.length === prev - 1 &&
          name.startsWith(memo.stack)
        )
          stack = memo.stack;
        if (stack === undefined) {
          stack = name.slice(0, prev - 1);
          if (memo !== undefined) memo.stack = stack;
        }
        return { layer, stack, kind: block.kind, group: block.group };
      }
    }
    prev = seg;
    seg = dot + 1;
  }

  const kind = param === 'weight' ? name.slice(0, name.length - '.weight'.length) : name;
  const outside = { layer: undefined, stack: undefined, kind };
  const vocab = embeddingRole(name, config);
  if (vocab !== undefined)
    return { ...outside, group: vocab === 'input-embedding' ? 'embedding' : 'head', vocab };
  if (isNormPath(name.slice(0, stop))) return { ...outside, group: 'norm' };
  const segments = name.split('.');
  const end = param === undefined ? segments.length : segments.length - 1;
  for (const { rule, path } of RULES)
    if (matches(path, segments, end)) return { ...outside, group: rule.group };
  return { ...outside, group: 'other' };
}

/**
 * The role of one tensor. `config` (the model's config.json, read by modelConfigOf) narrows which
 * spellings count as the vocabulary's tensors, as in the plan. Pure; names inside blocks — nearly all
 * of a model's — are scanned in place without splitting.
 */
export function classifyTensor(name: string, config: ModelConfig = {}): TensorRole {
  return classify(name, config, undefined);
}

/**
 * classifyTensor for every tensor of one model: the same results, with the part of a name after the
 * layer index remembered, since every layer repeats it. Use one per model and let it go.
 */
export class TensorClassifier {
  private readonly memo: Memo = { tails: new Map(), stack: '' };
  constructor(private readonly config: ModelConfig = {}) {}

  classify(name: string): TensorRole {
    return classify(name, this.config, this.memo);
  }
}
