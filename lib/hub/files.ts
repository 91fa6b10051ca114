/**
 * Which files of a model repository a merge needs: the safetensors weights openCheckpoint will read
 * (the index and its shards, or model.safetensors, or a lone *.safetensors) and the small files the
 * output takes from its models (config, generation config, tokenizer). Never `.bin`/`.pt`/`.gguf`
 * duplicates of the weights, READMEs or other repositories' extras.
 */
import { INDEX_FILE, SINGLE_FILE } from '../checkpoint/open';
import { TOKENIZER_FILES } from '../output/tokenizer';

/** Root-level files fetched beside the weights when the repository has them. */
export const SIDE_FILES: readonly string[] = ['config.json', 'generation_config.json', ...TOKENIZER_FILES];

export type WeightChoice =
  | { readonly kind: 'index' }
  | { readonly kind: 'single'; readonly file: string }
  | { readonly kind: 'none'; readonly why: string };

/** The rule of openCheckpoint, applied to a listing (repository root, or a snapshot folder). */
export function chooseWeights(rootFiles: ReadonlySet<string>): WeightChoice {
  if (rootFiles.has(INDEX_FILE)) return { kind: 'index' };
  if (rootFiles.has(SINGLE_FILE)) return { kind: 'single', file: SINGLE_FILE };
  const candidates = [...rootFiles].filter((f) => f.endsWith('.safetensors')).sort();
  const [only] = candidates;
  if (only !== undefined && candidates.length === 1) return { kind: 'single', file: only };
  if (candidates.length > 1) {
    return {
      kind: 'none',
      why: `${candidates.length} .safetensors files (${candidates.join(', ')}) but no ${INDEX_FILE}`,
    };
  }
  const others = [...rootFiles].filter((f) => /\.(bin|pt|pth|ckpt|gguf|h5|msgpack)$/i.test(f)).sort();
  return {
    kind: 'none',
    why:
      others.length > 0
        ? `no .safetensors weights (only ${others.slice(0, 3).join(', ')}${others.length > 3 ? ', …' : ''}); model-stock reads safetensors only`
        : 'no .safetensors weights',
  };
}

/**
 * The shard names of an index, checked as openCheckpoint checks them (plain file names). Throws a
 * message (the caller adds where) when the index is not one.
 */
export function indexShards(text: string): string[] {
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (e) {
    throw new Error(`${INDEX_FILE} is not valid JSON (${(e as Error).message})`);
  }
  const map = (root as { weight_map?: unknown } | null)?.weight_map;
  if (map === null || typeof map !== 'object' || Array.isArray(map)) {
    throw new Error(`${INDEX_FILE} has no "weight_map" object`);
  }
  const shards = new Set<string>();
  for (const v of Object.values(map as Record<string, unknown>)) {
    if (typeof v !== 'string' || !isPlainFileName(v)) {
      throw new Error(`${INDEX_FILE} names ${JSON.stringify(v)}, not a plain file name`);
    }
    shards.add(v);
  }
  if (shards.size === 0) throw new Error(`${INDEX_FILE} names no shard`);
  return [...shards].sort();
}

export function isPlainFileName(s: string): boolean {
  return s !== '' && s !== '.' && !s.includes('..') && !/[/\\\0]/.test(s);
}
