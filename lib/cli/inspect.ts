import * as fs from 'node:fs';
import * as path from 'node:path';
import { escapeControl, ModelStockError } from '../errors';
import { inspectModelStock } from '../inspect';
import { inside, realOrResolved } from '../output/atomic';
import { writeFileAtomic } from '../output/file';
import { isEarlierReport } from '../output/reportFile';
import { reportJsonPieces } from '../output/report';
import { summarizeLayersSliced } from '../report/layers';
import { drawSummary, isEarlierPicture } from '../report/svg';
import { summaryTable } from '../report/table';
import { resolveInputs, withTerminal, type InputFlags } from './inputs';
import { formatBytes } from './size';
import { profileLine, readsSummary } from './profile';
import { groupedWarningLines } from '../report/warnings';

export interface InspectFlags extends InputFlags {
  json?: boolean;
  report?: string;
  svg?: string;
  overwrite?: boolean;
}

/**
 * `model-stock inspect`: the Gram pass of the merge the same flags would run — no weights written —
 * printed per layer and tensor kind (or as the report's JSON), optionally drawn and saved.
 */
export async function runInspect(config: string | undefined, f: InspectFlags): Promise<void> {
  const printWarning = (m: string): void => {
    if (!f.quiet) process.stderr.write(`warning: ${escapeControl(m)}\n`);
  };
  const { options } = resolveInputs(config, f, printWarning);
  // Refused before the inputs are read: a wrong output path costs nothing.
  const outputs = [f.svg, f.report].filter((o): o is string => o !== undefined);
  if (f.svg !== undefined && f.report !== undefined && realOrResolved(f.svg) === realOrResolved(f.report))
    throw new ModelStockError('BAD_OUTPUT_PATH', 'is given for both --svg and --report', { file: f.svg });
  for (const file of outputs) await checkNotInput(file, [options.base, ...options.models, config]);

  const warnings: string[] = [];
  const report = await withTerminal(
    'the inspection',
    'a hidden temporary file (.FILE.tmp-*) may remain beside --report or --svg',
    f.quiet,
    printWarning,
    (hooks) => inspectModelStock({ ...options, ...hooks, onWarning: (m) => warnings.push(m) }),
  );
  // After the progress bar, as merge does.
  for (const w of groupedWarningLines(warnings)) printWarning(w);
  if (f.svg !== undefined) {
    const svg = drawSummary(await summarizeLayersSliced(report));
    await writeFileAtomic(f.svg, svg, {
      overwrite: f.overwrite ?? false,
      fsync: true,
      replaceable: isEarlierPicture,
    });
  }
  if (f.report !== undefined) {
    await writeFileAtomic(f.report, [...reportJsonPieces(report)].join(''), {
      overwrite: f.overwrite ?? false,
      fsync: true,
      replaceable: isEarlierReport,
    });
  }
  if (f.json) {
    process.stdout.write([...reportJsonPieces(report)].join(''));
    return;
  }
  if (f.quiet) return;
  const s = await summarizeLayersSliced(report);
  const merged = report.tensors.filter((t) => t.action === 'merge').length;
  const b = report.backend;
  const out: string[] = [
    `base ${report.base}; fine-tunes ${report.models.join(', ')}`,
    `${report.filterWise ? 'filter-wise' : 'layer-wise'}, theta ${report.theta}: ${merged} tensors would be merged, ` +
      `${report.tensors.length - merged} copied or dropped; ${formatBytes(report.bytesRead)} read in ` +
      `${report.seconds.toFixed(2)} s (${b.name} backend, ${b.isa}, ${readsSummary(report.inputs)})`,
    '',
    ...summaryTable(s),
  ];
  if (f.profile) out.push((profileLine(report) ?? '').trimEnd());
  if (f.svg !== undefined) out.push(`picture: ${f.svg}`);
  if (f.report !== undefined) out.push(`report: ${f.report}`);
  process.stdout.write(out.map(escapeControl).join('\n') + '\n');
}

/** An output never lands on or inside a local input (a model folder, a weight file, the config). */
async function checkNotInput(file: string, inputs: readonly (string | undefined)[]): Promise<void> {
  const target = realOrResolved(file);
  for (const input of inputs) {
    if (input === undefined) continue;
    const st = await fs.promises.stat(input).catch(() => undefined);
    if (st === undefined) continue; // a Hub ID
    const real = realOrResolved(input);
    if (st.isDirectory() ? inside(target, real) : target === real) {
      throw new ModelStockError(
        'BAD_OUTPUT_PATH',
        `${target === real ? 'is' : 'lies inside'} the input ${input}; it would be overwritten`,
        { file: path.resolve(file) === target ? file : `${file} (${target})` },
      );
    }
  }
}
