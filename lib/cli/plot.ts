import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelStockError } from '../errors';
import { writeFileAtomic } from '../output/file';
import { parseReport } from '../report/parse';
import { renderReportSvg } from '../report/svg';

export interface PlotFlags {
  out: string;
  overwrite?: boolean;
}

/** `model-stock plot REPORT.json -o FILE.svg`: redraws a merge's picture from its report. */
export async function plot(reportFile: string, f: PlotFlags): Promise<void> {
  const same = await sameFile(reportFile, f.out);
  if (same)
    throw new ModelStockError('BAD_OUTPUT_PATH', 'is the report being drawn; choose another output file', {
      file: f.out,
    });
  let text: string;
  try {
    text = await fs.promises.readFile(reportFile, 'utf8');
  } catch (e) {
    throw new ModelStockError('IO_ERROR', (e as Error).message, { file: reportFile, cause: e });
  }
  const svg = renderReportSvg(parseReport(text, reportFile));
  await writeFileAtomic(f.out, svg, { overwrite: f.overwrite ?? false, fsync: true });
}

async function sameFile(a: string, b: string): Promise<boolean> {
  if (path.resolve(a) === path.resolve(b)) return true;
  const [sa, sb] = await Promise.all([a, b].map((p) => fs.promises.stat(p).catch(() => undefined)));
  return sa !== undefined && sb !== undefined && sa.dev === sb.dev && sa.ino === sb.ino;
}
