import * as fs from 'node:fs';
import type { InspectReport } from '../types';
import { inkOn, viridis } from './colour';
import {
  summarizeLayers,
  summarizeLayersSliced,
  type KindRow,
  type LayerColumn,
  type LayerSummary,
  type Stats,
} from './layers';
import { el, escapeXml, num, text } from './xml';

/**
 * The picture of a merge, as SVG: t per layer and tensor kind (a heat map, with the tensors outside
 * the layers apart) and the angle between the fine-tunes' task vectors per layer (mean line, min–max
 * band). Sized for a model card (800 px wide, as Hugging Face shows README images); pure and
 * deterministic: the same report gives the same bytes, with nothing taken from the clock or a counter.
 */

/** The file every merge writes beside the report. */
export const PLOT_FILE = 'model_stock_report.svg';

const WIDTH = 800;
const PAD = 16;
const FONT = 'Helvetica, Arial, sans-serif';
const INK = '#222222';
const MUTED = '#666666';
const COPIED = '#b4b4b4';
const ABSENT = '#f2f2f2';
const BAND = '#9ecae1';
const LINE = '#08519c';
/** Right of the plots: the colour scale and its tick labels. */
const SCALE_WIDTH = 64;
const ANGLE_HEIGHT = 170;
/**
 * Per-kind angle lines, faint, coloured by family so that attention and MLP can be told apart (their
 * angles often run in opposite directions over depth). Matched on the kind's name (lib/plan/roles.ts).
 */
const KIND_FAMILIES: readonly { label: string; colour: string; test: RegExp }[] = [
  {
    label: 'attention kinds',
    colour: '#f4a582',
    test: /attn|attention|(^|[._])(q|k|v|o|qkv)_proj$|query|key|value/,
  },
  {
    label: 'MLP kinds',
    colour: '#a6d96a',
    test: /mlp|ffn|feed_forward|experts|(gate|up|down)_proj|dense_h_to_4h|dense_4h_to_h|(^|[._])(fc\d?|w[123])$/,
  },
  { label: 'other kinds', colour: '#c8c8c8', test: /(?:)/ },
];
/** Faint per-kind angle lines beyond this many kinds would be noise. */
const MAX_KIND_LINES = 16;

export function renderReportSvg(report: InspectReport): string {
  return drawSummary(summarizeLayers(report));
}

/**
 * The picture of a finished merge, or undefined with a warning: a fault in drawing costs the
 * picture, never the merged weights.
 */
export async function reportPicture(
  report: InspectReport,
  warn: (m: string) => void,
): Promise<string | undefined> {
  try {
    return drawSummary(await summarizeLayersSliced(report));
  } catch (e) {
    warn(`${PLOT_FILE} not written: ${e instanceof Error ? e.message : String(e)}`);
    return undefined;
  }
}

const DESC = 'Drawn by model-stock from its merge report (model_stock_report.json).';
/** How far into a file its <desc> may lie (after a title naming every model). */
const SNIFF_BYTES = 1 << 16;

/** Whether `file` is a picture model-stock drew (which a later one may replace). */
export async function isEarlierPicture(file: string): Promise<boolean> {
  let handle: fs.promises.FileHandle | undefined;
  try {
    handle = await fs.promises.open(file, 'r');
    const { buffer, bytesRead } = await handle.read(Buffer.alloc(SNIFF_BYTES), 0, SNIFF_BYTES, 0);
    const head = buffer.subarray(0, bytesRead).toString('utf8');
    return head.startsWith('<svg ') && head.includes(`<desc>${escapeXml(DESC)}</desc>`);
  } catch {
    return false;
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

/** Width of `s` at `size` px in a sans-serif font, erring wide so fitted labels never overflow. */
const widthOf = (s: string, size: number): number => [...s].length * size * 0.6;

/** `s` shortened in the middle (paths keep their informative tail) to fit `width` at `size` px. */
export function fit(s: string, width: number, size: number): string {
  const chars = [...s];
  const room = Math.floor(width / (size * 0.6));
  if (chars.length <= room) return s;
  if (room < 2) return '…';
  const head = Math.floor((room - 1) / 3);
  return chars.slice(0, head).join('') + '…' + chars.slice(chars.length - (room - 1 - head)).join('');
}

const fmtT = (x: number): string => x.toFixed(3);

/** The t colour scale: data-fitted to tenths (at least 0.2 wide), within [−1, 1]. */
interface Scale {
  readonly lo: number;
  readonly hi: number;
  readonly frac: (t: number) => number;
}

function tScale(range: LayerSummary['tRange']): Scale {
  let lo = range === undefined ? 0 : Math.max(-1, Math.floor(range.min * 10 + 1e-9) / 10);
  let hi = range === undefined ? 1 : Math.min(1, Math.ceil(range.max * 10 - 1e-9) / 10);
  if (hi - lo < 0.2) {
    lo = Math.max(-1, hi - 0.2);
    hi = lo + 0.2;
  }
  return { lo, hi, frac: (t) => (t - lo) / (hi - lo) };
}

const range = (s: Stats, digits: (x: number) => string): string =>
  s.min === s.max ? digits(s.mean) : `${digits(s.mean)} (${digits(s.min)} to ${digits(s.max)})`;

function header(s: LayerSummary, out: string[]): number {
  const width = WIDTH - 2 * PAD;
  const n = s.models.length;
  out.push(
    text(
      { x: PAD, y: 26, 'font-size': 18, 'font-weight': 'bold', fill: INK },
      'Model Stock: interpolation ratio t and task-vector angle per layer',
    ),
  );
  const lines = [
    `base: ${s.base}`,
    `fine-tuned (N = ${n}): ${s.models.join(' · ')}`,
    `${s.filterWise ? 'filter-wise (t per output row)' : 'layer-wise (t per tensor)'} · ${s.theta} · ` +
      `${s.merged} tensor${s.merged === 1 ? '' : 's'} merged, ${s.copied} copied` +
      (s.dropped > 0 ? `, ${s.dropped} left out` : ''),
  ];
  lines.forEach((line, i) =>
    out.push(text({ x: PAD, y: 46 + 16 * i, 'font-size': 12, fill: MUTED }, fit(line, width, 12))),
  );
  return 46 + 16 * (lines.length - 1) + 14;
}

function sectionTitle(y: number, title: string, out: string[]): number {
  out.push(text({ x: PAD, y: y + 14, 'font-size': 13, 'font-weight': 'bold', fill: INK }, title));
  return y + 22;
}

function outsideStrip(s: LayerSummary, scale: Scale, top: number, out: string[]): number {
  if (s.outside.length === 0) return top;
  const y = sectionTitle(top, 'Outside the layers: t per tensor', out);
  const gap = 6;
  const slots = s.outside.length + (s.hiddenOutside > 0 ? 1 : 0);
  const w = Math.min(150, (WIDTH - 2 * PAD - gap * (slots - 1)) / slots);
  const h = s.filterWise ? 34 : 26;
  s.outside.forEach((o, i) => {
    const x = PAD + i * (w + gap);
    out.push(text({ x, y: y + 10, 'font-size': 10, fill: MUTED }, fit(o.kind, w, 10)));
    const cellTop = y + 14;
    const tip = `${o.name} (${o.group}${o.vocab !== undefined ? `, vocabulary ${o.vocab}` : ''}): `;
    if (o.t === undefined) {
      out.push(
        el(
          'rect',
          { class: 'outside', x, y: cellTop, width: w, height: h, fill: COPIED },
          el('title', {}, escapeXml(`${tip}copied from the base`)),
        ),
        text(
          { x: x + w / 2, y: cellTop + 17, 'font-size': 11, 'text-anchor': 'middle', fill: INK },
          'copied',
        ),
      );
      return;
    }
    const f = scale.frac(o.t.mean);
    const ink = inkOn(f);
    out.push(
      el(
        'rect',
        { class: 'outside', x, y: cellTop, width: w, height: h, fill: viridis(f) },
        el('title', {}, escapeXml(`${tip}t = ${range(o.t, fmtT)}`)),
      ),
      text(
        { x: x + w / 2, y: cellTop + 17, 'font-size': 12, 'text-anchor': 'middle', fill: ink },
        `t ${fmtT(o.t.mean)}`,
      ),
    );
    if (s.filterWise && o.t.min !== o.t.max) {
      out.push(
        text(
          { x: x + w / 2, y: cellTop + 29, 'font-size': 9, 'text-anchor': 'middle', fill: ink },
          fit(`rows ${o.t.min.toFixed(2)} to ${o.t.max.toFixed(2)}`, w, 9),
        ),
      );
    }
  });
  if (s.hiddenOutside > 0) {
    const x = PAD + s.outside.length * (w + gap);
    out.push(text({ x, y: y + 14 + 17, 'font-size': 11, fill: MUTED }, `+${s.hiddenOutside} more`));
  }
  return y + 14 + h + 12;
}

interface Grid {
  readonly left: number;
  readonly width: number;
  readonly column: number;
}

/** Tick every k-th layer of a stack, k the first of 1, 2, 5, 10, 20, 50… leaving ≥ 24 px between labels. */
function tickEvery(columnWidth: number): number {
  for (let k = 1; ; k *= 10) {
    for (const m of [1, 2, 5]) if (k * m * columnWidth >= 24) return k * m;
  }
}

function layerAxis(s: LayerSummary, g: Grid, y: number, out: string[]): number {
  const every = tickEvery(g.column);
  let inStack = 0;
  s.columns.forEach((c, i) => {
    inStack = i > 0 && s.columns[i - 1]?.stack === c.stack ? inStack + 1 : 0;
    if (inStack % every !== 0) return;
    const x = g.left + (i + 0.5) * g.column;
    out.push(
      el('line', { x1: x, y1: y, x2: x, y2: y + 3, stroke: MUTED }),
      text({ x, y: y + 13, 'font-size': 10, 'text-anchor': 'middle', fill: MUTED }, String(c.first)),
    );
  });
  out.push(
    text(
      { x: g.left + g.width / 2, y: y + 27, 'font-size': 11, 'text-anchor': 'middle', fill: INK },
      s.columns.some((c) => c.first !== c.last) ? 'layer (first of each group of layers)' : 'layer',
    ),
  );
  return y + 32;
}

/** Vertical rules between the towers of a multi-tower model, and their names above `top`. */
function stackRules(
  s: LayerSummary,
  g: Grid,
  top: number,
  bottom: number,
  labels: boolean,
  out: string[],
): void {
  let start = 0;
  for (let i = 1; i <= s.columns.length; i++) {
    const here = s.columns[i]?.stack;
    if (i < s.columns.length && here === s.columns[start]?.stack) continue;
    if (labels) {
      const x0 = g.left + start * g.column;
      const span = (i - start) * g.column;
      const name = s.columns[start]?.stack || '(top level)';
      out.push(
        text(
          { x: x0 + span / 2, y: top - 4, 'font-size': 10, 'text-anchor': 'middle', fill: MUTED },
          fit(name, span - 4, 10),
        ),
      );
    }
    if (i < s.columns.length) {
      const x = g.left + i * g.column;
      out.push(el('line', { x1: x, y1: top, x2: x, y2: bottom, stroke: INK, 'stroke-width': 1.5 }));
    }
    start = i;
  }
}

function colourBar(scale: Scale, x: number, top: number, height: number, out: string[]): void {
  const steps = 40;
  const h = height / steps;
  for (let i = 0; i < steps; i++) {
    // top of the bar is the top of the scale
    out.push(
      el('rect', { x, y: top + i * h, width: 12, height: h + 0.5, fill: viridis(1 - (i + 0.5) / steps) }),
    );
  }
  out.push(el('rect', { x, y: top, width: 12, height, fill: 'none', stroke: MUTED, 'stroke-width': 0.5 }));
  const span = scale.hi - scale.lo;
  const step = span > 1 ? 0.5 : span > 0.5 ? 0.2 : 0.1;
  const first = Math.ceil(scale.lo / step - 1e-9);
  for (let k = first; k * step <= scale.hi + 1e-9; k++) {
    const v = k * step;
    const y = top + (1 - scale.frac(v)) * height;
    out.push(
      el('line', { x1: x + 12, y1: y, x2: x + 15, y2: y, stroke: MUTED }),
      text({ x: x + 18, y: y + 3.5, 'font-size': 10, fill: MUTED }, num(v).replace('-', '−')),
    );
  }
  out.push(
    text(
      { x: x + 6, y: top - 6, 'font-size': 11, 'font-weight': 'bold', 'text-anchor': 'middle', fill: INK },
      't',
    ),
  );
}

function heatMap(
  s: LayerSummary,
  scale: Scale,
  g: Grid,
  placeOf: (c: number) => string,
  top: number,
  out: string[],
): number {
  let y = sectionTitle(top, 'Interpolation ratio t per layer and tensor kind', out);
  const multiStack = new Set(s.columns.map((c) => c.stack)).size > 1;
  if (multiStack) y += 14;
  const rows = s.rows.length;
  const rh = rows <= 16 ? 18 : Math.max(10, Math.floor(300 / rows));
  const labelSize = Math.min(11, rh - 2);
  const normGap = 6;
  const rowTop = (r: number): number =>
    y + r * rh + (s.rows[r]?.group === 'norm' && s.rows.some((k) => k.group === 'layer') ? normGap : 0);
  const bottom = rowTop(rows - 1) + rh;
  out.push(el('rect', { x: g.left, y, width: g.width, height: bottom - y, fill: ABSENT }));
  const inset = g.column >= 6 ? 0.5 : 0;
  const cells: string[] = [];
  s.rows.forEach((row, r) => {
    const ry = rowTop(r);
    out.push(
      text(
        {
          x: g.left - 6,
          y: ry + rh / 2 + labelSize * 0.35,
          'font-size': labelSize,
          'text-anchor': 'end',
          fill: INK,
        },
        fit(row.kind, g.left - PAD - 6, labelSize),
      ),
    );
    s.columns.forEach((col, c) => {
      const cell = s.cells[r * s.columns.length + c];
      if (cell === undefined) return;
      const tip = `${placeOf(c)}, ${row.kind}: `;
      const fill = cell.t === undefined ? COPIED : viridis(scale.frac(cell.t.mean));
      const note =
        cell.t === undefined
          ? 'copied from the base'
          : `t = ${range(cell.t, fmtT)}${cell.copied > 0 ? `; ${cell.copied} copied from the base` : ''}`;
      cells.push(
        el(
          'rect',
          {
            class: 'cell',
            x: g.left + c * g.column + inset,
            y: ry + inset,
            width: g.column - 2 * inset,
            height: rh - 2 * inset,
            fill,
          },
          el('title', {}, escapeXml(tip + note)),
        ),
      );
    });
  });
  out.push(el('g', { 'shape-rendering': 'crispEdges' }, cells.join('')));
  if (multiStack) stackRules(s, g, y, bottom, true, out);
  // The scale keeps a readable height beside a short map, reaching below it if need be.
  const barHeight = Math.max(90, bottom - y - 12);
  const barBottom = s.tRange === undefined ? y : y + 12 + barHeight;
  if (s.tRange !== undefined) colourBar(scale, g.left + g.width + 14, y + 12, barHeight, out);
  y = layerAxis(s, g, bottom + 2, out);

  const swatch = (fill: string): string =>
    el('rect', { x: 0, y: 2, width: 12, height: 12, fill, stroke: MUTED, 'stroke-width': 0.5 });
  const items: [string, string][] = [];
  if (s.cells.some((c) => c !== undefined && c.t === undefined))
    items.push([swatch(COPIED), 'copied from the base (not merged)']);
  if (s.cells.some((c) => c === undefined)) items.push([swatch(ABSENT), 'no such tensor in this layer']);
  if (items.length > 0) legendRow(items, g.left, y, out);
  return Math.max(y + (items.length > 0 ? 24 : 4), barBottom + 8);
}

/** A row of legend entries, each a symbol drawn at (0, 0)–(18, 14) and its label. */
function legendRow(items: readonly [string, string][], left: number, y: number, out: string[]): void {
  let x = left;
  for (const [symbol, label] of items) {
    out.push(el('g', { transform: `translate(${num(x)},${num(y)})` }, symbol));
    const room = WIDTH - PAD - x - 23;
    out.push(text({ x: x + 23, y: y + 12, 'font-size': 11, fill: MUTED }, fit(label, room, 11)));
    x += 23 + Math.min(room, widthOf(label, 11)) + 16;
  }
}

/** Stretches of consecutive columns of one tower where `values` is defined. */
function runsOf(s: LayerSummary, values: readonly unknown[]): number[][] {
  const runs: number[][] = [];
  values.forEach((v, c) => {
    if (v === undefined) return;
    const prev = runs[runs.length - 1];
    if (
      prev !== undefined &&
      prev[prev.length - 1] === c - 1 &&
      s.columns[c - 1]?.stack === s.columns[c]?.stack
    )
      prev.push(c);
    else runs.push([c]);
  });
  return runs;
}

function angleChart(
  s: LayerSummary,
  g: Grid,
  placeOf: (c: number) => string,
  top: number,
  out: string[],
): number {
  let y = sectionTitle(top, 'Angle between the fine-tunes’ task vectors per layer (degrees)', out);
  const defined = s.angle.filter((a): a is Stats => a !== undefined);
  const h = ANGLE_HEIGHT;
  if (defined.length === 0) {
    out.push(
      text({ x: g.left, y: y + 20, 'font-size': 12, fill: MUTED }, 'no merged tensor inside the layers'),
    );
    return y + 34;
  }
  const kindRows = s.rows.flatMap((r, i) => (r.group === 'layer' ? [i] : [])).slice(0, MAX_KIND_LINES);
  const kindAngles = kindRows.map((r) => s.columns.map((_, c) => s.cells[r * s.columns.length + c]?.angle));
  let lo = Infinity;
  let hi = -Infinity;
  for (const a of defined) [lo, hi] = [Math.min(lo, a.min), Math.max(hi, a.max)];
  for (const a of kindAngles.flat()) if (a !== undefined) [lo, hi] = [Math.min(lo, a), Math.max(hi, a)];
  lo = Math.floor(lo / 10) * 10;
  hi = Math.ceil(hi / 10) * 10;
  if (hi - lo < 20) {
    hi = Math.min(180, lo + 20);
    lo = hi - 20;
  }
  const step = [5, 10, 15, 30, 45, 90].find((k) => (hi - lo) / k <= 6) ?? 90;
  const yOf = (deg: number): number => y + h - ((deg - lo) / (hi - lo)) * h;
  const xOf = (c: number): number => g.left + (c + 0.5) * g.column;
  out.push(el('rect', { x: g.left, y, width: g.width, height: h, fill: '#ffffff', stroke: '#cccccc' }));
  for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
    out.push(
      el('line', { x1: g.left, y1: yOf(v), x2: g.left + g.width, y2: yOf(v), stroke: '#e4e4e4' }),
      text({ x: g.left - 6, y: yOf(v) + 3.5, 'font-size': 10, 'text-anchor': 'end', fill: MUTED }, `${v}°`),
    );
  }
  const kinds = kindAngles.map((angles) =>
    runsOf(s, angles)
      .filter((run) => run.length > 1)
      .map((run) => `M${run.map((c) => `${num(xOf(c))},${num(yOf(angles[c] as number))}`).join('L')}`)
      .join(''),
  );
  const familyOf = (row: number): number =>
    KIND_FAMILIES.findIndex((f) => f.test.test((s.rows[row] as KindRow).kind));
  const families = KIND_FAMILIES.map((f, i) => ({
    ...f,
    d: kinds.filter((_, k) => familyOf(kindRows[k] as number) === i).join(''),
  })).filter((f) => f.d !== '');
  for (const f of families)
    out.push(el('path', { d: f.d, fill: 'none', stroke: f.colour, 'stroke-width': 1 }));
  const runs = runsOf(s, s.angle);
  const band: string[] = [];
  const line: string[] = [];
  const dots: string[] = [];
  for (const run of runs) {
    const stats = run.map((c) => s.angle[c] as Stats);
    if (run.length === 1) {
      const x = xOf(run[0] as number);
      const a = stats[0] as Stats;
      band.push(`M${num(x - 2)},${num(yOf(a.max))}H${num(x + 2)}V${num(yOf(a.min))}H${num(x - 2)}Z`);
    } else {
      const upper = run.map((c, i) => `${num(xOf(c))},${num(yOf((stats[i] as Stats).max))}`);
      const lower = run.map((c, i) => `${num(xOf(c))},${num(yOf((stats[i] as Stats).min))}`).reverse();
      band.push(`M${upper.join('L')}L${lower.join('L')}Z`);
      line.push(`M${run.map((c, i) => `${num(xOf(c))},${num(yOf((stats[i] as Stats).mean))}`).join('L')}`);
    }
    run.forEach((c, i) => {
      const a = stats[i] as Stats;
      const tip = `${placeOf(c)}: ${range(a, (x) => `${x.toFixed(1)}°`)}`;
      dots.push(
        el(
          'circle',
          { class: 'angle', cx: xOf(c), cy: yOf(a.mean), r: g.column >= 8 ? 2.5 : 1.5, fill: LINE },
          el('title', {}, escapeXml(tip)),
        ),
      );
    });
  }
  out.push(el('path', { d: band.join(''), fill: BAND, 'fill-opacity': 0.6, stroke: 'none' }));
  if (line.length > 0)
    out.push(
      el('path', {
        d: line.join(''),
        fill: 'none',
        stroke: LINE,
        'stroke-width': 1.75,
        'stroke-linejoin': 'round',
      }),
    );
  out.push(el('g', {}, dots.join('')));
  if (new Set(s.columns.map((c) => c.stack)).size > 1) stackRules(s, g, y, y + h, false, out);
  y = layerAxis(s, g, y + h + 2, out);

  const items: [string, string][] = [
    [el('line', { x1: 0, y1: 8, x2: 18, y2: 8, stroke: LINE, 'stroke-width': 1.75 }), 'mean of the layer'],
  ];
  // With one pair and whole tensors the band is the line itself: no legend entry for it.
  if (defined.some((a) => a.min !== a.max)) {
    items.push([
      el('rect', { x: 0, y: 2, width: 18, height: 12, fill: BAND, 'fill-opacity': 0.6 }),
      s.filterWise ? 'min–max over pairs and rows' : 'min–max over pairs',
    ]);
  }
  for (const f of families)
    items.push([el('line', { x1: 0, y1: 8, x2: 18, y2: 8, stroke: f.colour, 'stroke-width': 1 }), f.label]);
  legendRow(items, g.left, y, out);
  return y + 24;
}

function notes(s: LayerSummary, top: number, out: string[]): number {
  const lines: string[] = [];
  if (s.hiddenKinds > 0)
    lines.push(`${s.hiddenKinds} rarer tensor kinds are not shown (the ${s.rows.length} most frequent are).`);
  if (s.columns.some((c) => c.first !== c.last))
    lines.push('More layers than columns: each column shows a group of consecutive layers.');
  if (s.negative > 0)
    lines.push(
      `t < 0 in ${s.negative} tensor${s.negative === 1 ? '' : 's'}: task vectors point apart (negative cosine), so the merge moves away from their average.`,
    );
  lines.forEach((l, i) =>
    out.push(
      text({ x: PAD, y: top + 12 + 15 * i, 'font-size': 11, fill: MUTED }, fit(l, WIDTH - 2 * PAD, 11)),
    ),
  );
  return top + 15 * lines.length + (lines.length > 0 ? 6 : 0);
}

/** The SVG document for a summary. */
export function drawSummary(s: LayerSummary): string {
  const out: string[] = [];
  const scale = tScale(s.tRange);
  let y = header(s, out) + 8;
  y = outsideStrip(s, scale, y, out);
  if (s.columns.length > 0 && s.rows.length > 0) {
    const labelWidth = Math.max(...s.rows.map((r) => widthOf(r.kind, 11)));
    const left = PAD + Math.min(200, Math.max(60, labelWidth)) + 8;
    const width = WIDTH - PAD - SCALE_WIDTH - left;
    const g: Grid = { left, width, column: width / s.columns.length };
    const towers = new Set(s.columns.map((c) => c.stack)).size > 1;
    const placeOf = (c: number): string => {
      const col = s.columns[c] as LayerColumn;
      const where = col.first === col.last ? `layer ${col.first}` : `layers ${col.first}–${col.last}`;
      return towers ? `${col.stack || '(top level)'} ${where}` : where;
    };
    y = heatMap(s, scale, g, placeOf, y + 4, out);
    y = angleChart(s, g, placeOf, y + 4, out);
  } else {
    y = sectionTitle(y + 4, 'No tensor names with a layer index: nothing to draw per layer', out);
  }
  y = notes(s, y, out) + PAD - 8;

  const height = Math.ceil(y);
  const summary = `Model Stock merge of ${s.models.join(', ')} into ${s.base}`;
  return (
    el(
      'svg',
      {
        xmlns: 'http://www.w3.org/2000/svg',
        width: WIDTH,
        height,
        viewBox: `0 0 ${WIDTH} ${height}`,
        'font-family': FONT,
        role: 'img',
      },
      el('title', {}, escapeXml(summary)) +
        el('desc', {}, escapeXml(DESC)) +
        el('rect', { width: WIDTH, height, fill: '#ffffff' }) +
        out.join(''),
    ) + '\n'
  );
}
