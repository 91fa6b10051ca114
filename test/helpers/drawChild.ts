/**
 * Run by test/report/svg.test.ts in a fresh process: folds and draws a report of a million tensors,
 * best of five, and prints the CPU time with the summary's shape; the picture goes to argv[2].
 *
 *   node drawChild.js OUT.svg
 */
import * as fs from 'node:fs';
import { summarizeLayers } from '../../lib/report/layers';
import { renderReportSvg } from '../../lib/report/svg';
import { millionTensors, reportOf } from './reports';

export interface DrawResult {
  readonly cpuMs: number;
  readonly wallMs: number;
  readonly columns: number;
  readonly rows: number;
  readonly hiddenKinds: number;
  readonly hiddenOutside: number;
}

if (require.main === module) {
  const report = millionTensors();
  // The first fold pays for compiling the code, as it would once in a long-running process.
  renderReportSvg(reportOf(report.tensors.slice(0, 50_000)));
  // Best of five: CPU time still counts a garbage collection (or, on a busy machine, contention) in one run.
  let cpuMs = Infinity;
  let wallMs = Infinity;
  let svg = '';
  for (let run = 0; run < 5; run++) {
    const before = process.cpuUsage();
    const started = performance.now();
    svg = renderReportSvg(report);
    const cpu = process.cpuUsage(before);
    cpuMs = Math.min(cpuMs, (cpu.user + cpu.system) / 1000);
    wallMs = Math.min(wallMs, performance.now() - started);
  }
  fs.writeFileSync(process.argv[2] as string, svg);
  const s = summarizeLayers(report);
  const result: DrawResult = {
    cpuMs,
    wallMs,
    columns: s.columns.length,
    rows: s.rows.length,
    hiddenKinds: s.hiddenKinds,
    hiddenOutside: s.hiddenOutside,
  };
  process.stdout.write(JSON.stringify(result));
}
