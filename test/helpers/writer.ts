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

/** Runs `body` with the environment variable `name` set to `value`, restored afterwards. */
export async function withEnv<T>(name: string, value: string, body: () => Promise<T>): Promise<T> {
  const saved = process.env[name];
  process.env[name] = value;
  try {
    return await body();
  } finally {
    if (saved === undefined) delete process.env[name];
    else process.env[name] = saved;
  }
}

/** Runs `body` with MODEL_STOCK_TEST_REFUSE_IO (the writer's injected refusals) set to `calls`. */
export function withRefused<T>(calls: string, body: () => Promise<T>): Promise<T> {
  return withEnv('MODEL_STOCK_TEST_REFUSE_IO', calls, body);
}
