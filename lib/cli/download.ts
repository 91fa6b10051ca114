import { SingleBar } from 'cli-progress';
import { escapeControl } from '../errors';
import type { DownloadProgress } from '../hub/settings';
import { formatBytes } from './size';

/**
 * Hub downloads on stderr: a bar on a TTY, otherwise one line per file (logs of CI jobs and services
 * should still say what was fetched), nothing when quiet.
 */
export class DownloadProgressView {
  private bar: SingleBar | undefined;
  private lastFile = '';
  private stopped = false;

  constructor(private readonly mode: 'bar' | 'lines' | 'off') {}

  update(p: DownloadProgress): void {
    if (this.mode === 'off' || this.stopped) return;
    const key = `${p.repo}/${p.file}`;
    if (this.mode === 'lines') {
      if (key !== this.lastFile) {
        this.lastFile = key;
        process.stderr.write(
          `downloading ${escapeControl(`${p.repo} ${p.file}`)} (${formatBytes(p.fileBytesTotal)}; file ${p.filesDone + 1} of ${p.filesTotal})\n`,
        );
      }
      return;
    }
    if (this.bar === undefined) {
      this.bar = new SingleBar({
        stream: process.stderr,
        format: 'downloading [{bar}] {percentage}% | {done} / {size} | {file}',
        barsize: 24,
        hideCursor: true,
        clearOnComplete: true,
        fps: 8,
      });
      this.bar.start(p.bytesTotal, 0, this.payload(p));
    }
    this.bar.setTotal(p.bytesTotal);
    this.bar.update(p.bytesDone, this.payload(p));
  }

  /** Clears the bar and restores the cursor (downloads are over, or the command was interrupted). */
  stop(): void {
    this.stopped = true;
    this.bar?.stop();
    this.bar = undefined;
  }

  private payload(p: DownloadProgress): Record<string, string> {
    const file = escapeControl(`${p.repo} ${p.file}`);
    return {
      done: formatBytes(p.bytesDone),
      size: formatBytes(p.bytesTotal),
      file: file.length > 50 ? '…' + file.slice(-49) : file,
    };
  }
}
