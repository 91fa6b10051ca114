/**
 * A memory cgroup for one measurement: processes started in it share a memory limit that covers their
 * anonymous memory *and* the page cache they fill, so a limit smaller than the inputs is what a model
 * larger than the machine's memory looks like. cgroup v1 (`memory.limit_in_bytes`, as on this project's
 * machine) or v2 (`memory.max`, where the memory controller is enabled for the root's children). Needs
 * write access to the hierarchy (root); callers skip with the reason otherwise. The bench and the tests
 * share it.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const V1 = '/sys/fs/cgroup/memory';
const V2 = '/sys/fs/cgroup';

export interface MemoryCgroup {
  readonly dir: string;
  readonly version: 1 | 2;
  readonly limit: number;
  /** `command args…` as a command that joins the cgroup first (a shell that moves itself in, then execs). */
  wrap(command: string, args: readonly string[]): [string, string[]];
  /** The most memory charged to the cgroup so far (bytes), where the kernel says. */
  peak(): number | undefined;
  /** OOM kills inside the cgroup so far, where the kernel says. */
  oomKills(): number | undefined;
  /** Removes the cgroup; its processes must have exited. Never throws (it says why it could not). */
  remove(): string | undefined;
}

function readNumber(file: string, key?: string): number | undefined {
  try {
    const text = fs.readFileSync(file, 'utf8');
    if (key === undefined) return Number(text.trim());
    const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
    return m === null ? undefined : Number(m[1]);
  } catch {
    return undefined;
  }
}

/** Cgroups made and not yet removed: removed at exit, and on SIGINT/SIGTERM before the process ends. */
const live = new Set<MemoryCgroup>();
let cleanupInstalled = false;

function removeLeftOnExit(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  process.on('exit', () => {
    for (const cg of live) cg.remove();
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => {
      // The processes inside got the same signal from the terminal, or are ours to end; a cgroup can
      // only be removed once they are gone (remove() waits up to 5 s), then the signal's exit status.
      for (const cg of live) {
        for (const pid of procsOf(cg)) {
          try {
            process.kill(pid, signal);
          } catch {
            // already gone
          }
        }
        cg.remove();
      }
      process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
    });
}

function procsOf(cg: MemoryCgroup): number[] {
  try {
    return fs
      .readFileSync(path.join(cg.dir, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map(Number);
  } catch {
    return [];
  }
}

/**
 * A fresh cgroup named `name` limited to `limit` bytes, or why none can be made here. Remove it when
 * done, whatever happens (try/finally).
 */
export function createMemoryCgroup(name: string, limit: number): MemoryCgroup | string {
  let version: 1 | 2;
  let dir: string;
  let limitFile: string;
  if (fs.existsSync(path.join(V1, 'memory.limit_in_bytes'))) {
    version = 1;
    dir = path.join(V1, name);
    limitFile = 'memory.limit_in_bytes';
  } else if (
    fs.existsSync(path.join(V2, 'cgroup.controllers')) &&
    /\bmemory\b/.test(fs.readFileSync(path.join(V2, 'cgroup.subtree_control'), 'utf8'))
  ) {
    version = 2;
    dir = path.join(V2, name);
    limitFile = 'memory.max';
  } else {
    return 'no cgroup v1 memory hierarchy, and no cgroup v2 with the memory controller enabled for its children';
  }
  try {
    fs.mkdirSync(dir);
  } catch (e) {
    return `cannot create ${dir}: ${(e as Error).message}`;
  }
  const cgroup: MemoryCgroup = {
    dir,
    version,
    limit,
    wrap: (command, args) => [
      'sh',
      ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', dir, command, ...args],
    ],
    peak: () =>
      version === 1
        ? readNumber(path.join(dir, 'memory.max_usage_in_bytes'))
        : readNumber(path.join(dir, 'memory.peak')),
    oomKills: () =>
      version === 1
        ? readNumber(path.join(dir, 'memory.oom_control'), 'oom_kill')
        : readNumber(path.join(dir, 'memory.events'), 'oom_kill'),
    remove: () => {
      live.delete(cgroup);
      // The kernel may take a moment to let go of a cgroup whose last process just exited.
      for (let attempt = 0; ; attempt++) {
        try {
          fs.rmdirSync(dir);
          return undefined;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
          if (attempt === 50) return `cannot remove ${dir}: ${(e as Error).message}`;
          spawnSync('sleep', ['0.1']);
        }
      }
    },
  };
  try {
    fs.writeFileSync(path.join(dir, limitFile), String(limit));
  } catch (e) {
    cgroup.remove();
    return `cannot set ${path.join(dir, limitFile)}: ${(e as Error).message}`;
  }
  live.add(cgroup);
  removeLeftOnExit();
  return cgroup;
}
