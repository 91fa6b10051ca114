/** Write modes under test, small writer sizes, injected refusals (lib/safetensors/shardFile.ts). */
import { writerTestHooks, type WriteMode } from '../../lib/safetensors/shardFile';
import { backendsUnderTest } from './backends';

/** The write modes this machine runs: node always, the native ones when the addon loads. */
export function writeModesUnderTest(): Exclude<WriteMode, 'auto'>[] {
  return backendsUnderTest().includes('native') ? ['direct', 'rolling', 'plain', 'node'] : ['node'];
}

/** Runs `body` with small blocks and flush intervals, so small files cross their boundaries. */
export async function withSmallWriterSizes<T>(body: () => Promise<T>): Promise<T> {
  const saved = { ...writerTestHooks };
  Object.assign(writerTestHooks, { blockBytes: 8192, flushBytes: 5000 });
  try {
    return await body();
  } finally {
    delete writerTestHooks.blockBytes;
    delete writerTestHooks.flushBytes;
    Object.assign(writerTestHooks, saved);
  }
}

/** Runs `body` with MODEL_STOCK_TEST_REFUSE_IO set to `calls`. */
export async function withRefused<T>(calls: string, body: () => Promise<T>): Promise<T> {
  const saved = process.env.MODEL_STOCK_TEST_REFUSE_IO;
  process.env.MODEL_STOCK_TEST_REFUSE_IO = calls;
  try {
    return await body();
  } finally {
    if (saved === undefined) delete process.env.MODEL_STOCK_TEST_REFUSE_IO;
    else process.env.MODEL_STOCK_TEST_REFUSE_IO = saved;
  }
}
