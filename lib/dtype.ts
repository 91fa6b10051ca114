/** safetensors dtypes, their sizes in bytes, and which of them Model Stock merges. */
export const DTYPE_SIZES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  F8_E8M0: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
  C64: 8,
} as const;

/** Sub-byte dtypes: size in bits (the reference crate's F4 / F6_* types). Elements × bits must be a multiple of 8. */
export const DTYPE_BITS: Record<string, number> = { F4: 4, F6_E2M3: 6, F6_E3M2: 6 };

export type DType = keyof typeof DTYPE_SIZES | 'F4' | 'F6_E2M3' | 'F6_E3M2';

/** Float dtypes the merge decodes and encodes. */
export type FloatDType = 'F64' | 'F32' | 'F16' | 'BF16';
export const FLOAT_DTYPES: readonly FloatDType[] = ['F64', 'F32', 'F16', 'BF16'];

export function isKnownDType(s: string): s is DType {
  return (
    Object.prototype.hasOwnProperty.call(DTYPE_SIZES, s) ||
    Object.prototype.hasOwnProperty.call(DTYPE_BITS, s)
  );
}
export function isMergeableDType(d: string): d is FloatDType {
  return d === 'F64' || d === 'F32' || d === 'F16' || d === 'BF16';
}
/** Integer and BOOL tensors are copied from the base byte for byte. */
export function isCopyDType(d: DType): boolean {
  return d === 'BOOL' || d[0] === 'I' || d[0] === 'U';
}
/** Bits per element. */
export function dtypeBits(d: DType): number {
  const bytes = (DTYPE_SIZES as Record<string, number>)[d];
  return bytes !== undefined ? bytes * 8 : (DTYPE_BITS[d] as number);
}
/** Bytes per element of a float dtype the merge handles. */
export function floatSize(d: FloatDType): 2 | 4 | 8 {
  return d === 'F64' ? 8 : d === 'F32' ? 4 : 2;
}
/** torch's names for config.json's torch_dtype. */
export const TORCH_DTYPE: Record<FloatDType, string> = {
  F64: 'float64',
  F32: 'float32',
  F16: 'float16',
  BF16: 'bfloat16',
};
