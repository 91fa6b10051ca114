import type { Backend, BackendName, BackendOptions } from '../../lib/engine/backend';
import { loadNativeAddon } from '../../lib/engine/native/loader';
import { backendEntries, createBackend } from '../../lib/engine/registry';

/**
 * The backends the suites run on. js always; native when its addon loads (MODEL_STOCK_REQUIRE_NATIVE=1,
 * as CI sets it, makes a missing addon a failure, never a silent skip); cuda when a device is present
 * (MODEL_STOCK_REQUIRE_CUDA=1, as the GPU check sets it, makes its absence a failure).
 */
export function backendsUnderTest(): BackendName[] {
  const names: BackendName[] = ['js'];
  if (nativeLoads()) names.push('native');
  if (cudaRuns()) names.push('cuda');
  return names;
}

function nativeLoads(): boolean {
  const loaded = loadNativeAddon();
  if (loaded.addon !== undefined) return true;
  if (process.env.MODEL_STOCK_REQUIRE_NATIVE === '1') {
    throw new Error(
      `MODEL_STOCK_REQUIRE_NATIVE=1 but the native addon does not load: ${loaded.reasons.join('; ')}`,
    );
  }
  console.warn(`    (native backend not tested: ${loaded.reasons.join('; ')})`);
  return false;
}

let cudaNoted = false;
function cudaRuns(): boolean {
  const why = backendEntries()
    .find((e) => e.name === 'cuda')
    ?.unavailable() ?? ['not registered'];
  if (why.length === 0) return true;
  if (process.env.MODEL_STOCK_REQUIRE_CUDA === '1') {
    throw new Error(`MODEL_STOCK_REQUIRE_CUDA=1 but the cuda backend cannot run: ${why.join('; ')}`);
  }
  if (!cudaNoted) console.warn(`    (cuda backend not tested: ${why.join('; ')})`);
  cudaNoted = true;
  return false;
}

/** One configuration of one backend, as the contract suite runs it. */
export interface BackendVariant {
  readonly label: string;
  readonly name: BackendName;
  /** A fresh backend of this configuration; `extra` adds per-merge options (a signal). */
  create(extra?: BackendOptions): Backend;
}

/**
 * Every configuration the backend contract suite runs: js; native with each ISA this CPU runs forced
 * in turn (all cores) and the best one on one thread; cuda when present.
 */
export function backendVariants(): BackendVariant[] {
  const variants: BackendVariant[] = [];
  for (const name of backendsUnderTest()) {
    if (name === 'native') {
      const info = loadNativeAddon().addon!.info();
      for (const isa of info.availableIsas) {
        variants.push({
          label: `native ${isa}`,
          name,
          create: (extra) => createBackend('native', { ...extra, isa }),
        });
      }
      variants.push({
        label: `native ${info.isa}, 1 thread`,
        name,
        create: (extra) => createBackend('native', { ...extra, threads: 1 }),
      });
    } else {
      variants.push({ label: name, name, create: (extra) => createBackend(name, extra) });
    }
  }
  return variants;
}
