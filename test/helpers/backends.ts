import { loadNativeAddon } from '../../lib/engine/native';
import type { BackendName } from '../../lib/engine/backend';

/**
 * The backends the end-to-end suites run on: js always, native when its addon loads. With
 * MODEL_STOCK_REQUIRE_NATIVE=1 (CI) a missing addon is a failure, never a silent skip.
 */
export function backendsUnderTest(): BackendName[] {
  const loaded = loadNativeAddon();
  if (loaded.addon !== undefined) return ['js', 'native'];
  if (process.env.MODEL_STOCK_REQUIRE_NATIVE === '1') {
    throw new Error(
      `MODEL_STOCK_REQUIRE_NATIVE=1 but the native addon does not load: ${loaded.reasons.join('; ')}`,
    );
  }
  console.warn(`    (native backend not tested: ${loaded.reasons.join('; ')})`);
  return ['js'];
}
