import { ModelStockError } from '../errors';
import type { BackendChoice } from '../types';
import type { Backend, BackendName, BackendOptions } from './backend';
import { checked } from './checked';
import { CudaBackend, cudaUnavailable } from './cuda/backend';
import { JsBackend } from './js';
import { NativeBackend } from './native/backend';
import { loadNativeAddon } from './native/loader';

/**
 * Backends are found here, not through a switch (ggml's backend registry): each registers how to tell
 * whether it can run on this machine and how to make one. Every backend handed out is wrapped by the
 * dispatcher's checks (checked.ts).
 */
export interface BackendEntry {
  readonly name: BackendName;
  /** Why it cannot run here, one actionable sentence per cause; empty when it can. Never throws. */
  unavailable(): string[];
  create(options: BackendOptions): Backend;
}

const entries = new Map<BackendName, BackendEntry>();

/** Adds (or replaces) a backend. */
export function registerBackend(entry: BackendEntry): void {
  entries.set(entry.name, entry);
}

/** The registered backends, in registration order. */
export function backendEntries(): readonly BackendEntry[] {
  return [...entries.values()];
}

registerBackend({
  name: 'native',
  unavailable: () => {
    const loaded = loadNativeAddon();
    return loaded.addon === undefined ? loaded.reasons : [];
  },
  create: (options) => new NativeBackend(options),
});
registerBackend({ name: 'js', unavailable: () => [], create: (options) => new JsBackend(options) });
registerBackend({
  name: 'cuda',
  unavailable: cudaUnavailable,
  create: (options) => new CudaBackend(options),
});

/**
 * `auto` stays on the CPU: the native backend when its addon loads, else pure TypeScript with the
 * reason given to this caller's `onWarning` (every merge that falls back hears why). A named backend is
 * used or fails with BACKEND_UNAVAILABLE listing why.
 */
const AUTO_ORDER: readonly BackendName[] = ['native', 'js'];

/** `onWarning` also hears the backend's own warnings (BackendOptions.onWarning). */
export type CreateBackendOptions = BackendOptions;

export function createBackend(choice: BackendChoice, options: CreateBackendOptions = {}): Backend {
  const { onWarning } = options;
  if (choice === 'auto') {
    const skipped: string[] = [];
    for (const name of AUTO_ORDER) {
      const entry = entries.get(name);
      if (entry === undefined) continue;
      const why = entry.unavailable();
      if (why.length === 0) {
        if (skipped.length > 0) onWarning?.(`${skipped.join('; ')}; using the ${name} backend`);
        return checked(entry.create(options));
      }
      skipped.push(`${name} backend unavailable: ${why.join('; ')}`);
    }
    throw new ModelStockError('BACKEND_UNAVAILABLE', skipped.join('; '));
  }
  const entry = entries.get(choice);
  if (entry === undefined) {
    const known = ['auto', ...entries.keys()].join(', ');
    throw new ModelStockError('BAD_CONFIG', `unknown backend "${String(choice)}" (${known})`);
  }
  const why = entry.unavailable();
  if (why.length > 0) {
    throw new ModelStockError('BACKEND_UNAVAILABLE', `${choice} backend unavailable: ${why.join('; ')}`);
  }
  return checked(entry.create(options));
}
