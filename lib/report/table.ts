import type { LayerColumn, LayerSummary, Stats } from './layers';

/**
 * The per-layer aggregates as a text table, one line per layer and tensor kind, then one per tensor
 * outside the layers: the angle between task vectors in degrees, c and t, each min / mean / max (over
 * tensors, pairs and — filter-wise — rows). What `model-stock inspect` prints.
 */
export function summaryTable(s: LayerSummary, columnSeparator = '  '): string[] {
  const multiStack = new Set(s.columns.map((c) => c.stack)).size > 1;
  const lines: string[][] = [
    ['layer', 'kind', 'angle° min', 'mean', 'max', 'c min', 'mean', 'max', 't min', 'mean', 'max'],
  ];
  s.columns.forEach((col, c) => {
    s.rows.forEach((row, r) => {
      const cell = s.cells[r * s.columns.length + c];
      if (cell === undefined) return;
      lines.push([
        columnLabel(col, multiStack),
        row.kind,
        ...triple(cell.angles, 1),
        ...triple(cell.c, 4),
        ...(cell.t === undefined ? ['copied', '', ''] : triple(cell.t, 4)),
      ]);
    });
  });
  for (const o of s.outside) {
    lines.push([
      o.group,
      o.kind,
      '',
      '',
      '',
      ...triple(o.c, 4),
      ...(o.t === undefined ? ['copied', '', ''] : triple(o.t, 4)),
    ]);
  }
  const widths = (lines[0] as string[]).map((_, i) => Math.max(...lines.map((l) => (l[i] ?? '').length)));
  const text = lines.map((l) =>
    l
      .map((v, i) => (i < 2 ? v.padEnd(widths[i] as number) : v.padStart(widths[i] as number)))
      .join(columnSeparator)
      .trimEnd(),
  );
  const notes: string[] = [];
  if (s.hiddenKinds > 0) notes.push(`${s.hiddenKinds} rarer tensor kinds not shown`);
  if (s.hiddenOutside > 0) notes.push(`${s.hiddenOutside} more tensors outside the layers not shown`);
  if (s.columns.some((c) => c.first !== c.last)) notes.push('consecutive layers share a line (first–last)');
  return notes.length === 0 ? text : [...text, `(${notes.join('; ')})`];
}

function columnLabel(col: LayerColumn, withStack: boolean): string {
  const index = col.first === col.last ? String(col.first) : `${col.first}–${col.last}`;
  return withStack && col.stack !== '' ? `${col.stack}.${index}` : index;
}

function triple(v: Stats | undefined, digits: number): [string, string, string] {
  if (v === undefined) return ['-', '-', '-'];
  return [v.min.toFixed(digits), v.mean.toFixed(digits), v.max.toFixed(digits)];
}
