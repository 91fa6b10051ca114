/**
 * Staging folders a killed merge left behind. Each staging folder holds an owner record (host, boot id,
 * pid, the process's start time); a later merge beside the same OUT removes those whose owner is
 * provably dead — on this host, and either booted since or, in the same pid namespace, no process with
 * that pid and start time —
 * and leaves every other folder alone: another host's (a shared file system), a live merge's, another
 * user's, one whose record is unreadable (not ours), anything that is not a plain folder.
 *
 * The folder's name carries its owner too (`…-o<host, boot and pid namespace hash>p<pid>s<start time>`):
 * a merge killed between creating the folder and writing the record, or between removing the record and
 * the commit's rename, leaves a folder without a record that the name still proves dead.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** Inside the staging folder; removed just before the commit. Hidden: never copied from a base. */
export const OWNER_FILE = '.model-stock-owner.json';

export interface StagingOwner {
  host: string;
  bootId: string;
  pid: number;
  /** The pid namespace (`pid:[inode]`): a pid means nothing in another container's. */
  pidNamespace: string;
  /** /proc/PID/stat's starttime (clock ticks since boot): tells a reused pid apart. */
  startTime: string;
}

const readText = (file: string): string | undefined => {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
};

const bootId = (): string | undefined => readText('/proc/sys/kernel/random/boot_id')?.trim();

/** The start time of `pid`, or undefined when no such process runs (or /proc cannot tell). */
function startTimeOf(pid: number): string | undefined {
  const stat = readText(`/proc/${pid}/stat`);
  if (stat === undefined) return undefined;
  // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[19]; // field 22 overall
}

/** This process as an owner; undefined where the host cannot identify it (no /proc): nothing is swept. */
export function currentOwner(): StagingOwner | undefined {
  const id = bootId();
  const startTime = startTimeOf(process.pid);
  let pidNamespace: string;
  try {
    pidNamespace = fs.readlinkSync('/proc/self/ns/pid');
  } catch {
    return undefined;
  }
  if (id === undefined || startTime === undefined) return undefined;
  return { host: os.hostname(), bootId: id, pid: process.pid, pidNamespace, startTime };
}

function parseOwner(text: string | undefined): StagingOwner | undefined {
  if (text === undefined) return undefined;
  try {
    const o = JSON.parse(text) as Partial<StagingOwner>;
    if (
      typeof o.host === 'string' &&
      typeof o.bootId === 'string' &&
      typeof o.startTime === 'string' &&
      typeof o.pidNamespace === 'string' &&
      Number.isSafeInteger(o.pid) &&
      (o.pid as number) > 0
    ) {
      return o as StagingOwner;
    }
  } catch {
    // not a record we wrote
  }
  return undefined;
}

/** Host, boot and pid namespace in 12 hex digits: a name can say "this host, this boot" in little room. */
function placeHash(o: Pick<StagingOwner, 'host' | 'bootId' | 'pidNamespace'>): string {
  return crypto
    .createHash('sha256')
    .update(`${o.host}\0${o.bootId}\0${o.pidNamespace}`)
    .digest('hex')
    .slice(0, 12);
}

/** The suffix a staging folder's name ends with, naming its owner (empty where the host cannot tell). */
export function ownerTag(o: StagingOwner | undefined = currentOwner()): string {
  return o === undefined ? '' : `-o${placeHash(o)}p${o.pid}s${o.startTime}`;
}

const OWNER_TAG = /-o([0-9a-f]{12})p(\d+)s(\d+)$/;

/** True when the owner a folder's name gives is of this host, boot and pid namespace, and gone. */
function nameProvesDead(name: string, self: StagingOwner): { pid: number } | undefined {
  const m = OWNER_TAG.exec(name);
  if (m === null || m[1] !== placeHash(self)) return undefined;
  const pid = Number(m[2]);
  const startTime = m[3] as string;
  const alive = pid === self.pid ? startTime === self.startTime : startTimeOf(pid) === startTime;
  return alive ? undefined : { pid };
}

/** True only when `owner` certainly no longer runs. */
export function isProvablyDead(owner: StagingOwner, self: StagingOwner): boolean {
  if (owner.host !== self.host) return false;
  if (owner.bootId !== self.bootId) return true;
  if (owner.pidNamespace !== self.pidNamespace) return false;
  if (owner.pid === self.pid) return owner.startTime !== self.startTime;
  // No /proc entry: gone. (hidepid hides other users' processes, but only our own folders are swept.)
  return startTimeOf(owner.pid) !== owner.startTime;
}

/** Writes this process's owner record into a new staging folder (nothing when the host cannot tell). */
export async function recordOwner(dir: string): Promise<void> {
  const owner = currentOwner();
  if (owner === undefined) return;
  // Written aside and renamed in: a record is whole or absent, even if this process is killed mid-write.
  const partial = path.join(dir, `${OWNER_FILE}.partial`);
  await fs.promises.writeFile(partial, `${JSON.stringify(owner)}\n`, { flag: 'wx' });
  await fs.promises.rename(partial, path.join(dir, OWNER_FILE));
}

/**
 * Removes the staging folders of `target` (`.<name>.partial-*` beside it) whose owner is provably dead.
 * Returns the folders removed with their owner's pid; never throws (a sweep is housekeeping).
 */
export async function sweepStaleStaging(target: string): Promise<{ dir: string; pid: number }[]> {
  const self = currentOwner();
  if (self === undefined) return [];
  const parent = path.dirname(target);
  const prefix = `.${path.basename(target)}.partial-`;
  let names: string[];
  try {
    names = await fs.promises.readdir(parent);
  } catch {
    return [];
  }
  const removed: { dir: string; pid: number }[] = [];
  for (const name of names) {
    // `.OUT.partial-<random>` only: `….old` is an earlier output set aside by --overwrite — the user's.
    if (!name.startsWith(prefix) || name.includes('.', prefix.length)) continue;
    const dir = path.join(parent, name);
    try {
      const st = await fs.promises.lstat(dir);
      if (!st.isDirectory() || st.uid !== process.getuid?.()) continue;
      const ownerFile = path.join(dir, OWNER_FILE);
      const ost = await fs.promises.lstat(ownerFile).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') return undefined;
        throw e;
      });
      let pid: number;
      if (ost === undefined) {
        // No record (killed just after mkdir, or just before the commit's rename): the name decides.
        const dead = nameProvesDead(name, self);
        if (dead === undefined) continue;
        pid = dead.pid;
      } else {
        if (!ost.isFile() || ost.size > 4096) continue;
        const owner = parseOwner(await fs.promises.readFile(ownerFile, 'utf8'));
        if (owner === undefined || !isProvablyDead(owner, self)) continue;
        pid = owner.pid;
      }
      await fs.promises.rm(dir, { recursive: true, force: true });
      removed.push({ dir, pid });
    } catch {
      // gone meanwhile (another merge swept it), no record, or unreadable: leave it
    }
  }
  return removed;
}
