/**
 * Run by test/safetensors/hostile.test.ts in a fresh process: opens a checkpoint with the 5 ms timer
 * beside it (test/helpers/liveness.ts) and prints the gaps and what was opened. In a fresh process,
 * because a full garbage collection marks the whole heap: inside the test runner, every earlier test's
 * leftovers would lengthen the pause charged to this opening.
 *
 *   node openChild.js MODEL_DIR PROBE_TENSOR
 */
import { openCheckpoint } from '../../lib/checkpoint/open';
import type { TensorInfo } from '../../lib/checkpoint/types';
import { measureLiveness } from './liveness';

export interface OpenResult {
  readonly maxGapMs: number;
  readonly maxBusyGapMs: number;
  readonly ticks: number;
  readonly elapsedMs: number;
  readonly tensors: number;
  readonly order: number;
  readonly last: string | undefined;
  readonly probe: TensorInfo | undefined;
}

if (require.main === module) {
  void (async () => {
    const [dir, probe] = process.argv.slice(2) as [string, string];
    const r = await measureLiveness(() => openCheckpoint(dir));
    const result: OpenResult = {
      maxGapMs: r.maxGapMs,
      maxBusyGapMs: r.maxBusyGapMs,
      ticks: r.ticks,
      elapsedMs: r.elapsedMs,
      tensors: r.value.tensors.size,
      order: r.value.order.length,
      last: r.value.order[r.value.order.length - 1],
      probe: r.value.tensors.get(probe),
    };
    process.stdout.write(JSON.stringify(result));
  })();
}
