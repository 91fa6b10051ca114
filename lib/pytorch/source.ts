/**
 * Where an archive's bytes come from while its structure is read: a file (positional reads, nothing
 * mapped) or, for the fuzzer and tests, bytes in memory. Only the structure (zip records, data.pkl) is
 * read through it; tensor data is never read here — the engine maps or reads it later, in place.
 */
import type { FileHandle } from 'node:fs/promises';
import { ModelStockError } from '../errors';

export interface ByteSource {
  /** The name errors give (an absolute path). */
  readonly file: string;
  readonly size: number;
  /** Exactly `length` bytes at `position`; the caller has checked that they lie inside `size`. */
  read(position: number, length: number): Promise<Uint8Array>;
}

export function memorySource(file: string, bytes: Uint8Array): ByteSource {
  return {
    file,
    size: bytes.byteLength,
    read: async (position, length) => {
      if (position < 0 || position + length > bytes.byteLength) throw new RangeError('read past the end');
      return bytes.subarray(position, position + length);
    },
  };
}

export function fileSource(file: string, handle: FileHandle, size: number): ByteSource {
  return {
    file,
    size,
    read: async (position, length) => {
      const into = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        let bytesRead: number;
        try {
          ({ bytesRead } = await handle.read(into, done, length - done, position + done));
        } catch (cause) {
          throw new ModelStockError(
            'IO_ERROR',
            `read failed at byte ${position + done}: ${(cause as Error).message}`,
            { file, cause },
          );
        }
        if (bytesRead === 0) {
          // The file shrank since its size was taken.
          throw new ModelStockError('IO_ERROR', `unexpected end of file at byte ${position + done}`, {
            file,
          });
        }
        done += bytesRead;
      }
      return into;
    },
  };
}
