import * as fs from 'node:fs';
import * as path from 'node:path';
import { floatSize, isMergeableDType } from '../dtype';
import { ModelStockError } from '../errors';
import type { NativeAddon, NativeInfo, NativeIsa } from './addon-types';
import {
  gramSize,
  type Backend,
  type BackendInfo,
  type GramJob,
  type InterpolateJob,
  type WindowJob,
} from './backend';

/**
 * The native backend: the C++ SIMD kernels of native/ behind the Backend seam. One loader tries every
 * place the addon can be and, when none works, says why for each with the fix (sharp-style).
 */

export type NativeAddonLoad = { addon: NativeAddon } | { addon: undefined; reasons: string[] };

const ADDON_FILE = 'model_stock.node';
const EXPORTS: readonly (keyof NativeAddon)[] = [
  'gram',
  'interpolate',
  'info',
  'setIsa',
  'setThreads',
  'preadInto',
  'mapFile',
  'mapView',
  'mapRelease',
  'unmap',
];

/** The folder holding this package's package.json (lib/engine in sources, dist/lib/engine built). */
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
    if (up === dir) return path.resolve(__dirname, '..', '..');
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
  return exported as unknown as NativeAddon;
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

export interface NativeBackendOptions {
  /** Total parallelism of one pass (default: all cores). The addon's pool is process-wide. */
  readonly threads?: number;
  /** Force an ISA (default: the best this CPU runs). Process-wide, like threads. */
  readonly isa?: string;
}

/** The native backend, or BACKEND_UNAVAILABLE listing why the addon did not load. */
export function createNativeBackend(opts: NativeBackendOptions = {}): NativeBackend {
  return new NativeBackend(opts);
}

export class NativeBackend implements Backend {
  readonly name = 'native' as const;
  private readonly addon: NativeAddon;

  constructor(opts: NativeBackendOptions = {}, addon?: NativeAddon) {
    if (addon === undefined) {
      const r = loadNativeAddon();
      if (r.addon === undefined) {
        throw new ModelStockError(
          'BACKEND_UNAVAILABLE',
          `native backend unavailable: ${r.reasons.join('; ')}`,
        );
      }
      addon = r.addon;
    }
    this.addon = addon;
    const { threads, isa } = opts;
    if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1 && threads <= 1024)) {
      throw new ModelStockError(
        'BAD_CONFIG',
        `Expected an integer from 1 to 1024 for threads but received ${String(threads)}`,
      );
    }
    const available = addon.info().availableIsas;
    if (isa !== undefined && !available.includes(isa as NativeIsa)) {
      throw new ModelStockError(
        'BAD_CONFIG',
        `Expected one of ${available.join(', ')} (what this CPU runs) for isa but received ${String(isa)}`,
      );
    }
    addon.setThreads(threads ?? 0);
    addon.setIsa((isa as NativeIsa | undefined) ?? available[0]!);
  }

  /** The addon's own view: ISA, threads, CPU features. */
  nativeInfo(): NativeInfo {
    return this.addon.info();
  }

  info(): BackendInfo {
    const i = this.addon.info();
    return {
      name: 'native',
      isa: i.isa,
      threads: i.threads,
      cudaCompiled: i.cudaCompiled,
      cudaDevice: undefined,
    };
  }

  async gram(job: GramJob): Promise<void> {
    const units = checkWindow(job, 'gram');
    if (!(job.gram instanceof Float64Array)) fail('gram', 'a Float64Array', 'job.gram', job.gram);
    const need = units * gramSize(job.models.length);
    if (job.gram.length < need) {
      throw native(
        `gram: job.gram has ${job.gram.length} accumulators but the window reaches unit ${units - 1}, needing ${need}`,
      );
    }
    await call(() => this.addon.gram(job));
  }

  async interpolate(job: InterpolateJob): Promise<void> {
    const units = checkWindow(job, 'interpolate');
    if (!(job.t instanceof Float64Array)) fail('interpolate', 'a Float64Array', 'job.t', job.t);
    if (job.t.length < units) {
      throw native(`interpolate: job.t has ${job.t.length} ratios but the window reaches unit ${units - 1}`);
    }
    if (!isMergeableDType(job.outDtype))
      fail('interpolate', "'F64', 'F32', 'F16' or 'BF16'", 'job.outDtype', job.outDtype);
    if (!(job.out instanceof Uint8Array)) fail('interpolate', 'a Uint8Array', 'job.out', job.out);
    const want = job.count * floatSize(job.outDtype);
    if (job.out.byteLength !== want) {
      throw native(
        `interpolate: job.out has ${job.out.byteLength} bytes but count × size(${job.outDtype}) = ${want}`,
      );
    }
    await call(() => this.addon.interpolate(job));
  }

  async dispose(): Promise<void> {
    // The pool and the ISA are process-wide and shared with any other NativeBackend: nothing to free.
  }
}

function native(message: string): ModelStockError {
  return new ModelStockError('NATIVE_ERROR', message);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (ArrayBuffer.isView(v)) return v.constructor.name;
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `'${v}'`;
  if (typeof v === 'number') return `${v}`;
  return typeof v;
}

function fail(op: string, expected: string, field: string, got: unknown): never {
  throw native(`${op}: Expected ${expected} for ${field} but received ${describe(got)}`);
}

/** Validates what both passes share; returns the number of units touched (last index + 1). */
function checkWindow(job: WindowJob, op: string): number {
  if (typeof job !== 'object' || job === null) fail(op, 'a job object', 'job', job);
  const { count, firstElement, unitLength, models } = job;
  if (!Number.isSafeInteger(count) || count < 0) fail(op, 'a safe integer ≥ 0', 'job.count', count);
  if (!Number.isSafeInteger(firstElement) || firstElement < 0) {
    fail(op, 'a safe integer ≥ 0', 'job.firstElement', firstElement);
  }
  if (!Number.isSafeInteger(unitLength) || unitLength < 1)
    fail(op, 'a safe integer ≥ 1', 'job.unitLength', unitLength);
  if (!Number.isSafeInteger(firstElement + count))
    fail(op, 'firstElement + count ≤ 2^53 − 1', 'job', firstElement + count);
  if (!Array.isArray(models) || models.length < 2) {
    fail(op, 'an array of N ≥ 2 fine-tune windows', 'job.models', models);
  }
  [job.base, ...models].forEach((w, i) => {
    const field = i === 0 ? 'job.base' : `job.models[${i - 1}]`;
    if (typeof w !== 'object' || w === null) fail(op, 'an input window', field, w);
    if (!isMergeableDType(w.dtype)) fail(op, "'F64', 'F32', 'F16' or 'BF16'", `${field}.dtype`, w.dtype);
    if (!(w.bytes instanceof Uint8Array)) fail(op, 'a Uint8Array', `${field}.bytes`, w.bytes);
    const want = count * floatSize(w.dtype);
    if (w.bytes.byteLength !== want) {
      throw native(
        `${op}: ${field}.bytes has ${w.bytes.byteLength} bytes but count × size(${w.dtype}) = ${want}`,
      );
    }
  });
  return count === 0 ? 0 : Math.floor((firstElement + count - 1) / unitLength) + 1;
}

/** Native failures become ModelStockErrors with the addon's code, the original kept as the cause. */
async function call(run: () => Promise<void>): Promise<void> {
  try {
    await run();
  } catch (e) {
    const code = (e as { code?: unknown }).code === 'IO_ERROR' ? 'IO_ERROR' : 'NATIVE_ERROR';
    throw new ModelStockError(code, e instanceof Error ? e.message : String(e), { cause: e });
  }
}
