import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelStockError } from '../../errors';
import type { NativeAddon } from './addon-types';

/**
 * Finds and loads model_stock.node. One loader tries every place the addon can be and, when none works,
 * says why for each with the fix (sharp-style); a loaded addon is handed the library's error class, so
 * its failures are ModelStockErrors like every other backend's (better-sqlite3's setErrorConstructor).
 */

export type NativeAddonLoad = { addon: NativeAddon } | { addon: undefined; reasons: string[] };

const ADDON_FILE = 'model_stock.node';
const EXPORTS: readonly (keyof NativeAddon)[] = [
  'gram',
  'interpolate',
  'info',
  'setErrorConstructor',
  'allocHost',
  'freeHost',
  'openInputFile',
  'inputFileInfo',
  'closeInputFile',
  'readRanges',
  'inputResidency',
  'probeDirectIo',
  'inputReaderStats',
  'mapFile',
  'mapView',
  'mapRelease',
  'mapFault',
  'unmap',
  'fileWillNeed',
  'mapWillNeed',
  'openShardWriter',
  'shardWrite',
  'shardWriterInfo',
  'closeShardWriter',
  'abortShardWriter',
  'shardWriterStats',
  'mapClose',
  'lockFile',
  'renamePaths',
];

/** The folder holding this package's package.json (lib/engine/native in sources, dist/… built). */
function packageRoot(): string {
  let dir = __dirname;
  for (;;) {
    const manifest = path.join(dir, 'package.json');
    if (fs.existsSync(manifest)) {
      try {
        if ((JSON.parse(fs.readFileSync(manifest, 'utf8')) as { name?: unknown }).name === 'model-stock')
          return dir;
      } catch {
        // not ours; keep climbing
      }
    }
    const up = path.dirname(dir);
    if (up === dir) return path.resolve(__dirname, '..', '..', '..');
    dir = up;
  }
}

/** Where the addon may be, in order: MODEL_STOCK_ADDON alone when set, else the cmake-js build. */
export function addonCandidates(): { file: string; source: string }[] {
  const override = process.env.MODEL_STOCK_ADDON;
  if (override !== undefined && override !== '') {
    return [{ file: path.resolve(override), source: 'MODEL_STOCK_ADDON' }];
  }
  return [{ file: path.join(packageRoot(), 'build', 'Release', ADDON_FILE), source: 'cmake-js build' }];
}

const BUILD_HINT =
  'build it with `npm run build:native` (cmake ≥ 3.15 and a C++17 compiler), or `npm run build:gyp` and ' +
  'MODEL_STOCK_ADDON=<path to build-gyp/model_stock.node>';

const loaded = new Map<string, NativeAddonLoad>();

function tryLoad(file: string, source: string): NativeAddon | string {
  if (!fs.existsSync(file)) {
    return source === 'MODEL_STOCK_ADDON'
      ? `${file} (MODEL_STOCK_ADDON): no such file; point MODEL_STOCK_ADDON at a built model_stock.node or unset it`
      : `${file} (${source}): not built; ${BUILD_HINT}`;
  }
  const mod: { exports: unknown } = { exports: {} };
  try {
    process.dlopen(mod, file);
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    return `${file} (${source}): cannot be loaded (${why}); rebuild it for this platform and Node ${process.version}: ${BUILD_HINT}`;
  }
  const exported = mod.exports as Record<string, unknown>;
  const missing = EXPORTS.filter((name) => typeof exported[name] !== 'function');
  if (missing.length > 0) {
    return `${file} (${source}): loads but lacks ${missing.join(', ')} (built from other sources?); ${BUILD_HINT}`;
  }
  const addon = exported as unknown as NativeAddon;
  addon.setErrorConstructor(ModelStockError);
  return addon;
}

/**
 * Loads the addon once per candidate list and remembers the answer. Never throws: a missing or broken
 * addon gives `reasons`, one actionable line per place tried.
 */
export function loadNativeAddon(): NativeAddonLoad {
  const candidates = addonCandidates();
  const key = candidates.map((c) => c.file).join('\n');
  const known = loaded.get(key);
  if (known !== undefined) return known;
  const reasons: string[] = [];
  let result: NativeAddonLoad | undefined;
  for (const c of candidates) {
    const r = tryLoad(c.file, c.source);
    if (typeof r !== 'string') {
      result = { addon: r };
      break;
    }
    reasons.push(r);
  }
  result ??= { addon: undefined, reasons };
  loaded.set(key, result);
  return result;
}
