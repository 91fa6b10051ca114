/**
 * npm run fuzz -- [--seconds N] [--seed S]: fuzzes the header and index parsers and the PyTorch reader
 * (zip container, pickle interpreter) for N seconds (default 60) from seed S (default: random, printed).
 * Exits 1 with each finding printed as a regression case when anything is found.
 */
import { describeInput, runFuzz } from './run';

function option(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  if (at < 0) return fallback;
  const value = Number(process.argv[at + 1]);
  if (!Number.isSafeInteger(value) || value < 0) {
    process.stderr.write(`--${name} needs a non-negative integer\n`);
    process.exit(2);
  }
  return value;
}

async function main(): Promise<void> {
  const seconds = option('seconds', 60);
  const seed = option('seed', Math.floor(Math.random() * 2 ** 31));
  process.stdout.write(
    `fuzzing header and index parsers and the PyTorch reader for ${seconds} s, seed ${seed}\n`,
  );
  const started = performance.now();
  const result = await runFuzz({ seconds, seed });
  const elapsed = (performance.now() - started) / 1000;
  process.stdout.write(
    `${result.iterations} inputs in ${elapsed.toFixed(1)} s (${Math.round(result.iterations / elapsed)}/s), ` +
      `${result.findings.length} finding(s)\n` +
      `PyTorch files: ${result.pytorch.inputs}, of which ${result.pytorch.interpreted} reached the pickle interpreter ` +
      `and ${result.pytorch.tables} gave a tensor table\n`,
  );
  for (const f of result.findings) {
    process.stdout.write(
      `\n${f.problem}\n  minimized: ${describeInput(f.input)}\n  original:  ${describeInput(f.original)}\n`,
    );
  }
  process.exitCode = result.findings.length > 0 ? 1 : 0;
}

void main();
