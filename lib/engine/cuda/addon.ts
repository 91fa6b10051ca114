import { loadNativeAddon } from '../native/loader';
import type { CudaAddon } from './addon-types';

const CUDA_EXPORTS: readonly (keyof CudaAddon)[] = [
  'cudaInfo',
  'cudaMemoryInfo',
  'cudaAllocHost',
  'cudaFreeHost',
  'cudaOpenTensor',
  'cudaEmulateGram',
  'cudaEmulateInterpolate',
  'cudaCodecSelfTest',
];

export type CudaAddonLoad = { addon: CudaAddon } | { addon: undefined; reason: string };

/**
 * The CUDA half of the loaded addon, or why there is none. Never throws. An addon whose CUDA is not
 * compiled in still has these exports (they say so); one built before them lacks them.
 */
export function loadCudaAddon(): CudaAddonLoad {
  const loaded = loadNativeAddon();
  if (loaded.addon === undefined) {
    return { addon: undefined, reason: `native addon not loaded: ${loaded.reasons.join('; ')}` };
  }
  const exported = loaded.addon as unknown as Record<string, unknown>;
  const missing = CUDA_EXPORTS.filter((name) => typeof exported[name] !== 'function');
  if (missing.length > 0) {
    return {
      addon: undefined,
      reason: `the native addon lacks ${missing.join(', ')} (built from older sources?); rebuild it with npm run build:native`,
    };
  }
  return { addon: exported as unknown as CudaAddon };
}
