/**
 * Model references as users write them: a local folder or `.safetensors` file, or a Hugging Face Hub
 * ID `org/name`, optionally `org/name@revision` (mergekit's ModelPath syntax). A path that exists
 * always wins; only then is `+` read as mergekit's `model+lora`, and `org/name` as a Hub ID.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelStockError } from '../errors';

export interface HubModelId {
  /** `org/name` as written. */
  readonly repo: string;
  /** Branch, tag or commit; `main` when none was given. */
  readonly revision: string;
  /** Whether the reference named the revision (`@…`). */
  readonly explicitRevision: boolean;
}

/** huggingface_hub's validate_repo_id: word characters, `-` and `.`, at most 96, no `--` or `..`. */
const NAME = /^[\w.-]+$/;

function validName(s: string): boolean {
  return NAME.test(s) && !s.includes('--') && !s.includes('..') && !/^[-.]|[-.]$/.test(s);
}

/** 40 lower-case hex digits: a commit hash, used as a snapshot folder name as is. */
export const COMMIT_HASH = /^[0-9a-f]{40}$/;

/** A revision we will use as a path below refs/: Hub branch and tag names, `refs/pr/N`. */
function validRevision(r: string): boolean {
  return (
    r.length > 0 &&
    r.length <= 255 &&
    !/[\\\0]/.test(r) &&
    !r.startsWith('/') &&
    r.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..')
  );
}

/**
 * Reads `org/name` or `org/name@revision`; undefined for anything else (paths with `./`, `/`, `~`,
 * backslashes, drive letters, more than one `/` before the revision).
 */
export function parseHubId(ref: string): HubModelId | undefined {
  const at = ref.indexOf('@');
  if (at !== ref.lastIndexOf('@')) return undefined;
  const repo = at < 0 ? ref : ref.slice(0, at);
  const revision = at < 0 ? 'main' : ref.slice(at + 1);
  const parts = repo.split('/');
  if (repo.length > 96 || parts.length !== 2 || !parts.every(validName)) return undefined;
  if (!validRevision(revision)) return undefined;
  return { repo, revision, explicitRevision: at >= 0 };
}

/** `models--org--name`: the repository's folder in the cache. */
export function repoFolderName(repo: string): string {
  return ['models', ...repo.split('/')].join('--');
}

export type ParsedRef =
  | { readonly kind: 'path'; readonly path: string }
  | { readonly kind: 'hub'; readonly id: HubModelId }
  | { readonly kind: 'lora'; readonly model: string; readonly lora: string }
  | { readonly kind: 'missing'; readonly path: string };

/**
 * What a reference means on this machine. `exists` is injectable for tests; paths are as written
 * (relative ones against the current folder), except that on POSIX a path written with Windows
 * separators is found when it exists with `/` instead.
 */
export function classifyRef(ref: string, exists: (p: string) => boolean = fs.existsSync): ParsedRef {
  if (exists(ref)) return { kind: 'path', path: ref };
  if (path.sep === '/' && ref.includes('\\')) {
    const posix = ref.replace(/\\/g, '/');
    if (exists(posix)) return { kind: 'path', path: posix };
  }
  const plus = ref.indexOf('+');
  if (plus > 0 && plus < ref.length - 1) {
    return { kind: 'lora', model: ref.slice(0, plus), lora: ref.slice(plus + 1) };
  }
  const id = parseHubId(ref);
  if (id !== undefined) return { kind: 'hub', id };
  return { kind: 'missing', path: ref };
}

/** resolveModelRef's answer to MODEL+ADAPTER: two references, not one folder (resolveInputRef takes them). */
export function loraError(ref: string, model: string, lora: string): ModelStockError {
  return new ModelStockError(
    'BAD_CONFIG',
    `"${ref}" names a model ("${model}") and a LoRA adapter applied to it ("${lora}"), not one folder: ` +
      'resolve them with resolveInputRef (merges and inspections take such references as models)',
  );
}

/**
 * A key equal for two references to the same model as written: the same folder (relative paths
 * against the current folder), or the same Hub repository (case-insensitive, as the Hub) and revision.
 */
export function modelRefKey(ref: string, exists: (p: string) => boolean = fs.existsSync): string {
  const c = classifyRef(ref, exists);
  switch (c.kind) {
    case 'hub':
      return `hub:${c.id.repo.toLowerCase()}@${c.id.revision}`;
    case 'lora':
      return `lora:${ref}`;
    default:
      return `path:${path.resolve(c.path)}`;
  }
}
