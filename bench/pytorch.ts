/**
 * The bench fixture saved as PyTorch weights (lib/fixtures/torchZip.ts: what torch.save writes for
 * transformers' shards), generated once beside it in .cache/ and kept while the safetensors fixture it
 * was made from is unchanged: `npm run bench`'s `.bin` row merges the same weights as its default row.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { FixtureInfo } from '../lib/fixtures/generate';
import { saveAsPytorch } from '../lib/fixtures/torchZip';

const MARKER = 'converted-from.json';

export async function pytorchFixture(f: FixtureInfo): Promise<{ base: string; models: string[] }> {
  const dir = `${f.dir}-pytorch`;
  const to = (model: string): string => path.join(dir, path.basename(model));
  const source = JSON.stringify({ generator: f.generator, options: f.options, version: 1 });
  const marker = path.join(dir, MARKER);
  if (!existsSync(marker) || readFileSync(marker, 'utf8') !== source) {
    const started = performance.now();
    rmSync(dir, { recursive: true, force: true });
    for (const model of [f.base, ...f.models]) await saveAsPytorch(model, to(model));
    // Written last: an interrupted conversion is never taken for a finished one.
    writeFileSync(marker, source);
    console.log(
      `saved the fixture as PyTorch shards in ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
  }
  return { base: to(f.base), models: f.models.map(to) };
}
