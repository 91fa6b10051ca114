/**
 * Headless Chromium for the page's tests: Debian's `chromium` driven by playwright-core, in a fresh
 * profile folder. Where it is absent the tests skip, saying so; MODEL_STOCK_REQUIRE_BROWSER=1 (CI)
 * turns that skip into a failure.
 */
import * as fs from 'node:fs';
import type { BrowserContext } from 'playwright-core';

export const CHROMIUM = process.env.MODEL_STOCK_CHROMIUM ?? '/usr/bin/chromium';

/** Quiet, offline, no first-run work: nothing but the page under test. */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/** Why no browser can be started here, or undefined when one can. */
function missing(): string | undefined {
  if (!fs.existsSync(CHROMIUM))
    return `${CHROMIUM} not found (apt-get install -y --no-install-recommends chromium)`;
  try {
    require.resolve('playwright-core');
  } catch {
    return 'playwright-core is not installed (npm ci)';
  }
  return undefined;
}

/**
 * Chromium with a fresh profile in `userDataDir`, or the test skipped (failed under
 * MODEL_STOCK_REQUIRE_BROWSER=1). Closing the context ends the browser.
 */
export async function launchOrSkip(ctx: Mocha.Context, userDataDir: string): Promise<BrowserContext> {
  const why = missing();
  if (why !== undefined) {
    if (process.env.MODEL_STOCK_REQUIRE_BROWSER === '1')
      throw new Error(`MODEL_STOCK_REQUIRE_BROWSER=1 but no browser: ${why}`);
    console.warn(`    (browser tests skipped: ${why})`);
    ctx.skip();
  }
  const { chromium } = await import('playwright-core');
  return chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 900 },
    // Never wait long for a browser that hangs: a test fails instead.
    timeout: 60_000,
  });
}

/** Processes whose command line names `userDataDir`: the browser started with that profile, its helpers. */
export function browserProcesses(userDataDir: string): number[] {
  const pids: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(userDataDir)) pids.push(Number(name));
    } catch {
      // ended meanwhile
    }
  }
  return pids;
}

/**
 * Closes the browser started with `userDataDir` (waiting at most `ms`), then kills whatever of it is
 * left: a failed test never leaves a browser running. Returns the pids that had to be killed.
 */
export async function closeBrowser(
  context: BrowserContext | undefined,
  userDataDir: string,
  ms = 15_000,
): Promise<number[]> {
  let timer: NodeJS.Timeout | undefined;
  if (context !== undefined) {
    await Promise.race([
      context.close().catch(() => undefined),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))),
    ]);
    clearTimeout(timer);
  }
  const left = browserProcesses(userDataDir);
  for (const pid of left) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // ended meanwhile
    }
  }
  return left;
}
