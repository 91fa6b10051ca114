/**
 * mergekit `slices` accepted only when they are the whole model: each source's `layer_range` must be
 * [0, the layer count its config.json declares]. Checked once the references are resolved to folders.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelStockError } from '../errors';

export interface LayerRangeCheck {
  /** The model reference as written in the config. */
  readonly reference: string;
  readonly layerRange: readonly [number, number];
  /** e.g. `slices[0].sources[1]`. */
  readonly where: string;
  /** The config file, to name in errors. */
  readonly file?: string;
}

/** Where transformers' configs keep the decoder layer count (mergekit's num_layers_config_key values). */
const LAYER_KEYS = [
  'num_hidden_layers',
  'n_layer',
  'num_layers',
  'n_layers',
  'text_config.num_hidden_layers',
];

export function layerCount(config: unknown): { count: number; key: string } | undefined {
  for (const key of LAYER_KEYS) {
    let v: unknown = config;
    for (const part of key.split('.')) {
      v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[part] : undefined;
    }
    if (Number.isSafeInteger(v) && (v as number) > 0) return { count: v as number, key };
  }
  return undefined;
}

/** Reads config.json beside the weights: `modelPath` is a folder, or a .safetensors file inside one. */
async function readConfig(modelPath: string): Promise<{ file: string; config: unknown }> {
  const st = await fs.promises.stat(modelPath);
  const file = path.join(st.isDirectory() ? modelPath : path.dirname(modelPath), 'config.json');
  const text = await fs.promises.readFile(file, 'utf8');
  return { file, config: JSON.parse(text) as unknown };
}

/**
 * Throws BAD_CONFIG naming the slice source whose range is not its model's full layer range.
 * `pathOf` maps a reference to the local path it resolved to.
 */
export async function checkLayerRanges(
  checks: readonly LayerRangeCheck[],
  pathOf: (reference: string) => string,
): Promise<void> {
  for (const c of checks) {
    const [from, to] = c.layerRange;
    const label = `${c.where} (${c.reference})`;
    let read: { file: string; config: unknown };
    try {
      read = await readConfig(pathOf(c.reference));
    } catch (e) {
      throw new ModelStockError(
        'BAD_CONFIG',
        `${label}: cannot tell its layer count to check layer_range [${from}, ${to}]: ${(e as Error).message}`,
        { file: c.file, cause: e },
      );
    }
    const layers = layerCount(read.config);
    if (layers === undefined) {
      throw new ModelStockError(
        'BAD_CONFIG',
        `${label}: ${read.file} declares no layer count (${LAYER_KEYS.join(', ')}) to check layer_range [${from}, ${to}] against`,
        { file: c.file },
      );
    }
    if (from !== 0 || to !== layers.count) {
      throw new ModelStockError(
        'BAD_CONFIG',
        `${label}: layer_range [${from}, ${to}] is not all ${layers.count} layers of the model ` +
          `(${layers.key} in its config.json); partial slices are unsupported — model_stock here merges ` +
          `whole models, so give layer_range [0, ${layers.count}] or use models:`,
        { file: c.file },
      );
    }
  }
}
