import { spawn, spawnSync } from 'node:child_process';
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

/**
 * `runCli` without blocking this process's event loop: for tests whose child talks to a server the
 * test itself runs (a mock Hub on loopback).
 */
export function runCliAsync(
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return runNodeAsync(CLI, args, env);
}

/** Runs a built script in a child Node process, collecting its output, without blocking this one. */
export function runNodeAsync(
  script: string,
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [script, ...args], { env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** `merge --base B --model M1 --model M2 … --out OUT`. */
export function mergeArgs(base: string, models: readonly string[], out: string): string[] {
  return ['merge', '--base', base, ...models.flatMap((m) => ['--model', m]), '--out', out];
}
