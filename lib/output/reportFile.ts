/**
 * The `--report FILE` copy of a merge's report. Its path is checked before any work: never inside an
 * input (a model folder, a weight file) or inside OUT, never an existing file that is not an earlier
 * report. It is written to a temporary file and put in place before OUT is committed, so a report that
 * cannot be written fails the merge while nothing is committed yet; when OUT's commit then fails, the
 * report is taken back out.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelStockError } from '../errors';
import { inside, realOrResolved } from './atomic';
import { placeFile } from './file';
import { lstatIfAny, nativeRenameFlags, onPath, type RenameFlags } from './fsops';
import type { Placement } from './place';

/** Larger than any report (one entry per tensor): a bigger file is not one, and is not read. */
const MAX_REPORT_BYTES = 256 << 20;

/** Whether `file` is a report an earlier merge or inspection wrote (and so may be replaced). */
export async function isEarlierReport(file: string): Promise<boolean> {
  const st = await lstatIfAny(file);
  if (st === undefined || !st.isFile() || st.size > MAX_REPORT_BYTES) return false;
  try {
    const doc = JSON.parse(await fs.promises.readFile(file, 'utf8')) as unknown;
    return (
      typeof doc === 'object' &&
      doc !== null &&
      (doc as { method?: unknown }).method === 'model_stock' &&
      Array.isArray((doc as { tensors?: unknown }).tensors)
    );
  } catch {
    return false;
  }
}

const refuse = (report: string, why: string): ModelStockError =>
  new ModelStockError('BAD_OUTPUT_PATH', `report ${report} ${why}`);

/**
 * Refuses a report path inside an input folder, equal to an input file (each weight file, through
 * symlinks: a Hugging Face snapshot's files are links into blobs/), inside OUT, a folder, or an existing
 * file that is not an earlier report. `inputs`: the models as given (folders or files) and their files.
 */
export async function checkReportPath(report: string, inputs: readonly string[], out: string): Promise<void> {
  const target = realOrResolved(report);
  for (const input of inputs) {
    const real = realOrResolved(input);
    const st = await lstatIfAny(real);
    if (st?.isDirectory() === true ? inside(target, real) : target === real) {
      throw refuse(
        report,
        `${target === real ? 'is' : 'lies inside'} the input ${input}; it would be overwritten`,
      );
    }
  }
  if (inside(target, realOrResolved(out))) throw refuse(report, `lies inside the output folder ${out}`);
  const st = await lstatIfAny(target);
  if (st !== undefined && !(await isEarlierReport(target))) {
    throw refuse(
      report,
      st.isDirectory()
        ? 'is a folder'
        : 'exists and is not an earlier model-stock report; refusing to replace it',
    );
  }
}

/**
 * Writes the report to a temporary file beside the report path (creating its folder) and puts it in
 * place, replacing only an earlier report. `undo()` if the merge then fails, `finish()` once OUT is
 * committed.
 */
export async function placeReport(
  report: string,
  /** The report's JSON, or a function writing it to the (new) file it is given. */
  json: string | ((file: string) => Promise<void>),
  fsync: boolean,
  flags: RenameFlags | undefined = nativeRenameFlags(),
): Promise<Placement> {
  const target = realOrResolved(report);
  const dir = path.dirname(target);
  await onPath(dir, 'cannot create the report folder', () => fs.promises.mkdir(dir, { recursive: true }));
  const write =
    typeof json === 'string' ? (file: string) => fs.promises.writeFile(file, json, { flag: 'wx' }) : json;
  return placeFile(target, write, {
    name: report,
    label: `report ${report}`,
    fsync,
    replaceable: isEarlierReport,
    flags,
  });
}
