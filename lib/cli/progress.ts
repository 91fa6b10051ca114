import { SingleBar } from 'cli-progress';
import { escapeControl } from '../errors';
import type { MergeProgress } from '../types';
import { formatBytes } from './size';

/** A progress bar on stderr (bytes, GB/s, ETA, current tensor), drawn only on a TTY. */
export class ProgressBar {
  private bar: SingleBar | undefined;
  private readonly start = Date.now();
  private stopped = false;

  constructor(private readonly enabled: boolean) {}

  update(p: MergeProgress): void {
    if (!this.enabled || this.stopped) return;
    if (this.bar === undefined) {
      this.bar = new SingleBar({
        stream: process.stderr,
        format: 'merging [{bar}] {percentage}% | {done} / {size} | {rate} | ETA {eta_formatted} | {tensor}',
        barsize: 24,
        hideCursor: true,
        clearOnComplete: true,
        etaBuffer: 50,
        fps: 8,
      });
      this.bar.start(p.bytesTotal, 0, this.payload(p));
    }
    this.bar.update(p.bytesDone, this.payload(p));
  }

  /** Clears the bar and restores the cursor; later updates draw nothing. */
  stop(): void {
    this.stopped = true;
    this.bar?.stop();
    this.bar = undefined;
  }

  private payload(p: MergeProgress): Record<string, string> {
    const seconds = (Date.now() - this.start) / 1000;
    const rate = seconds > 0 ? `${(p.bytesDone / seconds / 1e9).toFixed(2)} GB/s` : '';
    const tensor = escapeControl(p.tensor ?? '');
    return {
      done: formatBytes(p.bytesDone),
      size: formatBytes(p.bytesTotal),
      rate,
      tensor: tensor.length > 40 ? '…' + tensor.slice(-39) : tensor,
    };
  }
}
