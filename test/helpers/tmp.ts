/** Temporary folders for tests: one per suite, removed afterwards. */
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';

export async function makeTmpDir(prefix = 'model-stock-test-'): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

export async function removeTmpDir(dir: string | undefined): Promise<void> {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
}

/** Registers a fresh temp folder for the enclosing mocha suite; read `.dir` inside tests. */
export function useTmpDir(prefix?: string): { dir: string } {
  const holder = { dir: '' };
  before(async () => {
    holder.dir = await makeTmpDir(prefix);
  });
  after(async () => {
    await removeTmpDir(holder.dir || undefined);
  });
  return holder;
}
