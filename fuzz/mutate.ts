/**
 * Seeded inputs for the parser fuzz targets: valid headers and index files generated at random, then
 * mutated byte-wise and token-wise. Same seed, same inputs.
 */
import { DTYPE_BITS, DTYPE_SIZES, dtypeBits, type DType } from '../lib/dtype';

/** mulberry32: small, fast, and good enough to pick mutations. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)] as T;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

export const DTYPES = [...Object.keys(DTYPE_SIZES), ...Object.keys(DTYPE_BITS)] as DType[];

/** A fuzz input: bytes, and for headers the size of the data section the file claims to have. */
export interface FuzzInput {
  readonly kind: 'header' | 'index' | 'pytorch';
  readonly bytes: Uint8Array;
  readonly dataBytes: number;
}

const NAMES = [
  'model.embed_tokens.weight',
  'lm_head.weight',
  'model.layers.0.self_attn.q_proj.weight',
  'a',
  '',
  '10',
  '0',
  '__proto__',
  'constructor',
  'dtype',
  '__metadata__x',
  'ünïcødé',
  '名前',
  '😀',
  'tab\there',
  'quote"d',
  'back\\slash',
];

function randomName(rng: Rng, i: number): string {
  return rng.chance(0.5) ? `${rng.pick(NAMES)}${i}` : rng.pick(NAMES);
}

/** Values that break one rule each, or sit at its edge. */
const ODD_VALUES = [
  '-1',
  '-0',
  '1.5',
  '1.0',
  '1e2',
  '1e400',
  '9007199254740991',
  '9007199254740992',
  '4294967296',
  '"1"',
  'null',
  'true',
  '[]',
  '[1]',
  '{}',
  '{"a":1}',
  '[[[[1]]]]',
];

/**
 * A header of a few tensors with contiguous offsets in a random order; with `defects`, one or two
 * rules broken on purpose (a bad dim or offset, an unknown dtype, an extra or missing key, a duplicate
 * name written another way, odd metadata, a data section of the wrong size).
 */
export function randomHeader(rng: Rng, defects = false): FuzzInput {
  const count = rng.int(6);
  const tensors: { name: string; dtype: DType; shape: number[]; bytes: number }[] = [];
  const names = new Set<string>();
  for (let i = 0; i < count; i++) {
    const name = randomName(rng, i);
    if (names.has(name) || name === '__metadata__') continue;
    names.add(name);
    const dtype = rng.pick(DTYPES);
    const rank = rng.int(4);
    const shape = Array.from({ length: rank }, () => (rng.chance(0.1) ? 0 : 1 + rng.int(4)));
    let elements = shape.reduce((a, b) => a * b, 1);
    if ((elements * dtypeBits(dtype)) % 8 !== 0) {
      shape.push(2);
      elements *= 2;
      if ((elements * dtypeBits(dtype)) % 8 !== 0) {
        shape[shape.length - 1] = 4;
        elements *= 2;
      }
    }
    tensors.push({ name, dtype, shape, bytes: (elements * dtypeBits(dtype)) / 8 });
  }
  // Data order differs from header order, as in files written by the safetensors library.
  const order = tensors.map((_, i) => i).sort(() => rng.next() - 0.5);
  const begins = new Map<number, number>();
  let at = 0;
  for (const i of order) {
    begins.set(i, at);
    at += (tensors[i] as { bytes: number }).bytes;
  }
  const ws = () => (rng.chance(0.2) ? rng.pick([' ', '\n', '\t', '\r\n  ']) : '');
  const defect = (p: number): boolean => defects && rng.chance(p);
  const parts: string[] = [];
  if (rng.chance(0.5)) {
    let meta = rng.chance(0.1) ? 'null' : JSON.stringify({ format: 'pt', [randomName(rng, 9)]: 'x' });
    if (defect(0.3)) meta = rng.pick([...ODD_VALUES, '{"format":1}', '{"a":"x","a":"y"}', '"pt"']);
    parts.push(`"__metadata__":${ws()}${meta}`);
  }
  tensors.forEach((t, i) => {
    const begin = begins.get(i) as number;
    let dtype = JSON.stringify(t.dtype);
    let shape = `[${t.shape.join(`,${ws()}`)}]`;
    let offsets = `[${begin},${ws()}${begin + t.bytes}]`;
    if (defect(0.15)) dtype = rng.pick(['"F128"', '"f32"', '""', ...ODD_VALUES]);
    if (defect(0.15)) {
      const dims = t.shape.map(String);
      dims.splice(rng.int(dims.length + 1), dims.length > 0 ? 1 : 0, rng.pick(ODD_VALUES));
      shape = rng.chance(0.2) ? rng.pick(ODD_VALUES) : `[${dims.join(',')}]`;
    }
    if (defect(0.15)) {
      offsets = rng.pick([
        `[${begin + t.bytes},${begin}]`,
        `[${begin}]`,
        `[${begin},${begin + t.bytes},0]`,
        `[${begin + 1},${begin + t.bytes + 1}]`,
        `[${begin},${begin + t.bytes + rng.pick([-1, 1, 8])}]`,
        `[${begin},${rng.pick(ODD_VALUES)}]`,
        rng.pick(ODD_VALUES),
      ]);
    }
    const fields = [`"dtype":${ws()}${dtype}`, `"shape":${ws()}${shape}`, `"data_offsets":${offsets}`];
    if (defect(0.1)) fields.splice(rng.int(3), 1);
    if (defect(0.1))
      fields.push(rng.pick(['"data_offset":[0,0]', '"dtype":"F32"', '"__proto__":1', '"10":0']));
    fields.sort(() => rng.next() - 0.5);
    const key = rng.chance(0.1) ? escapeAll(t.name) : JSON.stringify(t.name);
    const value = defect(0.05) ? rng.pick(ODD_VALUES) : `{${fields.join(',')}}`;
    parts.push(`${ws()}${key}${ws()}:${ws()}${value}`);
    // The same name again, perhaps spelled with escapes: JSON.parse would keep only the last.
    if (defect(0.05)) parts.push(`${escapeAll(t.name)}:{${fields.join(',')}}`);
  });
  const text = `${ws()}{${parts.sort(() => rng.next() - 0.5).join(',')}${ws()}}${ws()}`;
  const dataBytes = defect(0.1) ? Math.max(0, at + rng.pick([-1, 1, 7])) : at;
  return { kind: 'header', bytes: Buffer.from(text), dataBytes };
}

/** An index naming a few shards; with `defects`, a bad value, shard name, key or structure. */
export function randomIndex(rng: Rng, defects = false): FuzzInput {
  const count = rng.int(6);
  const entries: string[] = [];
  const names = new Set<string>();
  const defect = (p: number): boolean => defects && rng.chance(p);
  for (let i = 0; i < count; i++) {
    const name = randomName(rng, i);
    if (names.has(name)) continue;
    names.add(name);
    let shard = JSON.stringify(
      rng.pick(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'x']),
    );
    if (defect(0.2)) shard = rng.pick([...ODD_VALUES, '""', '"."', '".."', '"a/b"', '"a\\\\b"', '"..x"']);
    entries.push(`    ${JSON.stringify(name)}: ${shard}`);
    if (defect(0.05)) entries.push(`    ${escapeAll(name)}: ${shard}`);
  }
  let weightMap = `{\n${entries.join(',\n')}\n  }`;
  if (defect(0.1)) weightMap = rng.pick(ODD_VALUES);
  const text = defect(0.05)
    ? rng.pick(ODD_VALUES)
    : `{\n  "metadata": {\n    "total_size": ${rng.int(1000)}\n  },\n  "weight_map": ${weightMap}\n}\n`;
  return { kind: 'index', bytes: Buffer.from(text), dataBytes: 0 };
}

function escapeAll(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) out += `\\u${s.charCodeAt(i).toString(16).padStart(4, '0')}`;
  return `${out}"`;
}

const TOKENS = [
  '"dtype"',
  '"shape"',
  '"data_offsets"',
  '"__metadata__"',
  '"__proto__"',
  '"10"',
  ...DTYPES.map((d) => `"${d}"`),
  '"F128"',
  '[',
  ']',
  '{',
  '}',
  ',',
  ':',
  '"',
  '\\',
  '\\u',
  '\\ud800',
  '\\udc00',
  '\\u0000',
  'null',
  'true',
  'false',
  '-0',
  '0',
  '00',
  '1e400',
  '-1e400',
  '1e-400',
  '9007199254740991',
  '9007199254740992',
  '9007199254740993',
  '18446744073709551616',
  '4294967296',
  '1.0',
  '1.5',
  '1e2',
  '1E+2',
  '2e-0',
  '0.5e1',
  '-1',
  '1.',
  '.1',
  '+1',
  '[]',
  '{}',
  '[[[[[[[[',
  ']]]]]]]]',
  '"weight_map"',
  '"model-00001-of-00002.safetensors"',
  '"../x"',
  '"a/b"',
  '" "',
  ' ',
  '\t',
  '\n',
  '\u00a0',
  '\ufeff',
];

const BYTES = [
  0x00, 0x09, 0x0a, 0x0d, 0x1f, 0x20, 0x22, 0x2c, 0x2d, 0x2e, 0x30, 0x31, 0x39, 0x3a, 0x45, 0x5b, 0x5c, 0x5d,
  0x65, 0x7b, 0x7d, 0x7f, 0x80, 0xbf, 0xc0, 0xc2, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff,
];

/** Invalid or edge UTF-8: overlong, surrogate, past U+10FFFF, truncated, a BOM. */
const UTF8 = [
  [0xc0, 0x80],
  [0xed, 0xa0, 0x80],
  [0xf4, 0x90, 0x80, 0x80],
  [0xe2, 0x82],
  [0xef, 0xbb, 0xbf],
  [0xf0, 0x9f, 0x98, 0x80],
];

const MAX_INPUT = 1 << 16;

/** 1–8 mutations of `input`; `other` is used for crossover. */
export function mutate(rng: Rng, input: FuzzInput, other: FuzzInput): FuzzInput {
  let b = Array.from(input.bytes);
  let dataBytes = input.dataBytes;
  // Mostly one mutation: more than a few almost always just break the JSON.
  const rounds = rng.chance(0.7) ? 1 : 1 + rng.int(6);
  for (let r = 0; r < rounds; r++) {
    const at = rng.int(b.length + 1);
    switch (rng.int(12)) {
      case 0:
        if (b.length > 0) b[at % b.length] = (b[at % b.length] as number) ^ (1 << rng.int(8));
        break;
      case 1:
        if (b.length > 0) b[at % b.length] = rng.pick(BYTES);
        break;
      case 2:
        b.splice(at, 1 + rng.int(16));
        break;
      case 3: {
        const from = rng.int(b.length + 1);
        b.splice(at, 0, ...b.slice(from, from + 1 + rng.int(64)));
        break;
      }
      case 4:
      case 5:
        b.splice(at, 0, ...Buffer.from(rng.pick(TOKENS)));
        break;
      case 6:
        if (rng.chance(0.3)) b.splice(at, 0, ...rng.pick(UTF8));
        else b.splice(at, 0, ...Buffer.from(rng.pick(ODD_VALUES)));
        break;
      case 7: {
        // Replace a run of digits by an interesting number.
        const start = b.findIndex((c, i) => i >= at && c >= 0x30 && c <= 0x39);
        if (start < 0) break;
        let end = start;
        while (end < b.length && (b[end] as number) >= 0x30 && (b[end] as number) <= 0x39) end++;
        b.splice(start, end - start, ...Buffer.from(rng.pick(TOKENS.filter((t) => /^[-+.0-9]/.test(t)))));
        break;
      }
      case 8: {
        // Crossover: a piece of another input.
        const from = rng.int(other.bytes.length + 1);
        b.splice(at, rng.int(32), ...other.bytes.subarray(from, from + 1 + rng.int(128)));
        break;
      }
      case 9:
        b = b.slice(0, at);
        break;
      case 10: {
        const depth = 1 + rng.int(rng.chance(0.1) ? 5000 : 20);
        const open = rng.chance(0.5) ? '[' : '{"k":';
        const close = open === '[' ? ']' : '}';
        const end = at + rng.int(b.length - at + 1);
        b.splice(end, 0, ...Buffer.from(close.repeat(depth)));
        b.splice(at, 0, ...Buffer.from(open.repeat(depth)));
        break;
      }
      default:
        dataBytes = Math.max(0, dataBytes + rng.pick([-2, -1, 1, 2, 8]));
    }
    if (b.length > MAX_INPUT) b = b.slice(0, MAX_INPUT);
  }
  return { kind: input.kind, bytes: Uint8Array.from(b), dataBytes };
}
