/**
 * Which files of a model repository a merge needs: the weights openCheckpoint will read (the rule of
 * lib/checkpoint/folder.ts: a LoRA adapter's adapter_config.json and its adapter_model.safetensors (else
 * adapter_model.bin) when the repository has the config; safetensors when it has them — the index and its shards, or
 * model.safetensors, or a lone *.safetensors —, else PyTorch's pytorch_model.bin or its index and
 * shards) and the small files the output takes from its models (config, generation config, tokenizer).
 * Never a second copy of the weights in another format, READMEs or other repositories' extras.
 */
import { TOKENIZER_FILES } from '../output/tokenizer';

export { chooseWeights, type WeightChoice } from '../checkpoint/folder';

/** Root-level files fetched beside the weights when the repository has them. */
export const SIDE_FILES: readonly string[] = ['config.json', 'generation_config.json', ...TOKENIZER_FILES];

/**
 * The shard names of an index (`indexName`), checked as openCheckpoint checks them (plain file names).
 * Throws a message (the caller adds where) when the index is not one.
 */
export function indexShards(text: string, indexName: string): string[] {
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (e) {
    throw new Error(`${indexName} is not valid JSON (${(e as Error).message})`);
  }
  const map = (root as { weight_map?: unknown } | null)?.weight_map;
  if (map === null || typeof map !== 'object' || Array.isArray(map)) {
    throw new Error(`${indexName} has no "weight_map" object`);
  }
  const shards = new Set<string>();
  for (const v of Object.values(map as Record<string, unknown>)) {
    if (typeof v !== 'string' || !isPlainFileName(v)) {
      throw new Error(`${indexName} names ${JSON.stringify(v)}, not a plain file name`);
    }
    shards.add(v);
  }
  if (shards.size === 0) throw new Error(`${indexName} names no shard`);
  return [...shards].sort();
}

export function isPlainFileName(s: string): boolean {
  return s !== '' && s !== '.' && !s.includes('..') && !/[/\\\0]/.test(s);
}
