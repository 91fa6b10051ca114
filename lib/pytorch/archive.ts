/**
 * One PyTorch checkpoint file (`.bin`, `.pt`, `.pth`, `.ckpt`) as a tensor table: the zip structure
 * and data.pkl are read and interpreted (never executed), the state dict found, and every tensor located
 * in the file — `storage entry's data + storage_offset · itemsize` — so the engine reads it in place,
 * zero-copy, like a safetensors tensor. Tensors sharing a storage (tied embeddings, q/k/v views of one
 * fused storage) each get their own location; a tensor that is not a contiguous run of its storage is
 * refused (NON_CONTIGUOUS).
 */
import { open, type FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import { dtypeBits } from '../dtype';
import { ModelStockError } from '../errors';
import { identityOf, type FileIdentity } from '../checkpoint/identity';
import type { TensorInfo } from '../checkpoint/types';
import { CHECK_EVERY, runSliced, type Sliced } from '../util/sliced';
import type { GlobalMeaning } from './globals';
import { interpretPickle } from './pickle';
import { fileSource, type ByteSource } from './source';
import { findStateDict, type FoundStateDict } from './stateDict';
import { PyTensor, type PyStorage, type PyUnreadableTensor } from './values';
import { LocalHeaders, readEntry, readZipArchive, type EntryRange, type ZipArchive } from './zip';

/** A data.pkl larger than this is refused before it is read (a million tensors take ~100 MB). */
export const MAX_PICKLE_BYTES = 256 * 1024 * 1024;

/** What torch.save wrote before 1.6: a pickle stream starting with this magic number (as LONG1). */
const LEGACY_MAGIC = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const ZIP_MAGIC = [0x50, 0x4b, 0x03, 0x04];

/** How to turn a file torch.load reads but model-stock refuses into one it reads. */
const CONVERT =
  'load it once where torch is installed and save it again: ' +
  "python -c \"import torch; torch.save(torch.load('IN', weights_only=True), 'OUT')\" " +
  '(weights_only=True: a file from elsewhere may carry code)';

export interface PytorchFile {
  readonly file: string;
  readonly identity: FileIdentity;
  /** In the state dict's insertion order. */
  readonly tensors: readonly TensorInfo[];
  readonly metadata: undefined;
  readonly stateDict: Omit<FoundStateDict, 'tensors'> & { readonly count: number };
  /** Every global the pickle names, with its meaning. */
  readonly globals: ReadonlyMap<string, GlobalMeaning>;
}

export interface PytorchReadOptions {
  readonly stateDictKey?: string;
}

export async function readPytorchFile(file: string, options: PytorchReadOptions = {}): Promise<PytorchFile> {
  const abs = path.resolve(file);
  let handle: FileHandle;
  try {
    handle = await open(abs, 'r');
  } catch (cause) {
    throw new ModelStockError('IO_ERROR', `cannot open: ${(cause as Error).message}`, { file: abs, cause });
  }
  try {
    let identity: FileIdentity;
    try {
      identity = identityOf(await handle.stat({ bigint: true }));
    } catch (cause) {
      throw new ModelStockError('IO_ERROR', `cannot stat: ${(cause as Error).message}`, { file: abs, cause });
    }
    const source = fileSource(abs, handle, Number(identity.size));
    return { ...(await readPytorchSource(source, options)), identity };
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** The tensor table of the archive `source` holds (the fuzzer reads bytes in memory through this). */
export async function readPytorchSource(
  source: ByteSource,
  options: PytorchReadOptions = {},
  /** Called once data.pkl is about to be interpreted (the fuzzer counts these). */
  onInterpret?: () => void,
): Promise<Omit<PytorchFile, 'identity'>> {
  const { file } = source;
  await checkMagic(source);
  const archive = await readZipArchive(source);
  const headers = new LocalHeaders(archive);
  const byteorder = archive.entries.get('byteorder');
  if (byteorder !== undefined) {
    const order = new TextDecoder('latin1').decode(await readEntry(archive, headers, byteorder, 16));
    if (order === 'big') {
      throw new ModelStockError(
        'UNSUPPORTED_FORMAT',
        `saved on a big-endian machine (byteorder "big"): model-stock reads little-endian data in place; ${CONVERT}`,
        { file },
      );
    }
    if (order !== 'little')
      throw new ModelStockError('INVALID_ARCHIVE', `byteorder record "${order}"`, { file });
  }
  const pickle = archive.entries.get('data.pkl');
  if (pickle === undefined) {
    throw new ModelStockError(
      'INVALID_ARCHIVE',
      `no ${archive.top}/data.pkl: a zip archive, but not one torch.save wrote`,
      { file },
    );
  }
  const bytes = await readEntry(archive, headers, pickle, MAX_PICKLE_BYTES, 'INVALID_PICKLE');
  onInterpret?.();
  const { root, globals } = await runSliced(interpretPickle(bytes, file));
  const found = await runSliced(findStateDict(root, file, options.stateDictKey));
  const tensors = await locateTensors(archive, headers, found);
  const { tensors: _named, ...stateDict } = found;
  return { file, tensors, metadata: undefined, stateDict: { ...stateDict, count: tensors.length }, globals };
}

async function checkMagic(source: ByteSource): Promise<void> {
  const head = await source.read(0, Math.min(source.size, 512));
  const starts = (magic: readonly number[]): boolean => magic.every((b, i) => head[i] === b);
  if (starts(ZIP_MAGIC)) return;
  const where = { file: source.file };
  if (starts(LEGACY_MAGIC)) {
    throw new ModelStockError(
      'UNSUPPORTED_FORMAT',
      `saved in torch's legacy format (torch < 1.6, or _use_new_zipfile_serialization=False), which model-stock does not read; ${CONVERT}`,
      where,
    );
  }
  if (new TextDecoder('latin1').decode(head.subarray(257, 262)) === 'ustar') {
    throw new ModelStockError(
      'UNSUPPORTED_FORMAT',
      `a tar archive (torch's oldest checkpoint format), which model-stock does not read; ${CONVERT}`,
      where,
    );
  }
  if (head[0] === 0x80) {
    throw new ModelStockError(
      'UNSUPPORTED_FORMAT',
      `a bare pickle stream, not the zip archive torch.save writes; ${CONVERT}`,
      where,
    );
  }
  throw new ModelStockError(
    'INVALID_ARCHIVE',
    'not a zip archive (torch.save writes one, starting with PK\\x03\\x04): not a PyTorch checkpoint, or damaged',
    where,
  );
}

/** Each tensor's bytes in the file, checked against its storage entry; the dict's order kept. */
async function locateTensors(
  archive: ZipArchive,
  headers: LocalHeaders,
  found: FoundStateDict,
): Promise<TensorInfo[]> {
  const file = archive.source.file;
  // Storage entries in the order their local headers lie in the file: the header reads go forward.
  const storages = new Map<string, PyStorage>();
  for (const [, t] of found.tensors) if (t instanceof PyTensor) storages.set(t.storage.key, t.storage);
  const entries = [...storages.values()].map((s) => {
    const entry = archive.entries.get(`data/${s.key}`);
    if (entry === undefined) {
      throw new ModelStockError(
        'INVALID_STORAGE',
        `storage "${s.key}" has no record ${archive.top}/data/${s.key} in the archive`,
        { file },
      );
    }
    return { storage: s, entry };
  });
  entries.sort((a, b) => a.entry.localHeaderOffset - b.entry.localHeaderOffset);
  const ranges = new Map<string, EntryRange>();
  for (const { storage, entry } of entries) ranges.set(storage.key, await headers.range(entry));
  return runSliced(tensorInfos(file, found, ranges));
}

function* tensorInfos(
  file: string,
  found: FoundStateDict,
  ranges: ReadonlyMap<string, EntryRange>,
): Sliced<TensorInfo[]> {
  const out: TensorInfo[] = [];
  // Tensors of one shape share the shape array: fewer objects for a collector to mark (as for headers).
  const shapes = new Map<string, readonly number[]>();
  for (let i = 0; i < found.tensors.length; i++) {
    if (i % CHECK_EVERY === CHECK_EVERY - 1) yield;
    const [name, t] = found.tensors[i] as readonly [string, PyTensor | PyUnreadableTensor];
    const fail = (code: 'INVALID_STORAGE' | 'NON_CONTIGUOUS' | 'UNSUPPORTED_FORMAT', message: string) =>
      new ModelStockError(code, message, { file, tensor: name });
    if (!(t instanceof PyTensor)) {
      throw fail('UNSUPPORTED_FORMAT', `is ${t.what}: model-stock merges dense tensors read in place`);
    }
    const s = t.storage;
    if (s.dtype === undefined) {
      throw fail('INVALID_STORAGE', `its storage has type ${s.type}, which model-stock cannot read`);
    }
    if (t.dtype === undefined) throw fail('INVALID_STORAGE', 'its dtype is one model-stock cannot read');
    const untyped = s.type.endsWith('UntypedStorage');
    if (!untyped && s.dtype !== t.dtype) {
      throw fail('INVALID_STORAGE', `a ${t.dtype} tensor over a ${s.type} storage`);
    }
    const itemBits = dtypeBits(t.dtype);
    if (itemBits % 8 !== 0) throw fail('INVALID_STORAGE', `dtype ${t.dtype} has no whole-byte elements`);
    const itemSize = itemBits / 8;
    const range = ranges.get(s.key) as EntryRange;
    const declared = s.numel * (untyped ? 1 : dtypeBits(s.dtype) / 8);
    if (range.length < declared) {
      throw fail(
        'INVALID_STORAGE',
        `its storage data/${s.key} holds ${range.length} bytes, fewer than the ${declared} its record declares`,
      );
    }
    let numel = 1;
    for (const d of t.shape) numel *= d;
    if (!Number.isSafeInteger(numel * itemSize))
      throw fail('INVALID_STORAGE', `shape [${t.shape.join(', ')}] is too large`);
    if (!isContiguous(t.shape, t.stride, numel)) {
      throw fail(
        'NON_CONTIGUOUS',
        `is stored as a strided view of its storage (shape [${t.shape.join(', ')}], strides [${t.stride.join(', ')}]), ` +
          'not a contiguous run; save tensor.contiguous() (state_dict() tensors normally are)',
      );
    }
    const byteLength = numel * itemSize;
    const start = numel === 0 ? 0 : t.offset * itemSize;
    if (start + byteLength > declared) {
      throw fail(
        'INVALID_STORAGE',
        `needs bytes [${start}, ${start + byteLength}) of storage data/${s.key}, which holds ${declared}`,
      );
    }
    const shapeKey = t.shape.join(',');
    let shape = shapes.get(shapeKey);
    if (shape === undefined) shapes.set(shapeKey, (shape = t.shape));
    out.push({ name, dtype: t.dtype, shape, offset: range.offset + start, byteLength, file });
  }
  return out;
}

/** Row-major with no gaps: the stride of each dimension is the product of the sizes after it (size-1 dimensions aside). */
function isContiguous(shape: readonly number[], stride: readonly number[], numel: number): boolean {
  if (numel === 0) return true;
  let expected = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    const size = shape[i] as number;
    if (size !== 1 && stride[i] !== expected) return false;
    expected *= size;
  }
  return true;
}
