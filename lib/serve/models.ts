/**
 * GET /api/models: the checkpoint folders under each --models root, up to three levels down, with the
 * reference that names each one. Nothing outside the roots is listed: a linked folder is followed only
 * when its real path lies in a root, hidden entries are skipped, and the walk is bounded.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isInside, type Roots } from './roots';
import type { ListedModel, ModelFormat } from './wire';

export type { ListedModel, ModelFormat };

export const MAX_DEPTH = 3;
/** Folders read per listing at most: a root holding a whole file system is cut short, saying so. */
export const MAX_FOLDERS = 5000;

/** The folder's weights: a PEFT adapter, safetensors, or PyTorch pickles; undefined when it holds none. */
function formatOf(names: readonly string[]): ModelFormat | undefined {
  if (names.includes('adapter_config.json')) return 'lora';
  if (names.some((n) => n.endsWith('.safetensors'))) return 'safetensors';
  if (names.some((n) => /\.(bin|pt|pth|ckpt)$/.test(n))) return 'pytorch';
  return undefined;
}

const WEIGHTS = /\.(safetensors|bin|pt|pth|ckpt)$/;

export async function listModels(roots: Roots): Promise<{ models: ListedModel[]; truncated: boolean }> {
  const models: ListedModel[] = [];
  let budget = MAX_FOLDERS;
  const readable = (p: string): boolean => roots.models.some((r) => isInside(p, r.real));

  /** `above`: the real paths of the folders this one was reached through (a link back up is a cycle). */
  const visit = async (
    root: number,
    rel: string,
    real: string,
    depth: number,
    above: string[],
  ): Promise<void> => {
    if (budget-- <= 0 || above.includes(real)) return;
    const entries = await fs.promises.readdir(real, { withFileTypes: true }).catch(() => []);
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    if (depth > 0) {
      const files = entries.filter((e) => !e.isDirectory());
      const format = formatOf(files.map((e) => e.name));
      if (format !== undefined) {
        let bytes = 0;
        let count = 0;
        for (const f of files) {
          if (!WEIGHTS.test(f.name)) continue;
          const st = await fs.promises.stat(path.join(real, f.name)).catch(() => undefined);
          if (st?.isFile() !== true) continue;
          bytes += st.size;
          count++;
        }
        models.push({
          ref: await refFor(roots, root, rel, real),
          root,
          path: rel,
          format,
          files: count,
          bytes,
        });
      }
    }
    if (depth === MAX_DEPTH) return;
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      if (!e.isDirectory() && !e.isSymbolicLink()) continue;
      const target = await fs.promises.realpath(path.join(real, e.name)).catch(() => undefined);
      if (target === undefined || !readable(target)) continue;
      if (!(await fs.promises.stat(target).catch(() => undefined))?.isDirectory()) continue;
      await visit(root, rel === '' ? e.name : `${rel}/${e.name}`, target, depth + 1, [...above, real]);
    }
  };

  for (const [i, r] of roots.models.entries()) await visit(i, '', r.real, 0, []);
  return { models, truncated: budget < 0 };
}

/** `rel` resolves to this folder unless an earlier root has the same path: then its real path. */
async function refFor(roots: Roots, root: number, rel: string, real: string): Promise<string> {
  for (const r of roots.models.slice(0, root)) {
    const shadow = await fs.promises.stat(path.join(r.real, rel)).catch(() => undefined);
    if (shadow !== undefined) return real;
  }
  return rel;
}
