import { floatSize, type FloatDType } from '../dtype';

/** Elements scanned per aligned copy when `bytes` is not aligned to 4. */
const SCRATCH_BYTES = 1 << 16;
let scratch: Uint8Array | undefined;

/**
 * Index of the first NaN or ±Inf element of little-endian `dtype` data, or −1. An element is
 * non-finite exactly when its exponent field is all ones, so this tests bits, two 16-bit elements per
 * 32-bit word. Any byte alignment is accepted (unaligned data is scanned through a small aligned copy).
 */
export function findNonFinite(bytes: Uint8Array, dtype: FloatDType): number {
  const size = floatSize(dtype);
  if (bytes.byteLength % size !== 0) {
    throw new RangeError(`${bytes.byteLength} bytes is not a whole number of ${dtype} elements`);
  }
  const count = bytes.byteLength / size;
  if (bytes.byteOffset % 4 === 0) return scanAligned(bytes, dtype, count);
  scratch ??= new Uint8Array(SCRATCH_BYTES);
  const perChunk = SCRATCH_BYTES / size;
  for (let first = 0; first < count; first += perChunk) {
    const n = Math.min(perChunk, count - first);
    scratch.set(bytes.subarray(first * size, (first + n) * size));
    const hit = scanAligned(scratch, dtype, n);
    if (hit >= 0) return first + hit;
  }
  return -1;
}

/** `bytes.byteOffset` is a multiple of 4. */
function scanAligned(bytes: Uint8Array, dtype: FloatDType, count: number): number {
  const words = Math.floor((count * floatSize(dtype)) / 4);
  const w = new Uint32Array(bytes.buffer, bytes.byteOffset, words);
  switch (dtype) {
    case 'F64':
      for (let k = 0; k < count; k++) if ((w[2 * k + 1]! & 0x7ff00000) === 0x7ff00000) return k;
      return -1;
    case 'F32':
      for (let k = 0; k < count; k++) if ((w[k]! & 0x7f800000) === 0x7f800000) return k;
      return -1;
    case 'F16':
    case 'BF16': {
      // Adding the exponent's lowest bit to a masked, all-ones exponent carries into the half's sign
      // position, and never across halves, so one add and one test check both halves of a word.
      const mask = dtype === 'F16' ? 0x7c007c00 : 0x7f807f80;
      const carry = dtype === 'F16' ? 0x04000400 : 0x00800080;
      const half = dtype === 'F16' ? 0x7c00 : 0x7f80;
      for (let k = 0; k < words; k++) {
        if ((((w[k]! & mask) + carry) & 0x80008000) !== 0) {
          return (w[k]! & half) === half ? 2 * k : 2 * k + 1;
        }
      }
      if (count % 2 === 1) {
        const last = bytes[count * 2 - 2]! | (bytes[count * 2 - 1]! << 8);
        if ((last & half) === half) return count - 1;
      }
      return -1;
    }
  }
}
