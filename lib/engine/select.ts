import { ModelStockError } from '../errors';
import type { BackendChoice } from '../types';
import type { Backend } from './backend';
import { JsBackend } from './js';
import { createNativeBackend, loadNativeAddon } from './native';

export interface SelectOptions {
  readonly threads?: number;
  /** Told once why `auto` fell back to the pure-TypeScript backend. */
  readonly onWarning?: (message: string) => void;
}

let fallbackReported = false;

/**
 * `auto`: the native backend when its addon loads, else pure TypeScript with the reason given once per
 * process. `js`, `native` and `cuda` force one and fail with BACKEND_UNAVAILABLE when it cannot run.
 */
export function selectBackend(choice: BackendChoice, opts: SelectOptions = {}): Backend {
  switch (choice) {
    case 'js':
      return new JsBackend();
    case 'native':
      return createNativeBackend({ threads: opts.threads });
    case 'cuda':
      throw new ModelStockError(
        'BACKEND_UNAVAILABLE',
        'the CUDA backend is not built in this version of model-stock; use --backend native or js',
      );
    case 'auto': {
      const loaded = loadNativeAddon();
      if (loaded.addon !== undefined) return createNativeBackend({ threads: opts.threads });
      if (!fallbackReported) {
        fallbackReported = true;
        opts.onWarning?.(`native backend unavailable, using pure TypeScript: ${loaded.reasons.join('; ')}`);
      }
      return new JsBackend();
    }
    default:
      throw new ModelStockError(
        'BAD_CONFIG',
        `unknown backend "${String(choice)}" (auto, js, native or cuda)`,
      );
  }
}
