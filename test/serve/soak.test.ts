import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { mergeBody, request, serveFolders, sqliteOrSkip, stagingLeft, waitForJob } from '../helpers/serve';
import { startServeChild, type ChildStats, type ServeChild } from '../helpers/serveChild';
import { useTmpDir } from '../helpers/tmp';

/**
 * A short soak: ten merges in one server process. After the first few (caches, the thread pool, V8's
 * code), descriptors and mappings return to their level after every merge: no file, socket or mapping
 * leaks per job; no staging folder is left. The long soak (100 merges, RSS) is a bench.
 */
const MERGES = 10;
const WARMUP = 3;
/**
 * Anonymous mappings V8 and malloc may add between two quiet moments, even after a full collection:
 * JIT code still warming up, a malloc arena for a thread (measured over 200 merges: +4 per ~20 merges,
 * once +64 at a time, with the live heap flat; the heap's growth was optimised code). Files mapped are
 * counted exactly.
 */
const ANON_SLACK = 96;

describe('model-stock serve: ten merges in one process leak nothing', function () {
  this.timeout(180_000);
  const tmp = useTmpDir('model-stock-serve-soak-');
  let server: ServeChild | undefined;
  after(async () => void (await server?.stop()));

  it('descriptors and mappings back to their level, no input mapped, no staging left', async function () {
    await sqliteOrSkip(this);
    const f = await serveFolders(tmp.dir);
    server = await startServeChild({ models: f.models, out: f.out, state: f.state });
    /** Stats once the last response's connection has closed on the server's side too. */
    const settled = async (level?: ChildStats): Promise<ChildStats> => {
      let s = await server!.stats();
      for (let i = 0; i < 50 && level !== undefined && s.fds > level.fds; i++) {
        await new Promise((r) => setTimeout(r, 20));
        s = await server!.stats();
      }
      return s;
    };
    let level: ChildStats | undefined;
    const seen: ChildStats[] = [];
    for (let i = 0; i < MERGES; i++) {
      const r = await request(server.port, 'POST', '/api/jobs', { body: mergeBody(`soak-${i}`) });
      assert.equal(r.status, 201, r.text);
      assert.equal((await waitForJob(server.port, r.json.id)).state, 'succeeded');
      const s = await settled(level);
      seen.push(s);
      assert.equal(s.inputMaps, 0, `merge ${i}: inputs still mapped`);
      assert.deepEqual(stagingLeft(f.out), [], `merge ${i}`);
      if (i === WARMUP - 1) level = s;
      if (level !== undefined) {
        assert.ok(s.fds <= level.fds, `merge ${i}: ${s.fds} descriptors, ${level.fds} after the warm-up`);
        assert.ok(
          s.fileMaps <= level.fileMaps,
          `merge ${i}: ${s.fileMaps} file mappings, ${level.fileMaps} after`,
        );
        assert.ok(s.maps <= level.maps + ANON_SLACK, `merge ${i}: ${s.maps} mappings, ${level.maps} after`);
      }
    }
    assert.equal(fs.readdirSync(f.out).filter((n) => n.startsWith('soak-')).length, MERGES);
    assert.ok(fs.existsSync(path.join(f.out, `soak-${MERGES - 1}`, 'model_stock_report.json')));
    const stopped = await server.stop();
    server = undefined;
    assert.equal(stopped.code, 0, JSON.stringify(seen));
  });
});
