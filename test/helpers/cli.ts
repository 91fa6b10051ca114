import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

export const CLI = path.resolve(__dirname, '../../lib/cli/main.js');

/** Runs the built `model-stock` command in a child process. */
export function runCli(
  args: readonly string[],
  env: Record<string, string> = {},
): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** `merge --base B --model M1 --model M2 … --out OUT`. */
export function mergeArgs(base: string, models: readonly string[], out: string): string[] {
  return ['merge', '--base', base, ...models.flatMap((m) => ['--model', m]), '--out', out];
}
