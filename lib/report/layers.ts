import type { EmbeddingRole } from '../plan/embeddings';
import { TensorClassifier, type TensorGroup } from '../plan/roles';
import type { ThetaRule } from '../math/ratio';
import type { InspectReport, RatioStats, TensorReport } from '../types';
import { CHECK_EVERY, runSliced, runSync, type Sliced } from '../util/sliced';

/**
 * A merge report folded to what a picture can show: t per (layer, tensor kind), the angle between
 * task vectors per layer, and the tensors outside the layers one by one. One pass over the tensors
 * with a few map look-ups each, so a report of a million tensors folds in well under a second; the
 * result's size depends on the number of layers and kinds only (both capped), never on the tensors.
 */

/** Over tensors (and, filter-wise, their rows): the mean of the tensors' means, the extremes. */
export interface Stats {
  readonly min: number;
  readonly mean: number;
  readonly max: number;
  /** How many values (tensors, or tensor × pair for angles) went in. */
  readonly count: number;
}

export interface LayerColumn {
  readonly stack: string;
  /** The layer indices this column covers (equal unless there are more layers than MAX_COLUMNS). */
  readonly first: number;
  readonly last: number;
}

export interface KindRow {
  readonly kind: string;
  readonly group: 'layer' | 'norm';
  /** Tensors of this kind over all layers. */
  readonly tensors: number;
}

export interface Cell {
  /** t of the merged tensors in this cell; undefined when none was merged. */
  readonly t: Stats | undefined;
  /** Mean angle between task vectors in degrees over the cell's tensors and pairs (and rows). */
  readonly angle: number | undefined;
  /** The same angles' extremes over tensors, pairs and (filter-wise) rows; `count`: tensor × pair. */
  readonly angles: Stats | undefined;
  /** c, the combined cosine (filter-wise: its stats over rows), over the cell's merged tensors. */
  readonly c: Stats | undefined;
  /** Tensors in this cell copied from the base instead of merged. */
  readonly copied: number;
}

export interface OutsideTensor {
  readonly name: string;
  readonly kind: string;
  readonly group: Exclude<TensorGroup, 'layer'>;
  readonly vocab: EmbeddingRole | undefined;
  /** t (over rows when filter-wise); undefined when copied from the base. */
  readonly t: Stats | undefined;
  /** c, likewise. */
  readonly c: Stats | undefined;
}

export interface LayerSummary {
  readonly base: string;
  readonly models: readonly string[];
  readonly filterWise: boolean;
  readonly theta: ThetaRule;
  readonly columns: readonly LayerColumn[];
  readonly rows: readonly KindRow[];
  /** cells[row * columns.length + column]; undefined where no tensor of that kind is in that layer. */
  readonly cells: readonly (Cell | undefined)[];
  /**
   * Per column, the angle between task vectors in degrees over the column's tensors, norms left out.
   * For each pair of fine-tunes the angle is averaged over the tensors (filter-wise: the angle of the
   * rows' mean cosine, and apart the angles of the rows' extreme cosines); `mean` is the mean over
   * pairs, `min`/`max` the extremes over pairs (and rows) — how much the pairs, not the kinds, differ.
   * `count` is the number of pairs.
   */
  readonly angle: readonly (Stats | undefined)[];
  readonly outside: readonly OutsideTensor[];
  /** Kinds and outside tensors left out of the picture by the caps below. */
  readonly hiddenKinds: number;
  readonly hiddenOutside: number;
  /** Over the t means drawn (cells and outside tensors); undefined when nothing was merged. */
  readonly tRange: { readonly min: number; readonly max: number } | undefined;
  readonly merged: number;
  readonly copied: number;
  readonly dropped: number;
  /** Merged tensors with t < 0 (any row, filter-wise): their task vectors point apart. */
  readonly negative: number;
}

/** Caps that keep a picture readable at a model card's width (and its size bounded). */
export const MAX_COLUMNS = 256;
export const MAX_KINDS = 40;
export const MAX_OUTSIDE = 12;

class Acc {
  min = Infinity;
  max = -Infinity;
  sum = 0;
  count = 0;
  add(mean: number, min: number, max: number): void {
    if (min < this.min) this.min = min;
    if (max > this.max) this.max = max;
    this.sum += mean;
    this.count++;
  }
  merge(o: Acc): void {
    if (o.min < this.min) this.min = o.min;
    if (o.max > this.max) this.max = o.max;
    this.sum += o.sum;
    this.count += o.count;
  }
  stats(): Stats | undefined {
    return this.count === 0
      ? undefined
      : { min: this.min, mean: this.sum / this.count, max: this.max, count: this.count };
  }
}

/** Sums over tensors of one pair's angle: of the mean and (filter-wise) of the rows' extremes. */
class AngleAcc {
  mean = 0;
  lo = 0;
  hi = 0;
  count = 0;
  add(mean: number, lo: number, hi: number): void {
    this.mean += mean;
    this.lo += lo;
    this.hi += hi;
    this.count++;
  }
  merge(o: AngleAcc): void {
    this.mean += o.mean;
    this.lo += o.lo;
    this.hi += o.hi;
    this.count += o.count;
  }
}

class CellAcc {
  readonly t = new Acc();
  readonly c = new Acc();
  readonly angles = new Acc();
  copied = 0;
}

class LayerAcc {
  readonly cells = new Map<number, CellAcc>();
  /** By pair of fine-tunes (i·N + j over the report's model list). */
  readonly pairs = new Map<number, AngleAcc>();
}

const DEGREES = 180 / Math.PI;
const angleOf = (cos: number): number => Math.acos(Math.min(1, Math.max(-1, cos))) * DEGREES;

function isStats(v: number | RatioStats): v is RatioStats {
  return typeof v === 'object';
}

/** Adds one merged tensor's t to `acc`: layer-wise its t, filter-wise its stats over rows. */
function addT(acc: Acc, t: TensorReport): boolean {
  if (t.tStats !== undefined) acc.add(t.tStats.mean, t.tStats.min, t.tStats.max);
  else if (t.t !== undefined) acc.add(t.t, t.t, t.t);
  else return false;
  return true;
}

function addC(acc: Acc, t: TensorReport): void {
  if (t.cStats !== undefined) acc.add(t.cStats.mean, t.cStats.min, t.cStats.max);
  else if (t.c !== undefined) acc.add(t.c, t.c, t.c);
}

/**
 * Adds a merged tensor's pairwise angles, by pair of the report's fine-tunes (a tensor merged over a
 * subset of them numbers its pairs within the subset). acos is decreasing: the smallest angle comes
 * from the largest cosine.
 */
function addAngles(layer: LayerAcc, cell: CellAcc, t: TensorReport, models: number): void {
  const cosines = t.cosines ?? [];
  const n = t.models?.length ?? t.n ?? 0;
  let k = 0;
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++, k++) {
      const c = cosines[k];
      if (c === undefined) return;
      const key = (t.models?.[i] ?? i) * models + (t.models?.[j] ?? j);
      let pair = layer.pairs.get(key);
      if (pair === undefined) layer.pairs.set(key, (pair = new AngleAcc()));
      if (isStats(c)) {
        const mean = angleOf(c.mean);
        const lo = angleOf(c.max);
        const hi = angleOf(c.min);
        pair.add(mean, lo, hi);
        cell.angles.add(mean, lo, hi);
      } else {
        const a = angleOf(c);
        pair.add(a, a, a);
        cell.angles.add(a, a, a);
      }
    }
  }
}

function angleStats(pairs: Iterable<AngleAcc>): Stats | undefined {
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  let count = 0;
  for (const p of pairs) {
    if (p.count === 0) continue;
    min = Math.min(min, p.lo / p.count);
    max = Math.max(max, p.hi / p.count);
    sum += p.mean / p.count;
    count++;
  }
  return count === 0 ? undefined : { min, mean: sum / count, max, count };
}

const GROUP_ORDER: Record<OutsideTensor['group'], number> = { embedding: 0, other: 1, norm: 2, head: 3 };

export function summarizeLayers(report: InspectReport): LayerSummary {
  return runSync(summarizeSteps(report));
}

/** `summarizeLayers` in slices of a few ms, for a library inside a service (lib/util/sliced.ts). */
export function summarizeLayersSliced(report: InspectReport): Promise<LayerSummary> {
  return runSliced(summarizeSteps(report));
}

function* summarizeSteps(report: InspectReport): Sliced<LayerSummary> {
  const stacks = new Map<string, Map<number, LayerAcc>>();
  const kinds = new Map<string, { index: number; group: 'layer' | 'norm'; tensors: number }>();
  // Per group in report order, each capped: only MAX_OUTSIDE of them are ever shown.
  const outside: OutsideTensor[][] = [[], [], [], []];
  let outsideCount = 0;
  let merged = 0;
  let copied = 0;
  let dropped = 0;
  let negative = 0;
  // Norms' angles go to their cells only, not to the layer's line.
  const scratch = new LayerAcc();
  const roles = new TensorClassifier();

  for (let i = 0; i < report.tensors.length; i++) {
    if (i % CHECK_EVERY === CHECK_EVERY - 1) yield;
    const tensor = report.tensors[i] as TensorReport;
    if (tensor.action === 'drop') {
      dropped++;
      continue;
    }
    const isMerged = tensor.action === 'merge';
    if (isMerged) merged++;
    else copied++;
    if (isMerged && (tensor.tStats?.min ?? tensor.t ?? 0) < 0) negative++;
    const role = roles.classify(tensor.name);
    if (role.layer === undefined || role.stack === undefined) {
      outsideCount++;
      const group = role.group === 'layer' ? 'other' : role.group;
      const into = outside[GROUP_ORDER[group]] as OutsideTensor[];
      if (into.length >= MAX_OUTSIDE) continue;
      const t = new Acc();
      const c = new Acc();
      if (isMerged) {
        addT(t, tensor);
        addC(c, tensor);
      }
      into.push({ name: tensor.name, kind: role.kind, group, vocab: role.vocab, t: t.stats(), c: c.stats() });
      continue;
    }
    let layers = stacks.get(role.stack);
    if (layers === undefined) stacks.set(role.stack, (layers = new Map()));
    let layer = layers.get(role.layer);
    if (layer === undefined) layers.set(role.layer, (layer = new LayerAcc()));
    let kind = kinds.get(role.kind);
    if (kind === undefined) {
      kind = { index: kinds.size, group: role.group === 'norm' ? 'norm' : 'layer', tensors: 0 };
      kinds.set(role.kind, kind);
    }
    kind.tensors++;
    let cell = layer.cells.get(kind.index);
    if (cell === undefined) layer.cells.set(kind.index, (cell = new CellAcc()));
    if (!isMerged || !addT(cell.t, tensor)) cell.copied++;
    else {
      addC(cell.c, tensor);
      addAngles(kind.group === 'layer' ? layer : scratch, cell, tensor, report.models.length);
    }
  }

  const { rows, rowOf, hiddenKinds } = chooseRows(kinds);
  const { columns, members } = chooseColumns(stacks);
  const cells: (Cell | undefined)[] = new Array(rows.length * columns.length).fill(undefined);
  const angle: (Stats | undefined)[] = [];
  members.forEach((layers, col) => {
    const perRow = new Map<number, CellAcc>();
    const pairs = new Map<number, AngleAcc>();
    for (const layer of layers) {
      for (const [key, p] of layer.pairs) {
        let into = pairs.get(key);
        if (into === undefined) pairs.set(key, (into = new AngleAcc()));
        into.merge(p);
      }
      for (const [kindIndex, c] of layer.cells) {
        const row = rowOf.get(kindIndex);
        if (row === undefined) continue;
        let into = perRow.get(row);
        if (into === undefined) perRow.set(row, (into = new CellAcc()));
        into.t.merge(c.t);
        into.c.merge(c.c);
        into.angles.merge(c.angles);
        into.copied += c.copied;
      }
    }
    for (const [row, c] of perRow) {
      const angles = c.angles.stats();
      cells[row * columns.length + col] = {
        t: c.t.stats(),
        angle: angles?.mean,
        angles,
        c: c.c.stats(),
        copied: c.copied,
      };
    }
    angle.push(angleStats(pairs.values()));
  });

  const shownOutside = outside.flat().slice(0, MAX_OUTSIDE);

  const range = new Acc();
  for (const c of cells) if (c?.t !== undefined) range.add(c.t.mean, c.t.mean, c.t.mean);
  for (const o of shownOutside) if (o.t !== undefined) range.add(o.t.mean, o.t.mean, o.t.mean);

  return {
    base: report.base,
    models: report.models,
    filterWise: report.filterWise,
    theta: report.theta,
    columns,
    rows,
    cells,
    angle,
    outside: shownOutside,
    hiddenKinds,
    hiddenOutside: outsideCount - shownOutside.length,
    tRange: range.count === 0 ? undefined : { min: range.min, max: range.max },
    merged,
    copied,
    dropped,
    negative,
  };
}

/**
 * Rows: the MAX_KINDS most frequent kinds (ties: first seen), shown block weights first, then
 * block norms, each in the order the checkpoint lists them (for HF models, the forward order).
 */
function chooseRows(kinds: Map<string, { index: number; group: 'layer' | 'norm'; tensors: number }>): {
  rows: KindRow[];
  rowOf: Map<number, number>;
  hiddenKinds: number;
} {
  const all = [...kinds].map(([kind, k]) => ({ kind, ...k }));
  const kept =
    all.length <= MAX_KINDS
      ? all
      : [...all].sort((a, b) => b.tensors - a.tensors || a.index - b.index).slice(0, MAX_KINDS);
  kept.sort((a, b) => (a.group === b.group ? a.index - b.index : a.group === 'layer' ? -1 : 1));
  const rowOf = new Map<number, number>();
  kept.forEach((k, row) => rowOf.set(k.index, row));
  return {
    rows: kept.map(({ kind, group, tensors }) => ({ kind, group, tensors })),
    rowOf,
    hiddenKinds: all.length - kept.length,
  };
}

/**
 * Columns: stacks in the order first seen, layers ascending; with more than MAX_COLUMNS layers in
 * all, consecutive layers of one stack share a column.
 */
function chooseColumns(stacks: Map<string, Map<number, LayerAcc>>): {
  columns: LayerColumn[];
  members: LayerAcc[][];
} {
  let total = 0;
  for (const layers of stacks.values()) total += layers.size;
  const width = Math.max(1, Math.ceil(total / MAX_COLUMNS));
  const columns: LayerColumn[] = [];
  const members: LayerAcc[][] = [];
  for (const [stack, layers] of stacks) {
    const indices = [...layers.keys()].sort((a, b) => a - b);
    for (let i = 0; i < indices.length; i += width) {
      const group = indices.slice(i, i + width);
      columns.push({ stack, first: group[0] as number, last: group[group.length - 1] as number });
      members.push(group.map((l) => layers.get(l) as LayerAcc));
    }
  }
  return { columns, members };
}
