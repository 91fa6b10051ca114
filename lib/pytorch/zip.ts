/**
 * The zip container torch.save writes (torch ≥ 1.6): one top folder named after the file's stem
 * (`pytorch_model/…`, `archive/…` from a buffer) holding `data.pkl`, `data/<key>` (one per storage),
 * `version`, and in torch 2.x `byteorder` and a few more records. Entries are stored, never compressed,
 * their data 64-byte aligned by a padding extra field; the general-purpose flag 0x0808 leaves the local
 * headers' CRC and sizes 0, so sizes come from the central directory. Shards over 4 GiB are the norm,
 * so zip64 records are read wherever a field is saturated.
 *
 * Only the structure is read (central directory, the local headers of the entries used, data.pkl):
 * every offset and length is checked against the file before it is used, and an entry's data must lie
 * before the central directory. CRCs are not checked: the data is read in place, later, by the engine.
 */
import { ModelStockError } from '../errors';
import { ChunkedMap } from '../util/chunkedMap';
import { CHECK_EVERY, runSliced, type Sliced } from '../util/sliced';
import type { ByteSource } from './source';

/** A central directory larger than this is refused (a million storages take ~80 MB). */
export const MAX_CENTRAL_DIRECTORY = 256 * 1024 * 1024;

const EOCD = 0x06054b50;
const EOCD_SIZE = 22;
const ZIP64_LOCATOR = 0x07064b50;
const ZIP64_LOCATOR_SIZE = 20;
const ZIP64_EOCD = 0x06064b50;
const ZIP64_EOCD_SIZE = 56;
const CENTRAL = 0x02014b50;
const CENTRAL_SIZE = 46;
const LOCAL = 0x04034b50;
const LOCAL_SIZE = 30;
const ZIP64_EXTRA = 0x0001;
const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;

export interface ZipEntry {
  /** The full name, top folder included. */
  readonly name: string;
  /** 0: stored; anything else is compressed. */
  readonly method: number;
  readonly flags: number;
  readonly compressedSize: number;
  readonly size: number;
  readonly localHeaderOffset: number;
}

export interface ZipArchive {
  readonly source: ByteSource;
  /** The one top folder every entry lies in. */
  readonly top: string;
  /** Entries by their name inside the top folder (`data.pkl`, `data/0`, `byteorder`). */
  readonly entries: ReadonlyMap<string, ZipEntry>;
  /** Where the central directory starts: entry data must end before it. */
  readonly dataEnd: number;
}

/** Where a stored entry's bytes lie in the file. */
export interface EntryRange {
  readonly offset: number;
  readonly length: number;
}

function invalid(file: string, message: string): ModelStockError {
  return new ModelStockError('INVALID_ARCHIVE', message, { file });
}

/** A u64 as a number, or an error when it cannot be an offset in any file (≥ 2^53). */
function u64(view: DataView, at: number, file: string, what: string): number {
  const v = view.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(file, `${what} ${v} is beyond any file size`);
  return Number(v);
}

const viewOf = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

interface DirectoryEnd {
  readonly entries: number;
  readonly cdOffset: number;
  readonly cdSize: number;
  /** Where the records after the central directory start (zip64 end record, or the end record). */
  readonly cdLimit: number;
}

/** Finds the end of central directory record (and its zip64 form) from the end of the file. */
async function findDirectoryEnd(source: ByteSource): Promise<DirectoryEnd> {
  const { file, size } = source;
  if (size < EOCD_SIZE) throw invalid(file, `${size} bytes: too short to be a zip archive`);
  const tailLength = Math.min(size, EOCD_SIZE + U16_MAX + ZIP64_LOCATOR_SIZE);
  const tailStart = size - tailLength;
  const tail = await source.read(tailStart, tailLength);
  const view = viewOf(tail);
  // The last signature whose comment ends exactly at the end of the file: a comment may contain the
  // signature's bytes, the real record's length field rules those out.
  let at = -1;
  for (let i = tailLength - EOCD_SIZE; i >= 0; i--) {
    if (view.getUint32(i, true) === EOCD && i + EOCD_SIZE + view.getUint16(i + 20, true) === tailLength) {
      at = i;
      break;
    }
  }
  if (at < 0) throw invalid(file, 'no end of central directory record: not a zip archive, or truncated');
  const disk = view.getUint16(at + 4, true);
  const cdDisk = view.getUint16(at + 6, true);
  let entries = view.getUint16(at + 10, true);
  let cdSize = view.getUint32(at + 12, true);
  let cdOffset = view.getUint32(at + 16, true);
  let cdLimit = tailStart + at;
  const locatorAt = at - ZIP64_LOCATOR_SIZE;
  if (locatorAt >= 0 && view.getUint32(locatorAt, true) === ZIP64_LOCATOR) {
    const recordAt = u64(view, locatorAt + 8, file, 'zip64 end record offset');
    if (view.getUint32(locatorAt + 4, true) !== 0 || view.getUint32(locatorAt + 16, true) > 1) {
      throw invalid(file, 'spans several disks (a split zip archive)');
    }
    if (recordAt + ZIP64_EOCD_SIZE > tailStart + locatorAt) {
      throw invalid(file, `zip64 end record at ${recordAt} overlaps the records after it`);
    }
    const record = viewOf(await source.read(recordAt, ZIP64_EOCD_SIZE));
    if (record.getUint32(0, true) !== ZIP64_EOCD) throw invalid(file, `no zip64 end record at ${recordAt}`);
    if (record.getUint32(16, true) !== 0 || record.getUint32(20, true) !== 0) {
      throw invalid(file, 'spans several disks (a split zip archive)');
    }
    const total = u64(record, 32, file, 'entry count');
    if (u64(record, 24, file, 'entry count') !== total) throw invalid(file, 'spans several disks');
    entries = total;
    cdSize = u64(record, 40, file, 'central directory size');
    cdOffset = u64(record, 48, file, 'central directory offset');
    cdLimit = recordAt;
  } else if (
    disk !== 0 ||
    cdDisk !== 0 ||
    view.getUint16(at + 8, true) !== entries ||
    entries === U16_MAX ||
    cdSize === U32_MAX ||
    cdOffset === U32_MAX
  ) {
    throw invalid(
      file,
      disk !== 0 || cdDisk !== 0
        ? 'spans several disks (a split zip archive)'
        : 'saturated end record fields without a zip64 end record',
    );
  }
  if (cdOffset + cdSize > cdLimit) {
    throw invalid(
      file,
      `central directory [${cdOffset}, ${cdOffset + cdSize}) runs past the records after it (at ${cdLimit})`,
    );
  }
  if (cdSize > MAX_CENTRAL_DIRECTORY) {
    throw invalid(file, `central directory of ${cdSize} bytes exceeds the limit of ${MAX_CENTRAL_DIRECTORY}`);
  }
  if (entries > cdSize / CENTRAL_SIZE) {
    throw invalid(file, `${entries} entries cannot fit a central directory of ${cdSize} bytes`);
  }
  return { entries, cdOffset, cdSize, cdLimit };
}

const latin1 = new TextDecoder('latin1');
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Bit 11: UTF-8 names; otherwise CP437, which agrees with Latin-1 on the ASCII torch writes. */
function decodeName(bytes: Uint8Array, flags: number): string | undefined {
  try {
    return flags & 0x800 ? utf8.decode(bytes) : latin1.decode(bytes);
  } catch {
    return undefined;
  }
}

/** Reads and checks the central directory: every entry confined to the one top folder, no name twice. */
export async function readZipArchive(source: ByteSource): Promise<ZipArchive> {
  const end = await findDirectoryEnd(source);
  const directory = await source.read(end.cdOffset, end.cdSize);
  return runSliced(parseDirectory(source, end, directory));
}

function* parseDirectory(source: ByteSource, end: DirectoryEnd, directory: Uint8Array): Sliced<ZipArchive> {
  const { file } = source;
  const view = viewOf(directory);
  const entries = new ChunkedMap<ZipEntry>();
  let top: string | undefined;
  let at = 0;
  for (let i = 0; i < end.entries; i++) {
    if (i % CHECK_EVERY === CHECK_EVERY - 1) yield;
    if (at + CENTRAL_SIZE > directory.byteLength || view.getUint32(at, true) !== CENTRAL) {
      throw invalid(file, `central directory entry ${i} (at ${end.cdOffset + at}) is missing or malformed`);
    }
    const flags = view.getUint16(at + 8, true);
    const method = view.getUint16(at + 10, true);
    let compressedSize = view.getUint32(at + 20, true);
    let size = view.getUint32(at + 24, true);
    const nameLength = view.getUint16(at + 28, true);
    const extraLength = view.getUint16(at + 30, true);
    const commentLength = view.getUint16(at + 32, true);
    const diskStart = view.getUint16(at + 34, true);
    let localHeaderOffset = view.getUint32(at + 42, true);
    const next = at + CENTRAL_SIZE + nameLength + extraLength + commentLength;
    if (next > directory.byteLength) throw invalid(file, `central directory entry ${i} runs past its end`);
    const nameBytes = directory.subarray(at + CENTRAL_SIZE, at + CENTRAL_SIZE + nameLength);
    const name = decodeName(nameBytes, flags);
    if (name === undefined) throw invalid(file, `central directory entry ${i}: its name is not valid UTF-8`);
    // zip64 extended information: the saturated fields, in this order.
    const extra = viewOf(
      directory.subarray(at + CENTRAL_SIZE + nameLength, at + CENTRAL_SIZE + nameLength + extraLength),
    );
    const where = `entry "${name}"`;
    for (let x = 0; x + 4 <= extra.byteLength;) {
      const id = extra.getUint16(x, true);
      const length = extra.getUint16(x + 2, true);
      if (x + 4 + length > extra.byteLength)
        throw invalid(file, `${where}: an extra field runs past its end`);
      if (id === ZIP64_EXTRA) {
        let f = x + 4;
        const take = (what: string): number => {
          if (f + 8 > x + 4 + length) throw invalid(file, `${where}: zip64 extra field lacks its ${what}`);
          const v = u64(extra, f, file, `${where}: ${what}`);
          f += 8;
          return v;
        };
        if (size === U32_MAX) size = take('size');
        if (compressedSize === U32_MAX) compressedSize = take('compressed size');
        if (localHeaderOffset === U32_MAX) localHeaderOffset = take('local header offset');
      }
      x += 4 + length;
    }
    if (diskStart !== 0 && diskStart !== U16_MAX) throw invalid(file, `${where} starts on another disk`);
    if (size === U32_MAX || compressedSize === U32_MAX || localHeaderOffset === U32_MAX) {
      throw invalid(file, `${where}: saturated size or offset without a zip64 extra field`);
    }
    if (localHeaderOffset + LOCAL_SIZE > end.cdOffset) {
      throw invalid(
        file,
        `${where}: local header at ${localHeaderOffset} is not before the central directory`,
      );
    }
    const slash = name.indexOf('/');
    const entryTop = slash > 0 ? name.slice(0, slash) : '';
    top ??= entryTop;
    const inner = name.slice(slash + 1);
    if (entryTop === '' || entryTop === '.' || entryTop === '..') {
      throw invalid(file, `${where} lies in no top folder (torch puts every record in one)`);
    }
    if (entryTop !== top) throw invalid(file, `${where} lies outside the archive's one top folder "${top}/"`);
    if (
      name.includes('\\') ||
      name.includes('\0') ||
      inner.split('/').some((part) => part === '' || part === '.' || part === '..')
    ) {
      throw invalid(file, `${where} is not a plain path inside the top folder "${top}/"`);
    }
    if (entries.has(inner)) throw invalid(file, `${where} appears twice`);
    entries.set(inner, { name, method, flags, compressedSize, size, localHeaderOffset });
    at = next;
  }
  if (top === undefined) throw invalid(file, 'an empty zip archive');
  return { source, top, entries, dataEnd: end.cdOffset };
}

/**
 * The local headers of the entries used, read in blocks: torch puts each small record's header next to
 * the previous one's data, so one read often serves several.
 */
export class LocalHeaders {
  private block: Uint8Array = new Uint8Array(0);
  private blockStart = 0;
  private static readonly BLOCK = 64 * 1024;

  constructor(private readonly archive: ZipArchive) {}

  private async bytes(position: number, length: number): Promise<Uint8Array> {
    if (position < this.blockStart || position + length > this.blockStart + this.block.byteLength) {
      const read = Math.min(Math.max(length, LocalHeaders.BLOCK), this.archive.dataEnd - position);
      this.block = await this.archive.source.read(position, read);
      this.blockStart = position;
    }
    return this.block.subarray(position - this.blockStart, position - this.blockStart + length);
  }

  /** Where a stored entry's data lies; the local header is checked against the central directory. */
  async range(entry: ZipEntry): Promise<EntryRange> {
    const { file } = this.archive.source;
    const where = `entry "${entry.name}"`;
    if (entry.flags & 0x1) {
      throw new ModelStockError('UNSUPPORTED_FORMAT', `${where} is encrypted`, { file });
    }
    if (entry.method !== 0) {
      throw new ModelStockError(
        'UNSUPPORTED_FORMAT',
        `${where} is compressed (zip method ${entry.method}${entry.method === 8 ? ', deflate' : ''}); torch.save ` +
          'stores every entry uncompressed, so the file was re-packed: save it again with torch.save',
        { file },
      );
    }
    if (entry.compressedSize !== entry.size) {
      throw invalid(
        file,
        `${where}: stored with ${entry.compressedSize} bytes but ${entry.size} uncompressed`,
      );
    }
    const header = viewOf(await this.bytes(entry.localHeaderOffset, LOCAL_SIZE));
    if (header.getUint32(0, true) !== LOCAL) {
      throw invalid(file, `${where}: no local header at ${entry.localHeaderOffset}`);
    }
    const nameLength = header.getUint16(26, true);
    const extraLength = header.getUint16(28, true);
    const nameAt = entry.localHeaderOffset + LOCAL_SIZE;
    const offset = nameAt + nameLength + extraLength;
    if (offset + entry.size > this.archive.dataEnd) {
      throw invalid(
        file,
        `${where}: data [${offset}, ${offset + entry.size}) runs into the central directory (at ${this.archive.dataEnd})`,
      );
    }
    const localName = decodeName(await this.bytes(nameAt, nameLength), entry.flags);
    if (localName !== entry.name) {
      throw invalid(file, `${where}: its local header names ${JSON.stringify(localName ?? '(not UTF-8)')}`);
    }
    if (header.getUint16(8, true) !== entry.method) {
      throw invalid(file, `${where}: local header and central directory disagree on the compression`);
    }
    return { offset, length: entry.size };
  }
}

/** A whole entry's bytes (small records only: data.pkl, byteorder, version), at most `limit` of them. */
export async function readEntry(
  archive: ZipArchive,
  headers: LocalHeaders,
  entry: ZipEntry,
  limit: number,
  code: 'INVALID_ARCHIVE' | 'INVALID_PICKLE' = 'INVALID_ARCHIVE',
): Promise<Uint8Array> {
  if (entry.size > limit) {
    throw new ModelStockError(
      code,
      `entry "${entry.name}" of ${entry.size} bytes exceeds the limit of ${limit}`,
      {
        file: archive.source.file,
      },
    );
  }
  const range = await headers.range(entry);
  return archive.source.read(range.offset, range.length);
}
