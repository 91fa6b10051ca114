// Decode, encode and rounding for the CUDA kernels, written once for nvcc's device code and for g++:
// native/cuda/emulate.cc compiles this same text on the CPU, and the test suite checks it there
// against native/convert.h (exhaustive BF16/F16, random and boundary F32/F64), so the arithmetic is
// exercised on machines without a GPU. Every rounding is to nearest, ties to even; a NaN stays a quiet
// NaN with its sign (the bit operations match convert.h's, not the CUDA intrinsics', on purpose).
#pragma once
#include <cstdint>
#include <cstring>

#include "../dtype.h"

#if defined(__CUDACC__)
#define MS_HD __host__ __device__ __forceinline__
#else
#define MS_HD inline
#endif

namespace ms {
namespace cuda {

MS_HD uint32_t bitsOfF32(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

MS_HD float f32OfBits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// Products and sums rounded on their own: nvcc would otherwise contract a·b + c into one FMA, and the
// CPU kernels (built with -ffp-contract=off) round twice. The host side relies on that flag too.
MS_HD float mulF32(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
MS_HD float addF32(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
MS_HD double mulF64(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
MS_HD double addF64(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
MS_HD double subF64(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
// One rounding: the Gram accumulators use true FMAs on both sides so the emulation matches bit for bit.
MS_HD double fmaF64(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return __fma_rn(a, b, c);
#else
  return __builtin_fma(a, b, c);
#endif
}

MS_HD float bf16ToF32(uint16_t h) { return f32OfBits(static_cast<uint32_t>(h) << 16); }

MS_HD uint16_t f32ToBf16(float f) {
  uint32_t u = bitsOfF32(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

MS_HD float f16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) return f32OfBits(sign | 0x7F800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return f32OfBits(sign);
    // subnormal: mant · 2^-24, exact in float32
    const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return f32OfBits(sign | ((exp + 112u) << 23) | (mant << 13));
}

MS_HD uint16_t f32ToF16(float f) {
  const uint32_t u = bitsOfF32(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));
  if (abs >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // ≥ 65520 rounds to Inf
  if (abs < 0x38800000u) {                                             // below 2^-14: subnormal or 0
    if (abs < 0x33000000u) return sign;                                 // ≤ 2^-25 rounds to 0
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126u - exp;  // result in units of 2^-24
    uint32_t r = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t r = abs - 0x38000000u;  // rebias 127 → 15
  r += 0xFFFu + ((r >> 13) & 1u);
  return static_cast<uint16_t>(sign | (r >> 13));
}

// float64 → float32 rounded to odd: rounding that once more to BF16 or F16 (≤ 22 significant bits)
// equals rounding the float64 directly.
MS_HD float f64ToF32Odd(double d) {
  if (d != d) return static_cast<float>(d);
  const float t = static_cast<float>(d);  // nearest
  const double back = static_cast<double>(t);
  if (back == d) return t;
  uint32_t u = bitsOfF32(t);
  if ((back > d) == (d > 0)) --u;  // rounded away from zero: step back to the truncated value
  return f32OfBits(u | 1u);
}

MS_HD uint16_t f64ToBf16(double d) { return f32ToBf16(f64ToF32Odd(d)); }
MS_HD uint16_t f64ToF16(double d) { return f32ToF16(f64ToF32Odd(d)); }

// Element k of a buffer of dtype dt. Device buffers are laid out by the session at element-aligned
// offsets; host callers (the emulation) pass arrays of any alignment, hence memcpy there.
template <class T>
MS_HD T loadAt(const void* p, uint64_t k) {
#if defined(__CUDA_ARCH__)
  return static_cast<const T*>(p)[k];
#else
  T v;
  std::memcpy(&v, static_cast<const uint8_t*>(p) + k * sizeof(T), sizeof(T));
  return v;
#endif
}

template <class T>
MS_HD void storeAt(void* p, uint64_t k, T v) {
#if defined(__CUDA_ARCH__)
  static_cast<T*>(p)[k] = v;
#else
  std::memcpy(static_cast<uint8_t*>(p) + k * sizeof(T), &v, sizeof(T));
#endif
}

// Widened to float32 (dt ≠ F64: exact).
MS_HD float loadF32(const void* p, DType dt, uint64_t k) {
  switch (dt) {
    case DType::BF16: return bf16ToF32(loadAt<uint16_t>(p, k));
    case DType::F16: return f16ToF32(loadAt<uint16_t>(p, k));
    case DType::F32: return loadAt<float>(p, k);
    case DType::F64: break;
  }
  return static_cast<float>(loadAt<double>(p, k));  // not used: float64 windows take the float64 path
}

// Widened to float64 (always exact).
MS_HD double loadF64(const void* p, DType dt, uint64_t k) {
  switch (dt) {
    case DType::BF16: return bf16ToF32(loadAt<uint16_t>(p, k));
    case DType::F16: return f16ToF32(loadAt<uint16_t>(p, k));
    case DType::F32: return loadAt<float>(p, k);
    case DType::F64: break;
  }
  return loadAt<double>(p, k);
}

// v rounded once to dt (dt ≠ F64).
MS_HD void storeFromF32(void* p, DType dt, uint64_t k, float v) {
  switch (dt) {
    case DType::BF16: storeAt<uint16_t>(p, k, f32ToBf16(v)); return;
    case DType::F16: storeAt<uint16_t>(p, k, f32ToF16(v)); return;
    case DType::F32: storeAt<float>(p, k, v); return;
    case DType::F64: storeAt<double>(p, k, v); return;
  }
}

// v rounded once to dt.
MS_HD void storeFromF64(void* p, DType dt, uint64_t k, double v) {
  switch (dt) {
    case DType::BF16: storeAt<uint16_t>(p, k, f64ToBf16(v)); return;
    case DType::F16: storeAt<uint16_t>(p, k, f64ToF16(v)); return;
    case DType::F32: storeAt<float>(p, k, static_cast<float>(v)); return;
    case DType::F64: storeAt<double>(p, k, v); return;
  }
}

MS_HD uint32_t sizeOfDType(DType dt) { return dt == DType::F64 ? 8u : dt == DType::F32 ? 4u : 2u; }

}  // namespace cuda
}  // namespace ms
