import { strict as assert } from 'node:assert';
import { getEventListeners } from 'node:events';
import * as path from 'node:path';
import { generateFixture, PRESETS } from '../../lib/fixtures/generate';
import { mergeModelStock } from '../../lib/merge';
import { backendsUnderTest } from '../helpers/backends';
import { assertNoStall, measureLiveness } from '../helpers/liveness';
import { useTmpDir } from '../helpers/tmp';
import { mergeArgs, runCli } from '../helpers/cli';

describe('merge lifecycle', () => {
  const tmp = useTmpDir();
  let fixture: { base: string; models: string[] };

  before(async function () {
    this.timeout(300_000);
    // ≈ 54 MB per model, 3 shards: long enough for the event loop to matter.
    const info = await generateFixture({ ...PRESETS.example, dir: path.join(tmp.dir, 'fx') });
    fixture = { base: info.base, models: [...info.models] };
  });

  for (const backend of backendsUnderTest()) {
    it(`the event loop keeps ticking during a merge (${backend})`, async () => {
      // A 5 ms timer fires throughout; the longest stretch the merge holds the loop (measured in CPU
      // time too, so a loaded machine's scheduling is not charged to the merge) stays far below its duration.
      const r = await measureLiveness(() =>
        mergeModelStock({ ...fixture, out: path.join(tmp.dir, `out-${backend}`), backend, fsync: false }),
      );
      assert.ok(r.ticks >= 3, `only ${r.ticks} ticks in ${r.elapsedMs.toFixed(0)} ms`);
      assertNoStall(`a ${backend} merge`, r);
    });
  }

  it('a long-lived signal (a service shutdown) keeps no listener of the merges it served', async () => {
    const service = new AbortController();
    for (const backend of backendsUnderTest()) {
      for (const io of ['mmap', 'pread', 'direct'] as const) {
        await mergeModelStock({
          ...fixture,
          out: path.join(tmp.dir, `signal-${backend}-${io}`),
          backend,
          io,
          fsync: false,
          signal: service.signal,
        });
        assert.equal(getEventListeners(service.signal, 'abort').length, 0, `${backend}, ${io}`);
      }
    }
  });

  it('falls back to pure TypeScript when the addon is absent, saying why once', () => {
    const out = path.join(tmp.dir, 'fallback');
    const env = { MODEL_STOCK_ADDON: path.join(tmp.dir, 'missing.node') };
    const r = runCli([...mergeArgs(fixture.base, fixture.models, out), '--no-fsync'], env);
    assert.equal(r.code, 0, r.stderr);
    const notes = r.stderr.split('\n').filter((l) => l.includes('native backend unavailable'));
    assert.equal(notes.length, 1, r.stderr);
    assert.ok(notes[0]!.includes('missing.node'), notes[0]);
    assert.match(r.stdout, /js backend/);
    const forced = runCli(
      [...mergeArgs(fixture.base, fixture.models, `${out}2`), '--backend', 'native'],
      env,
    );
    assert.equal(forced.code, 1);
    assert.match(forced.stderr.split('\n')[0]!, /BACKEND_UNAVAILABLE/);
  });
});
