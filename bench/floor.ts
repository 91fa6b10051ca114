/**
 * The machine's own copy speed, the floor a merge is measured against: reading every input file like
 * `cat > /dev/null` and writing as many bytes as the output, without fsync.
 */
import { closeSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { since } from './util';

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

/** Writes `bytes` bytes into a new file in `dir` (no fsync); returns seconds. The file is removed after timing. */
export function writeBytes(
  dir: string,
  bytes: number,
  buffer: Uint8Array = new Uint8Array(BUFFER_SIZE),
): number {
  buffer.fill(0x5a); // not zeros, in case a filesystem treats zero pages specially
  const file = path.join(dir, `floor-${process.pid}.tmp`);
  const start = process.hrtime.bigint();
  const fd = openSync(file, 'wx');
  try {
    let done = 0;
    while (done < bytes) done += writeSync(fd, buffer, 0, Math.min(buffer.byteLength, bytes - done));
  } finally {
    closeSync(fd);
  }
  const seconds = since(start);
  unlinkSync(file);
  return seconds;
}
