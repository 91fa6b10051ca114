import * as os from 'node:os';

/**
 * Ctrl-C and `kill` for the CLI: the first SIGINT or SIGTERM cancels the work through an AbortSignal —
 * the merge stops, removes its staging folder and releases everything, and the command exits 130 or
 * 143 with nothing left behind. A second signal exits at once (and says what may remain).
 */
const HANDLED: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];

let received: NodeJS.Signals | undefined;

/** The signal that interrupted this command, if one did. */
export function interruptedBy(): NodeJS.Signals | undefined {
  return received;
}

/** The shell's exit status for a command ended by `signal`: 128 + its number (130, 143). */
export function exitCodeFor(signal: NodeJS.Signals): number {
  return 128 + (os.constants.signals[signal] ?? 0);
}

/**
 * Listens until `dispose()`; the returned signal fires on the first SIGINT/SIGTERM. `quiet` stops what
 * draws on the terminal (progress bars, which hide the cursor) before anything is said or the process
 * exits.
 */
export function interruptOnSignals(
  what: string,
  quiet: () => void = () => undefined,
  /** What an exit on the second signal may leave behind, said when it happens. */
  leftover?: string,
): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    quiet();
    if (received !== undefined) {
      process.stderr.write(
        `\nmodel-stock: ${sig} again: exiting now${leftover === undefined ? '' : `; ${leftover}`}\n`,
      );
      process.exit(exitCodeFor(sig));
    }
    received = sig;
    process.stderr.write(`\nmodel-stock: ${sig}: cancelling ${what} (send it again to exit at once)\n`);
    controller.abort(new Error(`interrupted by ${sig}`));
  };
  for (const s of HANDLED) process.on(s, onSignal);
  return {
    signal: controller.signal,
    dispose: () => {
      for (const s of HANDLED) process.off(s, onSignal);
    },
  };
}
