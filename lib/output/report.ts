/**
 * model_stock_report.json: exactly the bytes of `JSON.stringify(report, null, 2) + '\n'`, but made
 * and written in pieces. For a million tensors the report is hundreds of MB; one JSON.stringify of it
 * holds the event loop for seconds and the whole text in memory.
 */
import { open } from 'node:fs/promises';
import { ModelStockError } from '../errors';
import type { InspectReport, MergeReport } from '../types';
import { SLICE_MS } from '../util/sliced';

/** Characters gathered before a write. */
const WRITE_CHUNK = 1 << 20;
/** Top-level arrays longer than this are written in pieces of ARRAY_PIECE elements. */
const STREAMED_ARRAY = 64;
const ARRAY_PIECE = 64;

/**
 * The report's JSON text in pieces. Each piece is JSON.stringify of one value with the indentation
 * it has at its depth: JSON.stringify(v, null, 2) indents nested lines relative to column 0, and a
 * raw newline can only be structural (newlines inside strings are escaped), so adding the depth's
 * indentation after every newline gives the nested text exactly.
 */
export function* reportJsonPieces(report: InspectReport): Generator<string, void, void> {
  const entries = Object.entries(report);
  let first = true;
  yield '{';
  for (const [key, value] of entries) {
    const isStreamed = Array.isArray(value) && value.length > STREAMED_ARRAY;
    const text = isStreamed ? '' : JSON.stringify(value, null, 2);
    if (!isStreamed && text === undefined) continue; // dropped by JSON.stringify: undefined, functions
    yield `${first ? '' : ','}\n  ${JSON.stringify(key)}: `;
    first = false;
    if (!isStreamed) {
      yield text.replace(/\n/g, '\n  ');
      continue;
    }
    // Elements 64 at a time (a few ms each): JSON.stringify of the slice, brackets cut off, indented once more.
    const items = value as unknown[];
    yield '[';
    for (let i = 0; i < items.length; i += ARRAY_PIECE) {
      const text = JSON.stringify(items.slice(i, i + ARRAY_PIECE), null, 2);
      yield `${i === 0 ? '' : ','}\n  ${text.slice(2, -2).replace(/\n/g, '\n  ')}`;
    }
    yield '\n  ]';
  }
  yield first ? '}\n' : '\n}\n';
}

/**
 * Writes the report to `file` ('wx': a new file in the staging folder; 'w': the user's --report path,
 * replaced as before), giving the event loop a turn every few ms and fsyncing when asked.
 */
export async function writeReportJson(
  file: string,
  report: MergeReport,
  opts: { fsync: boolean; flags: 'wx' | 'w' },
): Promise<void> {
  let handle;
  try {
    handle = await open(file, opts.flags);
  } catch (cause) {
    throw new ModelStockError('IO_ERROR', `cannot create: ${(cause as Error).message}`, { file, cause });
  }
  try {
    let position = 0;
    let pending: string[] = [];
    let pendingLength = 0;
    const flush = async (): Promise<void> => {
      const bytes = Buffer.from(pending.join(''));
      pending = [];
      pendingLength = 0;
      for (let done = 0; done < bytes.byteLength;) {
        const { bytesWritten } = await handle.write(bytes, done, bytes.byteLength - done, position + done);
        done += bytesWritten;
      }
      position += bytes.byteLength;
    };
    let sliceStart = performance.now();
    for (const piece of reportJsonPieces(report)) {
      pending.push(piece);
      pendingLength += piece.length;
      if (pendingLength >= WRITE_CHUNK) {
        await flush();
        sliceStart = performance.now();
      } else if (performance.now() - sliceStart >= SLICE_MS) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        sliceStart = performance.now();
      }
    }
    await flush();
    if (opts.fsync) await handle.sync();
  } catch (cause) {
    if (cause instanceof ModelStockError) throw cause;
    throw new ModelStockError('IO_ERROR', `write failed: ${(cause as Error).message}`, { file, cause });
  } finally {
    await handle.close().catch(() => undefined);
  }
}
