/**
 * Warnings grouped by kind, as the terminal (and the service's page) shows them: a kind said once, with
 * a count and the first few names, however many tensors it concerns. The report keeps every warning.
 *
 * A per-tensor warning reads `NAME: what happened`, NAME having no spaces; warnings whose `what
 * happened` is the same text are one kind. Anything else is a kind of its own.
 */

export interface WarningGroup {
  /** The text every warning of the group shares (the whole message for a group of one). */
  readonly kind: string;
  /** How many warnings the group holds. */
  readonly count: number;
  /** The names the first warnings concern (at most `examples` of them; none for a group of one). */
  readonly subjects: readonly string[];
  /** The first warning of the group, as it was given. */
  readonly first: string;
}

const PER_TENSOR = /^(\S+): ([^]+)$/;

/** Groups `warnings` by kind, in order of each kind's first appearance. */
export function groupWarnings(warnings: readonly string[], examples = 3): WarningGroup[] {
  const groups = new Map<string, { count: number; subjects: string[]; first: string }>();
  for (const w of warnings) {
    const m = PER_TENSOR.exec(w);
    const key = m === null ? `\u0000${w}` : (m[2] as string);
    const g = groups.get(key);
    if (g === undefined) {
      groups.set(key, { count: 1, subjects: m === null ? [] : [m[1] as string], first: w });
    } else {
      g.count++;
      if (m !== null && g.subjects.length < examples) g.subjects.push(m[1] as string);
    }
  }
  return [...groups].map(([key, g]) =>
    g.count === 1 || g.subjects.length === 0
      ? { kind: g.first, count: g.count, subjects: [], first: g.first }
      : { kind: key, count: g.count, subjects: g.subjects, first: g.first },
  );
}

/** One line per group: the warning itself, `KIND (COUNT tensors: a, b, c, …)`, or a repeat `TEXT (×COUNT)`. */
export function formatWarningGroup(g: WarningGroup): string {
  if (g.count === 1) return g.first;
  if (g.subjects.length === 0) return `${g.first} (×${g.count})`;
  const more = g.count > g.subjects.length ? ', …' : '';
  return `${g.kind} (${g.count} tensors: ${g.subjects.join(', ')}${more})`;
}

/** The lines the terminal prints for `warnings`. */
export function groupedWarningLines(warnings: readonly string[]): string[] {
  return groupWarnings(warnings).map(formatWarningGroup);
}
