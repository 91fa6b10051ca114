/**
 * Which tensors are vocabulary embeddings: the input embedding (token id → vector) and the output head
 * (vector → token logits), whose first dimension is the vocabulary. Fine-tunes that added tokens
 * (ChatML, a pad token, tool-call tokens) grow exactly these, and only these may differ from the base in
 * that dimension (docs/merge-contract.md).
 *
 * Roles come from a documented name table, narrowed by the architecture `config.json` names when there
 * is one: an entry matches a tensor whose name is the entry or ends with "." + the entry, so wrappers
 * that prefix the language model (LLaVA's `language_model.`, PEFT's `base_model.model.`) match too.
 */
export type EmbeddingRole = 'input-embedding' | 'output-head';

interface RoleEntry {
  readonly name: string;
  readonly role: EmbeddingRole;
  /** config.json `architectures` this spelling belongs to; undefined: any. */
  readonly architectures?: readonly string[];
}

const LLAMA_LIKE = [
  'LlamaForCausalLM',
  'MistralForCausalLM',
  'MixtralForCausalLM',
  'Qwen2ForCausalLM',
  'Qwen2MoeForCausalLM',
  'Qwen3ForCausalLM',
  'Qwen3MoeForCausalLM',
  'GemmaForCausalLM',
  'Gemma2ForCausalLM',
  'Gemma3ForCausalLM',
  'Phi3ForCausalLM',
  'PhiForCausalLM',
  'StableLmForCausalLM',
  'OlmoForCausalLM',
  'Olmo2ForCausalLM',
  'CohereForCausalLM',
  'GraniteForCausalLM',
  'InternLM2ForCausalLM',
  'DeepseekV2ForCausalLM',
  'DeepseekV3ForCausalLM',
  'OPTForCausalLM',
  'LlavaForConditionalGeneration',
];

/** The name table. Add a row here, with its architectures, to teach the planner a new spelling. */
export const EMBEDDING_NAMES: readonly RoleEntry[] = [
  // LLaMA family (and every architecture that copied its names), OPT's decoder
  { name: 'model.embed_tokens.weight', role: 'input-embedding', architectures: LLAMA_LIKE },
  { name: 'model.decoder.embed_tokens.weight', role: 'input-embedding', architectures: LLAMA_LIKE },
  { name: 'lm_head.weight', role: 'output-head' },
  { name: 'lm_head.bias', role: 'output-head' },
  // GPT-2, GPT-J, Qwen (v1), MPT, CodeGen
  { name: 'transformer.wte.weight', role: 'input-embedding' },
  // BLOOM, Falcon
  { name: 'transformer.word_embeddings.weight', role: 'input-embedding' },
  // GPT-NeoX, Pythia
  { name: 'gpt_neox.embed_in.weight', role: 'input-embedding' },
  { name: 'embed_out.weight', role: 'output-head' },
  // Phi-1/2 (original code)
  { name: 'transformer.embd.wte.weight', role: 'input-embedding' },
  { name: 'lm_head.linear.weight', role: 'output-head' },
  { name: 'lm_head.linear.bias', role: 'output-head' },
  // Mamba
  { name: 'backbone.embeddings.weight', role: 'input-embedding' },
  // T5 / BART: the shared embedding and its per-stack copies
  { name: 'shared.weight', role: 'input-embedding' },
  { name: 'encoder.embed_tokens.weight', role: 'input-embedding' },
  { name: 'decoder.embed_tokens.weight', role: 'input-embedding' },
  { name: 'final_logits_bias', role: 'output-head' },
  // BERT, RoBERTa and their masked-LM heads
  { name: 'embeddings.word_embeddings.weight', role: 'input-embedding' },
  { name: 'word_embeddings.weight', role: 'input-embedding' },
  { name: 'cls.predictions.decoder.weight', role: 'output-head' },
  { name: 'cls.predictions.decoder.bias', role: 'output-head' },
  { name: 'cls.predictions.bias', role: 'output-head' },
  { name: 'lm_head.decoder.weight', role: 'output-head' },
  { name: 'lm_head.decoder.bias', role: 'output-head' },
];

/** What config.json says about the model's embeddings (every field optional: it may be absent). */
export interface ModelConfig {
  readonly architectures?: readonly string[];
  /** transformers' default is true when absent (most causal LMs set it explicitly). */
  readonly tieWordEmbeddings?: boolean;
}

/** Reads the fields the planner needs from a parsed config.json; anything malformed counts as absent. */
export function modelConfigOf(json: unknown): ModelConfig {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) return {};
  const c = json as Record<string, unknown>;
  const archs = Array.isArray(c.architectures)
    ? c.architectures.filter((a): a is string => typeof a === 'string')
    : undefined;
  const tie = typeof c.tie_word_embeddings === 'boolean' ? c.tie_word_embeddings : undefined;
  return {
    ...(archs !== undefined && archs.length > 0 ? { architectures: archs } : {}),
    ...(tie !== undefined ? { tieWordEmbeddings: tie } : {}),
  };
}

const KNOWN_ARCHITECTURES = new Set(EMBEDDING_NAMES.flatMap((e) => e.architectures ?? []));

/**
 * The tensor's embedding role, or undefined when it is not a vocabulary embedding. An architecture the
 * table knows admits only its own spellings; an unknown one (a new model family) is matched by name alone.
 */
export function embeddingRole(name: string, config: ModelConfig = {}): EmbeddingRole | undefined {
  const known = config.architectures?.filter((a) => KNOWN_ARCHITECTURES.has(a)) ?? [];
  for (const entry of EMBEDDING_NAMES) {
    if (name !== entry.name && !name.endsWith(`.${entry.name}`)) continue;
    if (entry.architectures !== undefined && known.length > 0) {
      if (!known.some((a) => entry.architectures!.includes(a))) continue;
    }
    return entry.role;
  }
  return undefined;
}
