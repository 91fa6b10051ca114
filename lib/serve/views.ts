/**
 * How jobs look in responses (docs/serve.md pins these shapes). `GET /api/jobs/:id` has everything,
 * the report included; the list has a summary per job.
 */
import { groupedWarningLines } from '../report/warnings';
import type { Jobs } from './jobs';
import type { JobRow } from './store';
import type { JobSummary } from './wire';

export type { JobSummary };

export interface JobView extends Omit<JobSummary, 'warningCount'> {
  /** Every warning, in order. */
  readonly warnings: readonly string[];
  /** The same grouped by kind, one line each, as the terminal prints them. */
  readonly warningLines: readonly string[];
}

function common(row: JobRow, jobs: Jobs) {
  return {
    id: row.id,
    kind: row.kind,
    state: row.state,
    createdAt: row.createdAt,
    startedAt: row.startedAt ?? null,
    finishedAt: row.finishedAt ?? null,
    progress: jobs.liveProgress(row.id) ?? row.progress,
    ...(row.error !== undefined ? { error: row.error } : {}),
    request: row.request,
  };
}

export function jobSummary(row: JobRow, jobs: Jobs): JobSummary {
  return { ...common(row, jobs), warningCount: jobs.warningCount(row), hasReport: row.hasReport };
}

export function jobView(row: JobRow, jobs: Jobs): JobView {
  const warnings = jobs.warnings(row);
  return {
    ...common(row, jobs),
    hasReport: row.hasReport,
    warnings,
    warningLines: groupedWarningLines(warnings),
  };
}

/**
 * The view's JSON with the stored report text spliced in as `report`: a report of a million tensors
 * is not parsed and serialized again for every request.
 */
export function withReport(view: JobView, reportJson: string | undefined): string {
  const text = JSON.stringify(view);
  return reportJson === undefined ? text : `${text.slice(0, -1)},"report":${reportJson.trimEnd()}}`;
}
