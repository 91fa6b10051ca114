// Scalar conversions between the half formats and float32/float64: the reference path every SIMD
// variant must agree with bit for bit, and the leftovers of those variants. Rounding is always
// round-to-nearest-even; a NaN stays a quiet NaN (truncating a NaN's payload could leave an Inf).
// Included before any `#pragma GCC target` region so these inline functions are compiled for the
// baseline ISA in every translation unit (one definition, safe to run anywhere).
#pragma once
#include <cstdint>
#include <cstring>

namespace ms {

inline uint32_t bitsOf(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float floatOf(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint64_t bitsOf(double d) { uint64_t u; std::memcpy(&u, &d, 8); return u; }
inline double doubleOf(uint64_t u) { double d; std::memcpy(&d, &u, 8); return d; }

inline float bf16ToF32(uint16_t h) { return floatOf(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32ToBf16(float f) {
  uint32_t u = bitsOf(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float f16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) return floatOf(sign | 0x7F800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return floatOf(sign);
    // subnormal: value = mant · 2^-24, exact in float32
    float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return floatOf(sign | ((exp + 112u) << 23) | (mant << 13));
}

// Matches VCVTPS2PH with round-to-nearest-even: overflow → Inf, subnormals rounded, NaN quieted
// with the payload's top bits kept.
inline uint16_t f32ToF16(float f) {
  const uint32_t u = bitsOf(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));
  if (abs >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // ≥ 65520 rounds to Inf
  if (abs < 0x38800000u) {                                             // below 2^-14: subnormal or 0
    if (abs < 0x33000000u) return sign;                                 // ≤ 2^-25 rounds to 0 (tie → even 0)
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126u - exp;  // value = mant·2^(exp−150); result units 2^-24 → shift by 126−exp
    uint32_t r = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t r = abs - 0x38000000u;  // rebias exponent 127 → 15
  r += 0xFFFu + ((r >> 13) & 1u);
  return static_cast<uint16_t>(sign | (r >> 13));
}

// float64 → float32 rounded to odd: rounding that result once more to a format with at most 22
// significant bits (BF16, F16) equals rounding the float64 directly (no double-rounding error).
inline float f64ToF32Odd(double d) {
  if (d != d) return static_cast<float>(d);
  float t = static_cast<float>(d);  // nearest
  const double back = static_cast<double>(t);
  if (back == d) return t;
  uint32_t u = bitsOf(t);
  if ((back > d) == (d > 0)) --u;  // rounded away from zero: step back to the truncated value
  return floatOf(u | 1u);
}

inline uint16_t f64ToBf16(double d) { return f32ToBf16(f64ToF32Odd(d)); }
inline uint16_t f64ToF16(double d) { return f32ToF16(f64ToF32Odd(d)); }

inline uint16_t loadU16(const uint8_t* p) { uint16_t v; std::memcpy(&v, p, 2); return v; }
inline float loadF32(const uint8_t* p) { float v; std::memcpy(&v, p, 4); return v; }
inline double loadF64(const uint8_t* p) { double v; std::memcpy(&v, p, 8); return v; }
inline void storeU16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
inline void storeF32(uint8_t* p, float v) { std::memcpy(p, &v, 4); }
inline void storeF64(uint8_t* p, double v) { std::memcpy(p, &v, 8); }

}  // namespace ms
