/**
 * `npm run bench:draw`: the CPU time to fold and draw the picture of a report of a million tensors
 * (test/helpers/drawChild.ts, best of five inside each fresh process, so one process's garbage
 * collections do not fall on the next). The target is well under a second of CPU; the unit test
 * (test/report/svg.test.ts) checks only the picture's shape, never the time.
 *
 *   node dist/bench/draw.js [--runs N]
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import type { DrawResult } from '../test/helpers/drawChild';
import { fixed, formatTable, median } from './util';

function main(argv: string[]): void {
  const { values } = parseArgs({ args: argv, options: { runs: { type: 'string', default: '5' } } });
  const runs = Number(values.runs);
  if (!Number.isSafeInteger(runs) || runs < 1) throw new Error('--runs expects a positive integer');
  const dir = mkdtempSync(path.join(tmpdir(), 'model-stock-draw-'));
  try {
    const cpu: number[] = [];
    const wall: number[] = [];
    for (let i = 0; i < runs; i++) {
      const child = spawnSync(
        process.execPath,
        [path.join(__dirname, '..', 'test', 'helpers', 'drawChild.js'), path.join(dir, 'million.svg')],
        { encoding: 'utf8' },
      );
      if (child.status !== 0) throw new Error(`drawChild failed (status ${child.status}): ${child.stderr}`);
      const r = JSON.parse(child.stdout) as DrawResult;
      cpu.push(r.cpuMs);
      wall.push(r.wallMs);
    }
    console.log(
      `CPU: ${cpus()[0]?.model ?? 'unknown'}, load average ${fixed(loadavg()[0])}, ${runs} processes`,
    );
    console.log(
      formatTable(
        ['picture of 1M tensors', 'median', 'min', 'max'],
        [
          ['CPU ms', fixed(median(cpu), 0), fixed(Math.min(...cpu), 0), fixed(Math.max(...cpu), 0)],
          ['wall ms', fixed(median(wall), 0), fixed(Math.min(...wall), 0), fixed(Math.max(...wall), 0)],
        ],
      ),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main(process.argv.slice(2));
