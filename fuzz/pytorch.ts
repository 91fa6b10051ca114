/**
 * Fuzz inputs for the PyTorch reader (zip container + pickle interpreter): mutations of real torch.save
 * files (test/data/pytorch). Half are byte-level changes to the whole archive (its structure: offsets,
 * sizes, names); half change data.pkl only and wrap it in a fresh, valid archive, so that the mutation
 * reaches the interpreter instead of stopping at the zip's checks.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LocalHeaders, readEntry, readZipArchive } from '../lib/pytorch/zip';
import { memorySource } from '../lib/pytorch/source';
import { TorchZipWriter } from '../lib/fixtures/torchZip';
import type { FuzzInput, Rng } from './mutate';

const FIXTURES = path.resolve(__dirname, '..', '..', 'test', 'data', 'pytorch');

/** Small, varied files: a state_dict(), shards with shared storages, nested training checkpoints, protocol 4, an exploit, refusals. */
const SEED_FILES = [
  'single-f16.bin',
  'sharded-bf16/pytorch_model-00001-of-00002.bin',
  'nested.pt',
  'protocol4.pt',
  'exploit.pt',
  'lightning.ckpt',
  'torch2.bin',
  'noncontiguous.pt',
  'quantized.pt',
  'compressed.pt',
];

export interface PytorchSeed {
  readonly archive: Uint8Array;
  readonly top: string;
  /** Records by name inside the top folder, data.pkl first. */
  readonly records: readonly (readonly [string, Uint8Array])[];
}

/** The seed files, and each one's records (a file whose records cannot be read is kept whole only). */
export async function pytorchSeeds(): Promise<PytorchSeed[]> {
  const seeds: PytorchSeed[] = [];
  for (const name of SEED_FILES) {
    const archive = new Uint8Array(fs.readFileSync(path.join(FIXTURES, name)));
    const zip = await readZipArchive(memorySource(name, archive));
    const headers = new LocalHeaders(zip);
    const records: [string, Uint8Array][] = [];
    try {
      for (const [inner, entry] of zip.entries)
        records.push([inner, await readEntry(zip, headers, entry, 1 << 20)]);
    } catch {
      records.length = 0; // compressed entries: byte-level mutations only
    }
    records.sort(([a], [b]) => (a === 'data.pkl' ? -1 : b === 'data.pkl' ? 1 : 0));
    seeds.push({ archive, top: zip.top, records });
  }
  return seeds;
}

/** Opcode sequences a mutation inserts into data.pkl: marks, memo, globals, calls, big lengths. */
const PICKLE_PIECES: readonly number[][] = [
  [0x28], // MARK
  [0x74], // TUPLE
  [0x52], // REDUCE
  [0x62], // BUILD
  [0x51], // BINPERSID
  [0x75], // SETITEMS
  [0x30], // POP
  [0x32], // DUP
  [0x29], // EMPTY_TUPLE
  [0x7d], // EMPTY_DICT
  [0x5d, 0x71, 0x00, 0x68, 0x00, 0x61], // a list appended to itself
  [0x68, 0xff], // BINGET 255
  [0x6a, 0xff, 0xff, 0xff, 0xff], // LONG_BINGET 2^32 − 1
  [0x72, 0xff, 0xff, 0xff, 0x7f], // LONG_BINPUT
  [0x58, 0xff, 0xff, 0xff, 0xff], // BINUNICODE of 4 GiB
  [0x8d, 0, 0, 0, 0, 0, 0, 0, 0x80], // BINUNICODE8 of 2^63
  [0x8a, 0xff], // LONG1 of 255 bytes
  [0x4a, 0xff, 0xff, 0xff, 0xff], // BININT −1
  [0x4b, 0x00], // BININT1 0
  [0x63, ...Buffer.from('posix\nsystem\n')],
  [0x63, ...Buffer.from('torch._utils\n_rebuild_tensor_v2\n')],
  [0x63, ...Buffer.from('torch\nFloatStorage\n')],
  [0x63, ...Buffer.from('collections\nOrderedDict\n')],
  [0x80, 0x09], // PROTO 9
  [0x95, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // FRAME 2^64 − 1
  [0x69], // INST
  [0x2e], // STOP
];

/** Values a 16- or 32-bit field of the zip structure is overwritten with. */
const FIELD_VALUES = [0, 1, 0xff, 0xffff, 0xfffffffe, 0xffffffff, 0x7fffffff, 64, 30];

function mutateBytes(rng: Rng, bytes: Uint8Array, pieces: readonly number[][] | undefined): Uint8Array {
  let b = Array.from(bytes);
  const rounds = rng.chance(0.6) ? 1 : 1 + rng.int(4);
  for (let r = 0; r < rounds; r++) {
    const at = rng.int(b.length + 1);
    switch (rng.int(pieces === undefined ? 6 : 8)) {
      case 0:
        if (b.length > 0) b[at % b.length] = (b[at % b.length] as number) ^ (1 << rng.int(8));
        break;
      case 1:
        if (b.length > 0) b[at % b.length] = rng.int(256);
        break;
      case 2:
        b.splice(at, 1 + rng.int(rng.chance(0.5) ? 4 : 64));
        break;
      case 3: {
        const from = rng.int(b.length + 1);
        b.splice(at, 0, ...b.slice(from, from + 1 + rng.int(48)));
        break;
      }
      case 4:
        b = b.slice(0, at);
        break;
      case 5: {
        // A little-endian field overwritten with an edge value.
        const v = rng.pick(FIELD_VALUES);
        const width = rng.chance(0.5) ? 2 : 4;
        for (let k = 0; k < width && at + k < b.length; k++) b[at + k] = (v >>> (8 * k)) & 0xff;
        break;
      }
      default:
        b.splice(at, 0, ...rng.pick(pieces as number[][]));
    }
  }
  return Uint8Array.from(b);
}

async function wrap(top: string, records: readonly (readonly [string, Uint8Array])[]): Promise<Uint8Array> {
  const w = TorchZipWriter.inMemory(top);
  for (const [name, bytes] of records) await w.add(name, bytes.byteLength, bytes);
  await w.finish();
  return w.bytes();
}

/** A mutated PyTorch file from one of `seeds` (or an earlier input of `corpus`). */
export async function mutatePytorch(
  rng: Rng,
  seeds: readonly PytorchSeed[],
  corpus: readonly FuzzInput[],
): Promise<FuzzInput> {
  const seed = rng.pick(seeds);
  if (seed.records.length === 0 || rng.chance(0.4)) {
    const from = corpus.length > 0 && rng.chance(0.3) ? rng.pick(corpus).bytes : seed.archive;
    return { kind: 'pytorch', bytes: mutateBytes(rng, from, undefined), dataBytes: 0 };
  }
  const records = seed.records.map(([n, b]) => [n, b] as [string, Uint8Array]);
  (records[0] as [string, Uint8Array])[1] = mutateBytes(
    rng,
    (records[0] as [string, Uint8Array])[1],
    PICKLE_PIECES,
  );
  if (rng.chance(0.1) && records.length > 2) records.splice(1 + rng.int(records.length - 1), 1);
  if (rng.chance(0.1)) {
    const victim = records[1 + rng.int(records.length - 1)];
    if (victim !== undefined) victim[1] = victim[1].subarray(0, rng.int(victim[1].byteLength + 1));
  }
  return { kind: 'pytorch', bytes: await wrap(seed.top, records), dataBytes: 0 };
}
