/**
 * Positional reads of tensor bytes (the `fs` input mode). The engine never reads a tensor into one
 * buffer larger than a window (DEFAULT_WINDOW_BYTES at most): Node 20 cannot allocate an ArrayBuffer
 * over 4 GiB, and large embeddings exceed that.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { ModelStockError } from '../errors';
import type { TensorInfo } from '../checkpoint/types';

export const DEFAULT_WINDOW_BYTES = 1 << 30;

/** fs reads are capped at 2 GiB − 1 bytes per call (libuv); stay well below. */
const MAX_READ_CALL = 1 << 30;

/** Positional reads of tensor bytes; one handle per file, opened on first use, shared by concurrent reads. */
export class TensorReader {
  private readonly handles = new Map<string, Promise<FileHandle>>();
  private closed = false;

  /** Opens (or returns the already open) handle for `file`. */
  open(file: string): Promise<FileHandle> {
    if (this.closed) return Promise.reject(new Error('TensorReader is closed'));
    let handle = this.handles.get(file);
    if (handle === undefined) {
      handle = open(file, 'r').catch((cause: unknown) => {
        this.handles.delete(file);
        throw new ModelStockError('IO_ERROR', `cannot open: ${(cause as Error).message}`, { file, cause });
      });
      this.handles.set(file, handle);
    }
    return handle;
  }

  /** Fills `into` with the tensor's bytes [byteStart, byteStart + into.byteLength). */
  async readInto(tensor: TensorInfo, byteStart: number, into: Uint8Array): Promise<void> {
    const where = { file: tensor.file, tensor: tensor.name };
    if (
      !Number.isSafeInteger(byteStart) ||
      byteStart < 0 ||
      byteStart + into.byteLength > tensor.byteLength
    ) {
      throw new RangeError(
        `${tensor.file}: tensor "${tensor.name}": read of ${into.byteLength} bytes at ${byteStart} is outside its ${tensor.byteLength} bytes`,
      );
    }
    const handle = await this.open(tensor.file);
    const position = tensor.offset + byteStart;
    let done = 0;
    while (done < into.byteLength) {
      const length = Math.min(into.byteLength - done, MAX_READ_CALL);
      let bytesRead: number;
      try {
        ({ bytesRead } = await handle.read(into, done, length, position + done));
      } catch (cause) {
        throw new ModelStockError(
          'IO_ERROR',
          `read failed at byte ${position + done}: ${(cause as Error).message}`,
          {
            ...where,
            cause,
          },
        );
      }
      if (bytesRead === 0) {
        // The header was validated against the file size, so the file shrank since it was opened.
        throw new ModelStockError(
          'IO_ERROR',
          `unexpected end of file at byte ${position + done} (the file changed after it was validated?)`,
          where,
        );
      }
      done += bytesRead;
    }
  }

  /** Closes every handle; safe to call twice. */
  async close(): Promise<void> {
    this.closed = true;
    const handles = [...this.handles.values()];
    this.handles.clear();
    await Promise.all(handles.map((h) => h.then((fh) => fh.close()).catch(() => undefined)));
  }
}
