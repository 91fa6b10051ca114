/**
 * Where the Hugging Face cache is, which Hub to ask, with which token, and whether to ask at all — read
 * from the environment the way huggingface_hub's constants.py and utils/_auth.py read it, so a model
 * Python tools downloaded is found here and one downloaded here is found by them.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';
/** huggingface_hub's DEFAULT_ETAG_TIMEOUT and DEFAULT_DOWNLOAD_TIMEOUT: 10 s each. */
export const DEFAULT_TIMEOUT_MS = 10_000;

export interface DownloadProgress {
  /** `org/name`. */
  readonly repo: string;
  /** The commit the files come from. */
  readonly commit: string;
  /** The file being downloaded (repository-relative). */
  readonly file: string;
  readonly fileBytesDone: number;
  readonly fileBytesTotal: number;
  /** Over every file this resolution downloads. */
  readonly bytesDone: number;
  readonly bytesTotal: number;
  readonly filesDone: number;
  readonly filesTotal: number;
}

/** How Hub model IDs are resolved and downloaded; every field defaults from the environment. */
export interface HubOptions {
  /** Cache folder (`…/hub`). Default: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub. */
  readonly cacheDir?: string;
  /** Default: HF_ENDPOINT, else https://huggingface.co. */
  readonly endpoint?: string;
  /** Bearer token. Default: HF_TOKEN, HUGGING_FACE_HUB_TOKEN, else the file `huggingface-cli login` wrote; `false`: none. */
  readonly token?: string | false;
  /** Use the cache only. Default: HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is 1/ON/YES/TRUE. */
  readonly offline?: boolean;
  /** Longest wait for a response's headers (connecting included). Default HF_HUB_ETAG_TIMEOUT s, else 10 s. */
  readonly connectTimeoutMs?: number;
  /** Longest silence while a body streams. Default HF_HUB_DOWNLOAD_TIMEOUT s, else 10 s. */
  readonly readTimeoutMs?: number;
  /** Cancels lookups and downloads; a cancelled download leaves no partial file. */
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: DownloadProgress) => void;
  /** e.g. "Hub unreachable, using the cached snapshot", "waiting for another download's lock". */
  readonly onWarning?: (message: string) => void;
  /** Where the defaults are read from (default process.env). */
  readonly env?: NodeJS.ProcessEnv;
  /** Replaces the global fetch (proxies, tests). */
  readonly fetch?: typeof fetch;
}

export interface HubSettings {
  readonly cacheDir: string;
  readonly endpoint: string;
  readonly token: string | undefined;
  readonly offline: boolean;
  readonly connectTimeoutMs: number;
  readonly readTimeoutMs: number;
}

/** huggingface_hub's ENV_VARS_TRUE_VALUES, compared upper-cased. */
export function isTrue(value: string | undefined): boolean {
  return value !== undefined && ['1', 'ON', 'YES', 'TRUE'].includes(value.toUpperCase());
}

const nonEmpty = (v: string | undefined): string | undefined => (v === undefined || v === '' ? undefined : v);

/** Python's os.path.expandvars(os.path.expanduser(p)): `~` and `$VAR` / `${VAR}`; unknown variables stay. */
export function expandPath(p: string, env: NodeJS.ProcessEnv): string {
  let s = p;
  if (s === '~' || s.startsWith('~/') || s.startsWith(`~${path.sep}`)) {
    s = path.join(nonEmpty(env.HOME) ?? os.homedir(), s.slice(1));
  }
  return s.replace(/\$(\w+)|\$\{(\w+)\}/g, (whole, a: string | undefined, b: string | undefined) => {
    const v = env[(a ?? b) as string];
    return v === undefined ? whole : v;
  });
}

/** HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
export function hfHome(env: NodeJS.ProcessEnv = process.env): string {
  const home = nonEmpty(env.HF_HOME);
  if (home !== undefined) return expandPath(home, env);
  const xdg = nonEmpty(env.XDG_CACHE_HOME) ?? path.join(nonEmpty(env.HOME) ?? os.homedir(), '.cache');
  return expandPath(path.join(xdg, 'huggingface'), env);
}

/** The hub cache folder, with huggingface_hub's precedence. */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = nonEmpty(env.HF_HUB_CACHE) ?? nonEmpty(env.HUGGINGFACE_HUB_CACHE);
  return path.resolve(expandPath(explicit ?? path.join(hfHome(env), 'hub'), env));
}

/** HF_TOKEN, HUGGING_FACE_HUB_TOKEN, else the token file (HF_TOKEN_PATH, else HF_HOME/token); trimmed. */
export function hubToken(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const clean = (t: string | undefined): string | undefined => nonEmpty(t?.trim());
  const fromEnv = clean(env.HF_TOKEN) ?? clean(env.HUGGING_FACE_HUB_TOKEN);
  if (fromEnv !== undefined) return fromEnv;
  const file = nonEmpty(env.HF_TOKEN_PATH) ?? path.join(hfHome(env), 'token');
  try {
    return clean(fs.readFileSync(expandPath(file, env), 'utf8'));
  } catch {
    return undefined;
  }
}

function seconds(v: string | undefined): number | undefined {
  const n = Number(v);
  return v !== undefined && v !== '' && Number.isFinite(n) && n > 0 ? n * 1000 : undefined;
}

export function hubSettings(o: HubOptions = {}): HubSettings {
  const env = o.env ?? process.env;
  const endpoint = (o.endpoint ?? nonEmpty(env.HF_ENDPOINT) ?? DEFAULT_ENDPOINT).replace(/\/+$/, '');
  return {
    cacheDir: o.cacheDir !== undefined ? path.resolve(o.cacheDir) : hubCacheDir(env),
    endpoint,
    token: o.token === false ? undefined : (o.token ?? hubToken(env)),
    // As Python's `HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE`: a non-empty HF_HUB_OFFLINE decides alone.
    offline: o.offline ?? isTrue(nonEmpty(env.HF_HUB_OFFLINE) ?? env.TRANSFORMERS_OFFLINE),
    connectTimeoutMs: o.connectTimeoutMs ?? seconds(env.HF_HUB_ETAG_TIMEOUT) ?? DEFAULT_TIMEOUT_MS,
    readTimeoutMs: o.readTimeoutMs ?? seconds(env.HF_HUB_DOWNLOAD_TIMEOUT) ?? DEFAULT_TIMEOUT_MS,
  };
}
