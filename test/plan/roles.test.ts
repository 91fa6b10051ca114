import { strict as assert } from 'node:assert';
import { EMBEDDING_NAMES, embeddingRole, type EmbeddingRole } from '../../lib/plan/embeddings';
import { classifyTensor, TensorClassifier, type TensorRole } from '../../lib/plan/roles';

type Want = [
  name: string,
  layer: number | undefined,
  kind: string,
  group: TensorRole['group'],
  vocab?: EmbeddingRole,
];

/** Names as each architecture's Hugging Face checkpoints spell them. */
const ARCHITECTURES: Record<string, Want[]> = {
  'LLaMA / Mistral / Qwen2': [
    ['model.embed_tokens.weight', undefined, 'model.embed_tokens', 'embedding', 'input-embedding'],
    ['model.layers.0.self_attn.q_proj.weight', 0, 'self_attn.q_proj', 'layer'],
    ['model.layers.31.self_attn.q_proj.bias', 31, 'self_attn.q_proj.bias', 'layer'],
    ['model.layers.7.mlp.down_proj.weight', 7, 'mlp.down_proj', 'layer'],
    ['model.layers.7.input_layernorm.weight', 7, 'input_layernorm', 'norm'],
    ['model.layers.7.post_attention_layernorm.weight', 7, 'post_attention_layernorm', 'norm'],
    ['model.layers.3.self_attn.q_norm.weight', 3, 'self_attn.q_norm', 'norm'], // Qwen3
    ['model.norm.weight', undefined, 'model.norm', 'norm'],
    ['lm_head.weight', undefined, 'lm_head', 'head', 'output-head'],
  ],
  'Mixtral (experts fold into one kind)': [
    ['model.layers.2.block_sparse_moe.experts.5.w1.weight', 2, 'block_sparse_moe.experts.*.w1', 'layer'],
    ['model.layers.2.block_sparse_moe.gate.weight', 2, 'block_sparse_moe.gate', 'layer'],
    ['model.layers.2.mlp.experts.127.down_proj.weight', 2, 'mlp.experts.*.down_proj', 'layer'],
  ],
  'Gemma 2': [
    ['model.layers.4.pre_feedforward_layernorm.weight', 4, 'pre_feedforward_layernorm', 'norm'],
    ['model.layers.4.post_feedforward_layernorm.weight', 4, 'post_feedforward_layernorm', 'norm'],
  ],
  'GPT-2': [
    ['transformer.wte.weight', undefined, 'transformer.wte', 'embedding', 'input-embedding'],
    ['transformer.wpe.weight', undefined, 'transformer.wpe', 'embedding'],
    ['transformer.h.11.attn.c_attn.weight', 11, 'attn.c_attn', 'layer'],
    ['transformer.h.11.attn.c_attn.bias', 11, 'attn.c_attn.bias', 'layer'],
    ['transformer.h.0.ln_1.weight', 0, 'ln_1', 'norm'],
    ['transformer.h.0.mlp.c_proj.weight', 0, 'mlp.c_proj', 'layer'],
    ['transformer.ln_f.bias', undefined, 'transformer.ln_f.bias', 'norm'],
  ],
  'GPT-NeoX / Pythia': [
    ['gpt_neox.embed_in.weight', undefined, 'gpt_neox.embed_in', 'embedding', 'input-embedding'],
    ['gpt_neox.layers.5.attention.query_key_value.weight', 5, 'attention.query_key_value', 'layer'],
    ['gpt_neox.layers.5.mlp.dense_4h_to_h.weight', 5, 'mlp.dense_4h_to_h', 'layer'],
    ['gpt_neox.final_layer_norm.weight', undefined, 'gpt_neox.final_layer_norm', 'norm'],
    ['embed_out.weight', undefined, 'embed_out', 'head', 'output-head'],
  ],
  Falcon: [
    [
      'transformer.word_embeddings.weight',
      undefined,
      'transformer.word_embeddings',
      'embedding',
      'input-embedding',
    ],
    ['transformer.h.9.self_attention.query_key_value.weight', 9, 'self_attention.query_key_value', 'layer'],
    ['transformer.h.9.ln_attn.weight', 9, 'ln_attn', 'norm'],
    ['transformer.h.9.mlp.dense_h_to_4h.weight', 9, 'mlp.dense_h_to_4h', 'layer'],
  ],
  'Phi-2': [
    ['model.layers.1.self_attn.dense.weight', 1, 'self_attn.dense', 'layer'],
    ['model.layers.1.mlp.fc1.bias', 1, 'mlp.fc1.bias', 'layer'],
    ['model.final_layernorm.weight', undefined, 'model.final_layernorm', 'norm'],
    ['lm_head.bias', undefined, 'lm_head.bias', 'head', 'output-head'],
  ],
  BERT: [
    [
      'bert.embeddings.word_embeddings.weight',
      undefined,
      'bert.embeddings.word_embeddings',
      'embedding',
      'input-embedding',
    ],
    [
      'bert.embeddings.position_embeddings.weight',
      undefined,
      'bert.embeddings.position_embeddings',
      'embedding',
    ],
    ['bert.embeddings.LayerNorm.weight', undefined, 'bert.embeddings.LayerNorm', 'norm'],
    ['bert.encoder.layer.10.attention.self.query.weight', 10, 'attention.self.query', 'layer'],
    ['bert.encoder.layer.10.attention.output.dense.weight', 10, 'attention.output.dense', 'layer'],
    ['bert.encoder.layer.10.output.dense.weight', 10, 'output.dense', 'layer'],
    ['bert.encoder.layer.10.output.LayerNorm.bias', 10, 'output.LayerNorm.bias', 'norm'],
    ['bert.pooler.dense.weight', undefined, 'bert.pooler.dense', 'head'],
    ['cls.predictions.decoder.weight', undefined, 'cls.predictions.decoder', 'head', 'output-head'],
    ['cls.predictions.transform.dense.weight', undefined, 'cls.predictions.transform.dense', 'head'],
    ['classifier.weight', undefined, 'classifier', 'head'],
  ],
  ViT: [
    ['vit.embeddings.cls_token', undefined, 'vit.embeddings.cls_token', 'embedding'],
    [
      'vit.embeddings.patch_embeddings.projection.weight',
      undefined,
      'vit.embeddings.patch_embeddings.projection',
      'embedding',
    ],
    ['vit.encoder.layer.3.layernorm_before.weight', 3, 'layernorm_before', 'norm'],
    ['vit.encoder.layer.3.intermediate.dense.weight', 3, 'intermediate.dense', 'layer'],
    ['vit.layernorm.weight', undefined, 'vit.layernorm', 'norm'],
  ],
  CLIP: [
    [
      'text_model.embeddings.token_embedding.weight',
      undefined,
      'text_model.embeddings.token_embedding',
      'embedding',
      undefined, // not in the plan's vocabulary table (embeddings.ts)
    ],
    [
      'vision_model.embeddings.class_embedding',
      undefined,
      'vision_model.embeddings.class_embedding',
      'embedding',
    ],
    ['vision_model.pre_layrnorm.weight', undefined, 'vision_model.pre_layrnorm', 'norm'],
    ['vision_model.encoder.layers.23.self_attn.k_proj.weight', 23, 'self_attn.k_proj', 'layer'],
    ['vision_model.encoder.layers.23.layer_norm1.weight', 23, 'layer_norm1', 'norm'],
    ['text_model.final_layer_norm.weight', undefined, 'text_model.final_layer_norm', 'norm'],
    ['visual_projection.weight', undefined, 'visual_projection', 'head'],
    ['logit_scale', undefined, 'logit_scale', 'other'],
  ],
  'T5 (the outer block is the layer)': [
    ['shared.weight', undefined, 'shared', 'embedding', 'input-embedding'],
    ['encoder.block.2.layer.0.SelfAttention.q.weight', 2, 'layer.0.SelfAttention.q', 'layer'],
    ['decoder.block.2.layer.2.DenseReluDense.wo.weight', 2, 'layer.2.DenseReluDense.wo', 'layer'],
  ],
  'wrapped names (PEFT, multimodal)': [
    ['base_model.model.model.layers.0.self_attn.v_proj.weight', 0, 'self_attn.v_proj', 'layer'],
    [
      'language_model.model.embed_tokens.weight',
      undefined,
      'language_model.model.embed_tokens',
      'embedding',
      'input-embedding',
    ],
    ['language_model.lm_head.weight', undefined, 'language_model.lm_head', 'head', 'output-head'],
  ],
  'names the table does not know': [
    ['model.position_ids', undefined, 'model.position_ids', 'other'],
    ['weight', undefined, 'weight', 'other'],
    ['model.layers.x.foo.weight', undefined, 'model.layers.x.foo', 'other'],
    ['model.layers.5', undefined, 'model.layers.5', 'other'],
    ['model.layers.5.weight', 5, 'weight', 'layer'],
    ['model.layers.5.bias', 5, 'bias', 'layer'],
  ],
};

describe('tensor roles (the shared name table)', () => {
  for (const [arch, cases] of Object.entries(ARCHITECTURES)) {
    it(arch, () => {
      for (const [name, layer, kind, group, vocab] of cases) {
        const r = classifyTensor(name);
        assert.deepEqual(
          { layer: r.layer, kind: r.kind, group: r.group, vocab: r.vocab },
          { layer, kind, group, vocab },
          name,
        );
      }
    });
  }

  it('a TensorClassifier (with its memo of name tails) agrees with classifyTensor, asked twice', () => {
    const classifier = new TensorClassifier();
    const names = Object.values(ARCHITECTURES).flatMap((cases) => cases.map(([name]) => name));
    for (const round of [1, 2]) {
      for (const name of names)
        assert.deepEqual(classifier.classify(name), classifyTensor(name), `${name} (${round})`);
    }
  });

  it('names the tower of a block, so towers with the same layer numbers stay apart', () => {
    assert.equal(
      classifyTensor('vision_model.encoder.layers.0.mlp.fc1.weight').stack,
      'vision_model.encoder',
    );
    assert.equal(classifyTensor('text_model.encoder.layers.0.mlp.fc1.weight').stack, 'text_model.encoder');
    assert.equal(classifyTensor('encoder.block.0.layer.0.SelfAttention.q.weight').stack, 'encoder');
    assert.equal(classifyTensor('decoder.block.0.layer.0.SelfAttention.q.weight').stack, 'decoder');
    assert.equal(classifyTensor('model.norm.weight').stack, undefined);
  });

  it("the vocabulary's tensors are exactly the plan's (EMBEDDING_NAMES), wrapped names too", () => {
    for (const { name, role } of EMBEDDING_NAMES) {
      for (const full of [name, `base_model.model.${name}`]) {
        const r = classifyTensor(full);
        assert.equal(r.vocab, role, full);
        assert.equal(r.vocab, embeddingRole(full), full);
        assert.equal(r.group, role === 'input-embedding' ? 'embedding' : 'head', full);
      }
    }
  });
});
