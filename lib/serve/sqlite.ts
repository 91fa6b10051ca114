/**
 * better-sqlite3 is an optional dependency: `npm ci` compiles SQLite when no prebuilt binary can be
 * downloaded, and a failed build must not break the library for those who never run `serve`. Only
 * `serve` loads it, and says what failed and how to fix it.
 */
import type BetterSqlite3 from 'better-sqlite3';

export type SqliteDatabase = BetterSqlite3.Database;
export type SqliteStatement = BetterSqlite3.Statement<unknown[]>;

export class SqliteUnavailableError extends Error {}

/**
 * Opens `file` with better-sqlite3; `nativeBinding` (MODEL_STOCK_SQLITE_BINDING) names a compiled
 * better_sqlite3.node to use instead of the package's own.
 */
export async function openSqlite(
  file: string,
  options: { readonly nativeBinding?: string; readonly timeout?: number } = {},
): Promise<SqliteDatabase> {
  let Database: typeof BetterSqlite3;
  try {
    Database = (await import('better-sqlite3')).default;
  } catch (e) {
    throw unavailable(e);
  }
  try {
    return new Database(file, {
      timeout: options.timeout ?? 0,
      ...(options.nativeBinding !== undefined ? { nativeBinding: options.nativeBinding } : {}),
    });
  } catch (e) {
    // The binding loads on first use: a missing or foreign .node fails here, not at import.
    if (isBindingFailure(e)) throw unavailable(e);
    throw e;
  }
}

function isBindingFailure(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  const message = String((e as Error | undefined)?.message ?? '');
  return (
    code === 'MODULE_NOT_FOUND' ||
    code === 'ERR_DLOPEN_FAILED' ||
    /bindings file|better_sqlite3\.node|Could not locate|invalid ELF|NODE_MODULE_VERSION/.test(message)
  );
}

function unavailable(cause: unknown): SqliteUnavailableError {
  const why = String((cause as Error | undefined)?.message ?? cause).split('\n')[0];
  return new SqliteUnavailableError(
    `model-stock serve keeps its jobs in SQLite through better-sqlite3, an optional dependency that did ` +
      `not load (${why}). Install or rebuild it where a C++ compiler and Python are available: ` +
      `\`npm rebuild better-sqlite3\` (or \`npm install better-sqlite3@12\`); with npm ≥ 12, allow its ` +
      `install script (\`npm approve-scripts better-sqlite3\`). The library and the other commands do not need it.`,
  );
}
