/**
 * Which files of a model folder are its weights: the rule openCheckpoint applies to a folder and the
 * Hub applies to a repository's listing (so it downloads exactly what will be read). For each format in
 * order of preference (formats.ts): its shard index, else its single file, else (safetensors) one lone
 * file of its kind. Weights of a later format found beside the chosen ones are named, to be said.
 */
import { FORMATS } from './formats';
import type { CheckpointFormat } from './types';

export type WeightChoice =
  | {
      readonly kind: 'index' | 'single';
      readonly format: CheckpointFormat;
      /** The index, or the single weight file. */
      readonly file: string;
      /** Other files the format reads beside `file` (an adapter's weights beside its config). */
      readonly also: readonly string[];
      /** Weight files of other formats in the folder, left aside. */
      readonly shadowed: readonly string[];
    }
  | { readonly kind: 'none'; readonly code: 'NO_CHECKPOINT' | 'INVALID_INDEX'; readonly why: string };

type Found =
  | { kind: 'index' | 'single'; file: string; also: readonly string[] }
  | { kind: 'ambiguous'; files: string[] }
  | { kind: 'unreadable'; why: string }
  | undefined;

function find(format: CheckpointFormat, names: ReadonlySet<string>): Found {
  if (format.indexFile !== undefined && names.has(format.indexFile))
    return { kind: 'index', file: format.indexFile, also: [] };
  if (names.has(format.singleFile)) {
    const also = format.companions?.(names) ?? [];
    if (typeof also === 'string') return { kind: 'unreadable', why: also };
    return { kind: 'single', file: format.singleFile, also };
  }
  const lone = format.isLoneFile;
  if (lone === undefined) return undefined;
  const candidates = [...names].filter((n) => lone(n)).sort();
  if (candidates.length === 1) return { kind: 'single', file: candidates[0] as string, also: [] };
  return candidates.length > 1 ? { kind: 'ambiguous', files: candidates } : undefined;
}

/** `names`: the regular files at the folder's root. */
export function chooseWeights(names: ReadonlySet<string>): WeightChoice {
  let chosen:
    { format: CheckpointFormat; kind: 'index' | 'single'; file: string; also: readonly string[] } | undefined;
  let ambiguous: { format: CheckpointFormat; files: string[] } | undefined;
  const shadowed: string[] = [];
  for (const format of FORMATS) {
    const found = find(format, names);
    if (found === undefined) continue;
    if (found.kind === 'unreadable') {
      // The first format's marker decides (a folder with adapter_config.json is an adapter).
      if (chosen === undefined) return { kind: 'none', code: 'NO_CHECKPOINT', why: found.why };
    } else if (found.kind === 'ambiguous') {
      ambiguous ??= { format, files: found.files };
    } else if (chosen === undefined) {
      chosen = { format, ...found };
    } else if (!chosen.also.includes(found.file)) {
      shadowed.push(found.file);
    }
  }
  if (chosen !== undefined) return { ...chosen, shadowed };
  if (ambiguous !== undefined) {
    // Without an index we cannot know whether these are shards of one model or several models.
    return {
      kind: 'none',
      code: 'INVALID_INDEX',
      why: `${ambiguous.files.length} .${ambiguous.format.name} files (${ambiguous.files.join(', ')}) but no ${ambiguous.format.indexFile ?? 'index'} to say how they fit together`,
    };
  }
  const expected = FORMATS.flatMap((f) => [
    f.singleFile,
    ...(f.indexFile !== undefined ? [f.indexFile] : []),
    ...(f.isLoneFile ? [`*.${f.name}`] : []),
  ]);
  const some = (re: RegExp): string[] => [...names].filter((n) => re.test(n)).sort();
  const shown = (files: string[]): string => files.slice(0, 3).join(', ') + (files.length > 3 ? ', …' : '');
  const pytorch = some(/\.(bin|pt|pth|ckpt)$/i);
  const foreign = some(/\.(gguf|h5|msgpack|onnx)$/i);
  return {
    kind: 'none',
    code: 'NO_CHECKPOINT',
    why:
      `no ${expected.slice(0, -1).join(', ')} or ${expected[expected.length - 1]}` +
      (pytorch.length > 0 ? `; it has ${shown(pytorch)}: name a PyTorch weight file itself to read it` : '') +
      (foreign.length > 0 ? `; it has ${shown(foreign)}, in formats model-stock does not read` : ''),
  };
}

/** The sentence said when a folder holds weights of a second format beside those read. */
export function shadowedWarning(
  dir: string,
  choice: Extract<WeightChoice, { file: string }>,
): string | undefined {
  if (choice.shadowed.length === 0) return undefined;
  if (choice.format.name === 'lora') {
    return (
      `${dir}: holds a LoRA adapter (${choice.file}) and also ${choice.shadowed.join(', ')}: reading the adapter ` +
      '(a folder with adapter_config.json is an adapter; name the other weight file itself to read it instead)'
    );
  }
  return (
    `${dir}: holds ${choice.format.name} weights (${choice.file}) and also ${choice.shadowed.join(', ')}: ` +
    `reading the ${choice.format.name} ones, as transformers does`
  );
}
