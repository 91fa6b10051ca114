/**
 * Opens one safetensors file and validates its header. Only the 8-byte length prefix and the header
 * are read: tensor data stays on disk until a TensorReader asks for it.
 */
import { open, type FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import { ModelStockError } from '../errors';
import { parseHeaderSliced } from './header';
import { identityOf } from '../checkpoint/identity';
import type { SafetensorsFile } from './types';

/** The reference crate's MAX_HEADER_SIZE: a bigger header is refused before it is read. */
export const MAX_HEADER_SIZE = 100_000_000;
const LENGTH_PREFIX = 8;

export async function readSafetensorsFile(file: string): Promise<SafetensorsFile> {
  const abs = path.resolve(file);
  let handle: FileHandle;
  try {
    handle = await open(abs, 'r');
  } catch (cause) {
    throw ioError(abs, 'cannot open', cause);
  }
  try {
    const identity = await stage(abs, 'cannot stat', async () =>
      identityOf(await handle.stat({ bigint: true })),
    );
    const fileSize = Number(identity.size);
    if (fileSize < LENGTH_PREFIX) {
      throw new ModelStockError(
        'HEADER_TOO_SMALL',
        `file has ${fileSize} bytes, fewer than the 8-byte header length prefix`,
        { file: abs },
      );
    }

    const prefix = new Uint8Array(LENGTH_PREFIX);
    await stage(abs, 'cannot read the header length', () => readFully(handle, prefix, 0));
    // A u64: read it whole as a BigInt so that a huge value cannot wrap or lose precision.
    const declared = new DataView(prefix.buffer).getBigUint64(0, true);
    if (declared > BigInt(MAX_HEADER_SIZE)) {
      throw new ModelStockError(
        'HEADER_TOO_LARGE',
        `header length ${declared} exceeds the format's limit of ${MAX_HEADER_SIZE} bytes`,
        { file: abs },
      );
    }
    const headerLength = Number(declared);
    const dataStart = LENGTH_PREFIX + headerLength;
    if (dataStart > fileSize) {
      throw new ModelStockError(
        'INVALID_HEADER_LENGTH',
        `header length ${headerLength} runs past the end of the file (${fileSize} bytes)`,
        { file: abs },
      );
    }

    const header = new Uint8Array(headerLength);
    await stage(abs, 'cannot read the header', () => readFully(handle, header, LENGTH_PREFIX));
    const { tensors, metadata } = await parseHeaderSliced(header, abs, fileSize, dataStart);
    return { file: abs, fileSize, identity, dataStart, tensors, metadata };
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** Reads `into.byteLength` bytes at `position`, looping on short reads. */
async function readFully(handle: FileHandle, into: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < into.byteLength) {
    const { bytesRead } = await handle.read(into, done, into.byteLength - done, position + done);
    if (bytesRead === 0) throw new Error(`unexpected end of file at byte ${position + done}`);
    done += bytesRead;
  }
}

async function stage<T>(file: string, what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (cause) {
    throw ioError(file, what, cause);
  }
}

function ioError(file: string, what: string, cause: unknown): ModelStockError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new ModelStockError('IO_ERROR', `${what}: ${reason}`, { file, cause });
}
