/**
 * `npm start`: generates a small LLaMA-shaped example (base + 2 fine-tunes, bf16, sharded) once,
 * merges it with Model Stock and prints the per-layer interpolation ratios, the picture's path and the
 * throughput.
 */
import * as path from 'node:path';
import { generateFixture, PRESETS, readCachedFixture, type FixtureInfo } from './fixtures/generate';
import { mergeModelStock } from './index';
import { summarizeLayers } from './report/layers';
import { PLOT_FILE } from './report/svg';
import type { MergeProgress, MergeReport } from './types';

/** The repository root: this file runs as dist/lib/main.js. */
const ROOT = path.resolve(__dirname, '..', '..');
const EXAMPLE_DIR = path.join(ROOT, '.cache', 'example');

async function main(): Promise<void> {
  const opts = { ...PRESETS.example, dir: EXAMPLE_DIR };
  let fixture = await readCachedFixture(opts);
  if (fixture === undefined) {
    const mb = (estimateBytes() / 1e6).toFixed(0);
    console.log(
      `Generating the example in ${rel(EXAMPLE_DIR)}: base + ${opts.models} fine-tunes, ${mb} MB each, bf16…`,
    );
    fixture = await generateFixture(opts);
    console.log(`  done in ${fixture.seconds.toFixed(1)} s`);
  }

  const out = path.join(EXAMPLE_DIR, 'merged');
  console.log(`Merging ${rel(fixture.base)} + ${fixture.models.map(rel).join(', ')} → ${rel(out)}`);
  const started = process.hrtime.bigint();
  const report = await mergeModelStock({
    base: fixture.base,
    models: fixture.models,
    out,
    overwrite: true,
    onProgress: progressLine(),
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  printReport(report, fixture, seconds);
}

function printReport(report: MergeReport, fixture: FixtureInfo, seconds: number): void {
  const b = report.backend;
  console.log(`Backend: ${b.name} (${b.isa}, ${b.threads} thread${b.threads === 1 ? '' : 's'})`);

  // The same per-layer aggregates the picture is drawn from; block norms are left to the picture.
  const s = summarizeLayers(report);
  const rows = s.rows.flatMap((r, i) => (r.group === 'layer' ? [i] : []));
  const head = rows.map((r) => shortKind(s.rows[r]?.kind ?? ''));
  const width = Math.max(6, ...head.map((h) => h.length + 1));
  console.log(`\nInterpolation ratio t per layer (N = ${fixture.models.length}: t = 2c/(1+c)):`);
  console.log(['layer', ...head].map((h) => h.padStart(width)).join(''));
  s.columns.forEach((col, c) => {
    const cells = rows.map((r) => s.cells[r * s.columns.length + c]?.t?.mean.toFixed(3) ?? '-');
    console.log([String(col.first), ...cells].map((x) => x.padStart(width)).join(''));
  });
  const others = s.outside.map((o) => `${o.kind} ${o.t?.mean.toFixed(3) ?? 'copied'}`);
  if (others.length > 0) console.log(`  ${others.join(', ')}`);
  console.log(`Picture: ${rel(path.join(report.out, PLOT_FILE))} (t per layer and kind, angle per layer)`);
  for (const w of report.warnings) console.log(`warning: ${w}`);

  const inputBytes = fixture.fileBytesPerModel * (fixture.models.length + 1);
  console.log(
    `\n${(inputBytes / 1e6).toFixed(0)} MB of input in ${seconds.toFixed(2)} s: ` +
      `${(inputBytes / 1e9 / seconds).toFixed(2)} GB/s (wall, including planning and fsync)`,
  );
}

/** Tensor data bytes of one example model, for the message before generating. */
function estimateBytes(): number {
  const { hidden: h, intermediate: i, layers, vocab, heads, kvHeads } = PRESETS.example;
  const kv = (h / heads) * kvHeads;
  const perLayer = 2 * h * h + 2 * kv * h + 3 * h * i + 2 * h;
  return 2 * (2 * vocab * h + layers * perLayer + h);
}

function progressLine(): ((p: MergeProgress) => void) | undefined {
  if (!process.stderr.isTTY) return undefined;
  let last = 0;
  return (p) => {
    const now = Date.now();
    if (now - last < 100 && p.bytesDone < p.bytesTotal) return;
    last = now;
    const pct = p.bytesTotal > 0 ? (100 * p.bytesDone) / p.bytesTotal : 100;
    process.stderr.write(`\r\x1b[K  ${pct.toFixed(0)}%  ${p.tensor ?? ''}`);
  };
}

/** `self_attn.q_proj` → `q`, `mlp.down_proj` → `down`: a table header. */
function shortKind(kind: string): string {
  return (kind.split('.').pop() ?? kind).replace(/_proj$/, '');
}

function rel(p: string): string {
  return path.relative(process.cwd(), p) || '.';
}

main().catch((e: unknown) => {
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  console.error(e instanceof Error ? e.message : String(e));
  process.exitCode = 1;
});
