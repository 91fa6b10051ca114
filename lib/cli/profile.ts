import type { InputReport, InspectReport } from '../types';

/** How the inputs were read, for the summary line: "direct reads", or "mmap/direct reads" when mixed. */
export function readsSummary(inputs: readonly InputReport[] | undefined): string {
  const modes = [...new Set((inputs ?? []).map((i) => i.io))];
  return modes.length === 0 ? '' : `${modes.join('/')} reads`;
}

/** `--profile`: where the time went (the phases overlap: their sum exceeds the wall time when they did). */
export function profileLine(report: InspectReport): string | undefined {
  const p = report.profile;
  if (p === undefined) return undefined;
  const s = (x: number): string => `${x.toFixed(2)} s`;
  return (
    `time: reading ${s(p.read)}, computing ${s(p.compute)}, writing ${s(p.write)} within ${s(p.seconds)} ` +
    `of pipeline (of ${s(report.seconds)} in all); computing waited ${s(p.readWait)} for reads, ${s(p.writeWait)} for writes\n`
  );
}
