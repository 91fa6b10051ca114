import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { generateFixture, PRESETS } from '../../lib/fixtures/generate';
import { mergeModelStock } from '../../lib/merge';
import {
  OWNER_FILE,
  currentOwner,
  isProvablyDead,
  ownerTag,
  sweepStaleStaging,
  type StagingOwner,
} from '../../lib/output/staleStaging';
import { CLI, mergeArgs } from '../helpers/cli';
import { useTmpDir } from '../helpers/tmp';

/** A pid that certainly ran on this host and has exited (a child we waited for). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], {
    encoding: 'utf8',
  });
  return Number(r.stdout);
}

/**
 * Stale staging: a merge killed outright (SIGKILL, power cut) leaves its hidden staging folder; the next
 * merge beside the same OUT removes it when its owner is provably dead, and nothing else.
 */
describe('stale staging folders', () => {
  const tmp = useTmpDir();
  const self = currentOwner();

  before(function () {
    // Linux-only evidence (/proc, boot id): elsewhere nothing is ever swept, which the sweep test shows.
    assert.ok(self !== undefined, 'this host identifies processes through /proc');
  });

  it('an owner is provably dead only on this host: rebooted since, or no process with its pid and start time', () => {
    const me = self!;
    assert.equal(isProvablyDead(me, me), false, 'this process');
    assert.equal(isProvablyDead({ ...me, host: `${me.host}-elsewhere` }, me), false, 'another host');
    assert.equal(isProvablyDead({ ...me, bootId: 'an-earlier-boot' }, me), true, 'rebooted since');
    assert.equal(isProvablyDead({ ...me, pidNamespace: 'pid:[1]', pid: deadPid() }, me), false, 'container');
    assert.equal(isProvablyDead({ ...me, pid: deadPid() }, me), true, 'exited');
    assert.equal(isProvablyDead({ ...me, startTime: '1' }, me), true, 'our pid, reused');
    const parent = fs.readFileSync(`/proc/${process.ppid}/stat`, 'utf8');
    const parentStart = parent.slice(parent.lastIndexOf(')') + 2).split(' ')[19]!;
    const alive: StagingOwner = { ...me, pid: process.ppid, startTime: parentStart };
    assert.equal(isProvablyDead(alive, me), false, 'a live process');
    assert.equal(isProvablyDead({ ...alive, startTime: `${parentStart}0` }, me), true, 'a reused pid');
  });

  it('sweeps only this OUT’s folders whose owner is dead; everything else stays', async () => {
    const parent = path.join(tmp.dir, 'sweep');
    fs.mkdirSync(parent);
    const out = path.join(parent, 'out');
    const folder = (name: string, owner?: StagingOwner | string): string => {
      const dir = path.join(parent, name);
      fs.mkdirSync(dir);
      fs.writeFileSync(path.join(dir, 'model.safetensors'), 'weights');
      if (owner !== undefined) {
        const text = typeof owner === 'string' ? owner : JSON.stringify(owner);
        fs.writeFileSync(path.join(dir, OWNER_FILE), text);
      }
      return dir;
    };
    const dead = { ...self!, pid: deadPid() };
    const swept = folder('.out.partial-dead', dead);
    const rebooted = folder('.out.partial-boot', { ...self!, bootId: 'an-earlier-boot' });
    const kept = [
      folder('.out.partial-live', self),
      folder('.out.partial-noowner'),
      folder('.out.partial-garbled', '{"host":'),
      folder('.out.partial-remote', { ...dead, host: `${self!.host}-elsewhere` }),
      folder('.other.partial-dead', dead),
      folder('out.partial-dead', dead),
      folder('.out.partial-aside.old', dead),
    ];
    // A link named like a staging folder, to a folder of the user's with a dead owner's record in it.
    const users = folder('users-folder', dead);
    fs.symlinkSync(users, path.join(parent, '.out.partial-link'));
    fs.writeFileSync(path.join(parent, '.out.partial-file'), 'not a folder');

    const removed = await sweepStaleStaging(out);
    assert.deepEqual(removed.map((r) => r.dir).sort(), [rebooted, swept].sort());
    assert.equal(removed.find((r) => r.dir === swept)?.pid, dead.pid);
    for (const dir of [...kept, users]) assert.ok(fs.existsSync(path.join(dir, 'model.safetensors')), dir);
    assert.ok(fs.lstatSync(path.join(parent, '.out.partial-link')).isSymbolicLink());
    assert.ok(fs.existsSync(path.join(parent, '.out.partial-file')));
  });

  it('a folder without a record is swept when its name proves its owner dead on this host and boot', async () => {
    const parent = path.join(tmp.dir, 'named');
    fs.mkdirSync(parent);
    const folder = (name: string): string => {
      const dir = path.join(parent, name);
      fs.mkdirSync(dir);
      fs.writeFileSync(path.join(dir, 'model.safetensors'), 'weights');
      return dir;
    };
    const dead = { ...self!, pid: deadPid() };
    // Killed right after mkdir, or right after the record was removed for the commit.
    const swept = folder(`.out.partial-abc${ownerTag(dead)}`);
    const kept = [
      folder(`.out.partial-abc${ownerTag(self)}`), // this live process
      folder(`.out.partial-def${ownerTag({ ...dead, host: `${self!.host}-elsewhere` })}`), // another host
      folder(`.out.partial-ghi${ownerTag({ ...dead, bootId: 'an-earlier-boot' })}`), // unprovable from a name
      folder(`.out.partial-jkl${ownerTag({ ...dead, pidNamespace: 'pid:[1]' })}`), // another container
      folder(`.out.partial-mno-o0123456789abp${dead.pid}s1`), // a hash of no place we know
    ];
    const removed = await sweepStaleStaging(path.join(parent, 'out'));
    assert.deepEqual(removed, [{ dir: swept, pid: dead.pid }]);
    for (const dir of kept) assert.ok(fs.existsSync(path.join(dir, 'model.safetensors')), dir);
  });

  it('a merge killed with SIGKILL leaves its staging folder; the next merge to OUT removes it and says so', async function () {
    this.timeout(120_000);
    const fixture = await generateFixture({ ...PRESETS.example, dir: path.join(tmp.dir, 'example') });
    const parent = path.join(tmp.dir, 'killed');
    fs.mkdirSync(parent);
    const out = path.join(parent, 'out');
    const child = spawn(
      process.execPath,
      [CLI, ...mergeArgs(fixture.base, fixture.models, out), '--memory', '64KiB', '--backend', 'js'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const staging = (): string[] => fs.readdirSync(parent).filter((f) => f.startsWith('.out.partial-'));
    const started = Date.now();
    // Wait for the owner record: the folder is ours from then on.
    while (!staging().some((f) => fs.existsSync(path.join(parent, f, OWNER_FILE)))) {
      assert.ok(Date.now() - started < 60_000, `no staging folder appeared: ${stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.on('exit', r));
    const left = staging();
    assert.equal(left.length, 1, 'SIGKILL runs no clean-up');
    const owner = JSON.parse(
      fs.readFileSync(path.join(parent, left[0]!, OWNER_FILE), 'utf8'),
    ) as StagingOwner;
    assert.equal(owner.pid, child.pid);

    const warnings: string[] = [];
    await mergeModelStock({
      base: fixture.base,
      models: fixture.models,
      out,
      backend: 'js',
      // Without the addon the killed merge also left its claim, an empty OUT, which only --overwrite takes.
      overwrite: true,
      onWarning: (w) => warnings.push(w),
    });
    assert.deepEqual(fs.readdirSync(parent), ['out'], 'the stale folder is gone, OUT is in place');
    assert.ok(!fs.readdirSync(out).includes(OWNER_FILE), 'the owner record is not part of OUT');
    assert.ok(
      warnings.some((w) => w.includes(left[0]!) && w.includes(`pid ${child.pid}`)),
      warnings.join('\n'),
    );
  });
});
