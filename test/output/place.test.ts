import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ModelStockError } from '../../lib/errors';
import { REPORT_FILE, StagingDir, isReplaceableOutput } from '../../lib/output/atomic';
import { nativeRenameFlags, renameFlagsOf, type RenameFlags } from '../../lib/output/fsops';
import { place } from '../../lib/output/place';
import { placeReport } from '../../lib/output/reportFile';
import { addonOrSkip } from '../helpers/addon';
import { useTmpDir } from '../helpers/tmp';

/**
 * The commit of an output folder and of the report file, on each kind of platform: renameat2 with its
 * flags (the addon), a file system that refuses the flags (EINVAL, as NFS does: injected below the
 * errno mapping), and no addon at all.
 */
const VARIANTS: { label: string; native?: true; flags: () => RenameFlags | undefined }[] = [
  { label: 'renameat2 flags', native: true, flags: () => nativeRenameFlags() },
  {
    label: 'a file system refusing the flags (EINVAL)',
    flags: () => renameFlagsOf(async () => os.constants.errno.EINVAL),
  },
  { label: 'no addon', flags: () => undefined },
];

const isBadOutput = (e: unknown): boolean => {
  assert.ok(e instanceof ModelStockError, String(e));
  assert.equal(e.code, 'BAD_OUTPUT_PATH', e.message);
  return true;
};

/** Files of a folder (not recursive) with their text. */
const contents = (dir: string): Record<string, string> =>
  Object.fromEntries(fs.readdirSync(dir).map((f) => [f, fs.readFileSync(path.join(dir, f), 'utf8')]));

/** Names beside `target` that a commit may leave: staging folders, moved-aside outputs, temp files. */
const leftovers = (target: string): string[] =>
  fs.readdirSync(path.dirname(target)).filter((f) => f.startsWith(`.${path.basename(target)}.`));

for (const variant of VARIANTS) {
  describe(`output commit: ${variant.label}`, () => {
    const tmp = useTmpDir('model-stock-place-');
    let flags: RenameFlags | undefined;
    let n = 0;
    const fresh = (): string => path.join(tmp.dir, `case${n++}`, 'out');

    before(function () {
      if (variant.native) addonOrSkip(this);
      flags = variant.flags();
    });

    /** A staging folder holding what a merge writes (our report marks it as ours). */
    async function staged(target: string, overwrite: boolean, marker = 'new'): Promise<StagingDir> {
      const s = await StagingDir.create(target, { overwrite, flags });
      fs.writeFileSync(path.join(s.dir, REPORT_FILE), JSON.stringify({ method: 'model_stock', marker }));
      fs.writeFileSync(path.join(s.dir, 'model.safetensors'), marker);
      return s;
    }

    it('puts the folder at OUT with the mode mkdir gives (0777 & ~umask), nothing left beside it', async () => {
      const out = fresh();
      const s = await staged(out, false);
      assert.deepEqual(await s.commit(true), []);
      assert.equal(contents(out)['model.safetensors'], 'new');
      const reference = path.join(path.dirname(out), 'made-by-mkdir');
      fs.mkdirSync(reference);
      assert.equal(fs.statSync(out).mode & 0o777, fs.statSync(reference).mode & 0o777);
      assert.deepEqual(leftovers(out), []);
    });

    it('without overwrite, a file written to OUT during the merge survives; the commit fails', async () => {
      const out = fresh();
      const s = await staged(out, false);
      fs.mkdirSync(out, { recursive: true }); // without the addon OUT is our claim already
      fs.writeFileSync(path.join(out, 'thesis.txt'), 'precious');
      await assert.rejects(s.commit(false), (e: Error) => isBadOutput(e) && /left as it is/.test(e.message));
      await s.discard();
      assert.deepEqual(contents(out), { 'thesis.txt': 'precious' });
      assert.deepEqual(leftovers(out), []);
    });

    it('concurrent commits to one OUT: exactly one wins, the others fail with BAD_OUTPUT_PATH', async () => {
      const out = fresh();
      const attempts = await Promise.allSettled(
        [0, 1, 2, 3].map(async (i) => {
          const s = await staged(out, false, `merge ${i}`);
          try {
            await s.commit(false);
            return i;
          } finally {
            await s.discard();
          }
        }),
      );
      const won = attempts.filter((a) => a.status === 'fulfilled');
      assert.equal(won.length, 1, JSON.stringify(attempts.map((a) => a.status)));
      for (const a of attempts) if (a.status === 'rejected') isBadOutput(a.reason);
      const winner = (won[0] as PromiseFulfilledResult<number>).value;
      assert.equal(contents(out)['model.safetensors'], `merge ${winner}`);
      assert.deepEqual(leftovers(out), []);
    });

    it('overwrite replaces an earlier output (OUT never refers to anything else), nothing left beside it', async () => {
      const out = fresh();
      await (await staged(out, false, 'old')).commit(false);
      fs.writeFileSync(path.join(out, 'stale.txt'), 'from the old output');
      const s = await staged(out, true);
      await s.commit(true);
      assert.deepEqual(Object.keys(contents(out)).sort(), ['model.safetensors', REPORT_FILE].sort());
      assert.equal(contents(out)['model.safetensors'], 'new');
      assert.deepEqual(leftovers(out), []);
    });

    it('overwrite: an OUT that became something else during the merge is left as it is', async () => {
      const out = fresh();
      await (await staged(out, false, 'old')).commit(false);
      const s = await staged(out, true);
      fs.rmSync(out, { recursive: true });
      fs.mkdirSync(out);
      fs.writeFileSync(path.join(out, 'thesis.txt'), 'precious');
      await assert.rejects(s.commit(false), isBadOutput);
      await s.discard();
      assert.deepEqual(contents(out), { 'thesis.txt': 'precious' });
      assert.deepEqual(leftovers(out), []);
    });

    it('overwrite: a change between the check and the swap is found on the entry swapped out, and undone', async () => {
      const out = fresh();
      await (await staged(out, false, 'old')).commit(false);
      const s = await staged(out, true);
      let checks = 0;
      // The first check passes, then another program writes into OUT before the swap.
      const racing = async (entry: string): Promise<boolean> => {
        if (checks++ > 0)
          return (await isReplaceableOutput(entry)) && !fs.existsSync(path.join(entry, 'thesis.txt'));
        fs.writeFileSync(path.join(entry, 'thesis.txt'), 'precious');
        return true;
      };
      await assert.rejects(
        place(s.dir, out, { kind: 'folder', label: `output folder ${out}`, replaceable: racing, flags }),
        isBadOutput,
      );
      assert.equal(checks, 2);
      await s.discard();
      assert.equal(contents(out)['thesis.txt'], 'precious');
      assert.equal(contents(out)['model.safetensors'], 'old');
      assert.deepEqual(leftovers(out), []);
    });

    it('the report: placed new, never over a file that is not a report, over an earlier one undone on failure', async () => {
      const dir = path.dirname(fresh());
      fs.mkdirSync(dir, { recursive: true });
      const report = path.join(dir, 'report.json');
      const first = await placeReport(report, '{"method":"model_stock","tensors":[],"n":1}', false, flags);
      await first.finish();
      assert.equal(JSON.parse(fs.readFileSync(report, 'utf8')).n, 1);

      const second = await placeReport(report, '{"method":"model_stock","tensors":[],"n":2}', true, flags);
      assert.equal(JSON.parse(fs.readFileSync(report, 'utf8')).n, 2);
      await second.undo(); // OUT's commit failed: the earlier report comes back
      assert.equal(JSON.parse(fs.readFileSync(report, 'utf8')).n, 1);

      const third = await placeReport(report, '{"method":"model_stock","tensors":[],"n":3}', false, flags);
      await third.finish();
      assert.equal(JSON.parse(fs.readFileSync(report, 'utf8')).n, 3);

      const notes = path.join(dir, 'notes.json');
      fs.writeFileSync(notes, '{"mine": true}');
      await assert.rejects(placeReport(notes, '{}', false, flags), isBadOutput);
      assert.equal(fs.readFileSync(notes, 'utf8'), '{"mine": true}');
      assert.deepEqual(
        fs.readdirSync(dir).filter((f) => f.startsWith('.')),
        [],
      );
    });

    if (variant.label === 'no addon') {
      it('without the addon OUT is claimed when the merge starts: a second merge fails at once', async () => {
        const out = fresh();
        const s = await staged(out, false);
        assert.deepEqual(fs.readdirSync(out), [], 'the claim is an empty folder');
        await assert.rejects(StagingDir.create(out, { overwrite: false, flags }), isBadOutput);
        await s.discard();
        assert.equal(fs.existsSync(out), false, 'a discarded merge releases its claim');
        assert.deepEqual(leftovers(out), []);
      });
    }
  });
}
