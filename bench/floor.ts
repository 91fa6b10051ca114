/**
 * The machine's own speeds, the floors a merge is measured against: reading every input like `cat`
 * (warm: one after another; cold: one `cat` per model, all at once, as the merge reads its N+1 models
 * at once), and writing as many bytes as the output durably, the fastest way this machine allows.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, openSync, readSync, unlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { loadNativeAddon } from '../lib/engine/native/loader';
import { since, syncDisks } from './util';

export { median } from './util';

/** 8 MiB: past the point where larger reads stop helping (measured on page-cache reads). */
const BUFFER_SIZE = 8 << 20;

/** Reads every file fully into one reused buffer; returns seconds. */
export function readFiles(
  paths: readonly string[],
  buffer: Uint8Array = new Uint8Array(BUFFER_SIZE),
): number {
  const start = process.hrtime.bigint();
  for (const file of paths) {
    const fd = openSync(file, 'r');
    try {
      while (readSync(fd, buffer, 0, buffer.byteLength, null) > 0);
    } finally {
      closeSync(fd);
    }
  }
  return since(start);
}

/** `cat` of each group's files to /dev/null, the groups at once; returns seconds until the last is done. */
export async function catGroups(groups: readonly (readonly string[])[]): Promise<number> {
  const start = process.hrtime.bigint();
  await Promise.all(
    groups.map(
      (files) =>
        new Promise<void>((resolve, reject) => {
          const cat = spawn('cat', [...files], { stdio: ['ignore', 'ignore', 'inherit'] });
          cat.on('error', reject);
          cat.on('close', (status) =>
            status === 0 ? resolve() : reject(new Error(`cat exited with ${status}`)),
          );
        }),
    ),
  );
  return since(start);
}

/**
 * Evicts every clean page from the page cache (`sync; echo 3 > /proc/sys/vm/drop_caches`): the next
 * reads come from the disk. Needs root; returns why not otherwise. It evicts every process's pages.
 */
export function dropCaches(): string | undefined {
  syncDisks();
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return undefined;
  } catch (e) {
    return `cannot drop the page cache (${(e as Error).message}); cold rows need root on Linux`;
  }
}

export interface DurableWrite {
  readonly seconds: number;
  /** The fastest way, of those tried. */
  readonly method: string;
}

const CHUNK = 64 << 20;

/**
 * Writes `bytes` bytes into a new file in `dir` and makes them durable, each way this machine offers —
 * `dd oflag=direct bs=64M conv=fdatasync`, and buffered 64 MiB writes with rolling sync_file_range
 * writeback (the addon's `rolling` writer) — and returns the fastest. The file is removed after timing.
 */
export async function durableWrite(dir: string, bytes: number): Promise<DurableWrite> {
  const file = path.join(dir, `durable-floor-${process.pid}.tmp`);
  const tries: DurableWrite[] = [];
  // O_DIRECT lengths must be whole 4 KiB blocks: at most 4095 bytes more than the output.
  const direct = Math.ceil(bytes / 4096) * 4096;
  syncDisks();
  let start = process.hrtime.bigint();
  const dd = spawnSync(
    'dd',
    [
      'if=/dev/zero',
      `of=${file}`,
      'bs=64M',
      'iflag=count_bytes',
      `count=${direct}`,
      'oflag=direct',
      'conv=fdatasync',
      'status=none',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' },
  );
  const ddSeconds = since(start);
  unlinkQuietly(file);
  if (dd.status === 0) tries.push({ seconds: ddSeconds, method: 'dd oflag=direct bs=64M' });
  const addon = loadNativeAddon().addon;
  if (addon !== undefined) {
    syncDisks();
    const chunk = new Uint8Array(CHUNK).fill(0x5a);
    start = process.hrtime.bigint();
    const w = await addon.openShardWriter(file, bytes, { mode: 'rolling' });
    for (let at = 0; at < bytes; at += CHUNK) {
      await addon.shardWrite(w, at, chunk.subarray(0, Math.min(CHUNK, bytes - at)));
    }
    await addon.closeShardWriter(w, true);
    tries.push({ seconds: since(start), method: 'rolling writeback, 64 MiB writes' });
    unlinkQuietly(file);
  }
  if (tries.length === 0) throw new Error(`no durable write worked here: dd: ${dd.stderr || dd.error}`);
  return tries.reduce((a, b) => (b.seconds < a.seconds ? b : a));
}

function unlinkQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // not created
  }
}
