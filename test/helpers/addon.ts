import type { NativeAddon, NativeIsa } from '../../lib/engine/native/addon-types';
import { loadNativeAddon } from '../../lib/engine/native/loader';

/**
 * The addon for native tests, or a skip with the reason when it truly is absent. With
 * MODEL_STOCK_REQUIRE_NATIVE=1 (CI) an addon that does not load fails the suite instead.
 */
export function addonOrSkip(ctx: Mocha.Context): NativeAddon {
  const loaded = loadNativeAddon();
  if (loaded.addon !== undefined) return loaded.addon;
  const why = loaded.reasons.join('; ');
  if (process.env.MODEL_STOCK_REQUIRE_NATIVE === '1') {
    throw new Error(`MODEL_STOCK_REQUIRE_NATIVE=1 but the native addon does not load: ${why}`);
  }
  console.warn(`    (native tests skipped: ${why})`);
  ctx.skip();
}

/** Runs `body` once per ISA this machine can run (each job names the ISA it runs on). */
export async function forEachIsa(addon: NativeAddon, body: (isa: NativeIsa) => Promise<void>): Promise<void> {
  for (const isa of addon.info().availableIsas) await body(isa);
}

/** `bytes` copied to start `shift` bytes past an 8-aligned offset of a fresh buffer. */
export function shifted(bytes: Uint8Array, shift: number): Uint8Array {
  const host = new Uint8Array(bytes.byteLength + 16);
  host.set(bytes, shift);
  return host.subarray(shift, shift + bytes.byteLength);
}
