/**
 * `npm start`: generates a small LLaMA-shaped example (base + 2 fine-tunes, bf16, sharded) once,
 * merges it with Model Stock and prints the per-layer interpolation ratios and the throughput.
 */
import * as path from 'node:path';
import { generateFixture, PRESETS, readCachedFixture, type FixtureInfo } from './fixtures/generate';
import { mergeModelStock } from './index';
import type { MergeProgress, MergeReport } from './types';

/** The repository root: this file runs as dist/lib/main.js. */
const ROOT = path.resolve(__dirname, '..', '..');
const EXAMPLE_DIR = path.join(ROOT, '.cache', 'example');
const KINDS = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const;
const LAYER_TENSOR = /^model\.layers\.(\d+)\.(?:self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj\.weight$/;

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

  const t = new Map<string, number>();
  const others: string[] = [];
  for (const tensor of report.tensors) {
    const m = LAYER_TENSOR.exec(tensor.name);
    if (m !== null && tensor.t !== undefined) t.set(`${m[1]}.${m[2]}`, tensor.t);
    else if (tensor.t !== undefined && !tensor.name.includes('layernorm')) {
      others.push(`${tensor.name.replace(/\.weight$/, '')} ${tensor.t.toFixed(3)}`);
    }
  }
  console.log(`\nInterpolation ratio t per layer (N = ${fixture.models.length}: t = 2c/(1+c)):`);
  console.log(['layer', ...KINDS].map((h) => h.padStart(6)).join(''));
  for (let layer = 0; layer < fixture.options.layers; layer++) {
    const cells = KINDS.map((k) => t.get(`${layer}.${k}`)?.toFixed(3) ?? '-');
    console.log([String(layer), ...cells].map((c) => c.padStart(6)).join(''));
  }
  if (others.length > 0) console.log(`  ${others.join(', ')}`);
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

function rel(p: string): string {
  return path.relative(process.cwd(), p) || '.';
}

main().catch((e: unknown) => {
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  console.error(e instanceof Error ? e.message : String(e));
  process.exitCode = 1;
});
