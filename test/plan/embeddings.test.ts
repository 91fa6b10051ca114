import { strict as assert } from 'node:assert';
import { embeddingRole, modelConfigOf } from '../../lib/plan/embeddings';

describe('embedding roles (the name table)', () => {
  it('knows the input embeddings and output heads of the architectures users merge', () => {
    const cases: [string, string | undefined][] = [
      ['model.embed_tokens.weight', 'input-embedding'],
      ['lm_head.weight', 'output-head'],
      ['transformer.wte.weight', 'input-embedding'],
      ['transformer.word_embeddings.weight', 'input-embedding'],
      ['gpt_neox.embed_in.weight', 'input-embedding'],
      ['embed_out.weight', 'output-head'],
      ['bert.embeddings.word_embeddings.weight', 'input-embedding'],
      ['cls.predictions.bias', 'output-head'],
      ['language_model.model.embed_tokens.weight', 'input-embedding'],
      ['language_model.lm_head.weight', 'output-head'],
      ['model.layers.0.mlp.down_proj.weight', undefined],
      ['model.norm.weight', undefined],
      ['transformer.wpe.weight', undefined], // positions, not vocabulary
      ['my_lm_head.weight', undefined], // a suffix match needs the dot
    ];
    for (const [name, role] of cases) assert.equal(embeddingRole(name), role, name);
  });

  it('an architecture the table knows admits only its own spellings; an unknown one goes by name', () => {
    const llama = { architectures: ['LlamaForCausalLM'] };
    assert.equal(embeddingRole('model.embed_tokens.weight', llama), 'input-embedding');
    assert.equal(
      embeddingRole('model.embed_tokens.weight', { architectures: ['MistralForCausalLM'] }),
      'input-embedding',
    );
    assert.equal(
      embeddingRole('model.embed_tokens.weight', { architectures: ['SomeNewForCausalLM'] }),
      'input-embedding',
    );
    assert.equal(embeddingRole('lm_head.weight', llama), 'output-head');
  });

  it('reads architectures and tie_word_embeddings from config.json, ignoring malformed fields', () => {
    assert.deepEqual(modelConfigOf({ architectures: ['LlamaForCausalLM'], tie_word_embeddings: false }), {
      architectures: ['LlamaForCausalLM'],
      tieWordEmbeddings: false,
    });
    assert.deepEqual(modelConfigOf({ architectures: 'Llama', tie_word_embeddings: 'yes' }), {});
    assert.deepEqual(modelConfigOf(null), {});
    assert.deepEqual(modelConfigOf([1]), {});
  });
});
