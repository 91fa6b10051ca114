/**
 * Run by test/merge/faults.test.ts in a child process (a SIGBUS that is not absorbed ends it, and with
 * it only this run): for each case, a merge whose input file is truncated by "another program" when the
 * merge reaches a given tensor, then — in the same process — a merge of intact inputs. Prints one JSON
 * line per case and `{"done":true}` last.
 *
 *   node faultChild.js '{"root": DIR, "fixture": {"base": DIR, "models": [DIR, DIR]}, "cases": [...]}'
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { BackendName } from '../../lib/engine/backend';
import type { IoMode } from '../../lib/engine/io';
import { isModelStockError } from '../../lib/errors';
import { mergeModelStock } from '../../lib/merge';
import { openCheckpoint } from '../../lib/checkpoint/open';

export interface FaultCase {
  readonly backend: BackendName;
  readonly io: Exclude<IoMode, 'auto'>;
  /** Which input is truncated: the base or the first fine-tune. */
  readonly input: 'base' | 'model';
  /** The tensor whose turn triggers the truncation. */
  readonly at: string;
  /** Memory budget (small: the windowed path). */
  readonly memory?: number;
}

export interface FaultResult extends FaultCase {
  /** The first merge's failure, or 'resolved' when it did not fail. */
  readonly code: string;
  readonly message: string;
  readonly file: string | undefined;
  /** The file that was truncated. */
  readonly truncated: string;
  /** The second merge, of intact inputs: tensors in its report, or its error. */
  readonly second: number | string;
}

async function run(): Promise<void> {
  const job = JSON.parse(process.argv[2]!) as {
    root: string;
    fixture: { base: string; models: string[] };
    cases: FaultCase[];
  };
  for (const [i, c] of job.cases.entries()) {
    const dir = path.join(job.root, `case${i}`);
    // Private copies: this case truncates one of them.
    const base = path.join(dir, 'base');
    const models = job.fixture.models.map((_, k) => path.join(dir, `ft${k + 1}`));
    fs.cpSync(job.fixture.base, base, { recursive: true });
    job.fixture.models.forEach((m, k) => fs.cpSync(m, models[k]!, { recursive: true }));
    const victim = (await openCheckpoint(c.input === 'base' ? base : models[0]!)).files[0]!;
    const dataStart = 8 + Number(fs.readFileSync(victim).readBigUInt64LE(0));
    let cut = false;
    let code = 'resolved';
    let message = '';
    let file: string | undefined;
    try {
      await mergeModelStock({
        base,
        models,
        out: path.join(dir, 'out'),
        backend: c.backend,
        io: c.io,
        memory: c.memory,
        fsync: false,
        onProgress: (p) => {
          if (!cut && p.tensor === c.at) {
            cut = true;
            fs.truncateSync(victim, dataStart); // every tensor's bytes gone from the file
          }
        },
      });
    } catch (e) {
      code = isModelStockError(e) ? e.code : `not a ModelStockError: ${String(e)}`;
      message = (e as Error).message;
      file = isModelStockError(e) ? e.file : undefined;
    }
    let second: number | string;
    try {
      const report = await mergeModelStock({
        ...job.fixture,
        out: path.join(dir, 'intact'),
        backend: c.backend,
        io: c.io,
        memory: c.memory,
        fsync: false,
      });
      second = report.tensors.length;
    } catch (e) {
      second = String(e);
    }
    const result: FaultResult = { ...c, code, message, file, truncated: victim, second };
    process.stdout.write(JSON.stringify(result) + '\n');
  }
  process.stdout.write(JSON.stringify({ done: true }) + '\n');
}

run().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
