// AVX2 + FMA + F16C kernels (Haswell and later). Leftovers go through a small zeroed stack buffer:
// AVX2 has no masked 16-bit loads, and a tail runs once per unit segment at most.
#include <algorithm>
#include <cstring>
#include <vector>

#include "convert.h"
#include "kernels.h"
#include "lowrank.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "target_region.h"

MS_TARGET_BEGIN("avx2,fma,f16c")
namespace ms {
namespace {

#include "narrow_x86.h"

struct V {
  static constexpr size_t W = 8, W64 = 4;
  using F32 = __m256;
  using F64 = __m256d;

  static F32 widenBf16(__m128i h) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); }
  static __m128i narrowBf16(F32 v) {
    const __m256i u = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_or_si256(u, _mm256_set1_epi32(0x00400000)), nan);
    r = _mm256_srli_epi32(r, 16);
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
  }
  static __m128i narrowF16(F32 v) { return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT); }
  static __m128i load128(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
  static void store128(uint8_t* p, __m128i v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v); }
  // leftovers: fewer than a vector's bytes through a zeroed buffer
  template <size_t Bytes>
  static const uint8_t* part(uint8_t (&buf)[Bytes], const uint8_t* p, size_t nBytes) {
    std::memset(buf, 0, Bytes);
    std::memcpy(buf, p, nBytes);
    return buf;
  }

  static F32 loadF32(const uint8_t* p) { return _mm256_loadu_ps(reinterpret_cast<const float*>(p)); }
  static F32 loadF16(const uint8_t* p) { return _mm256_cvtph_ps(load128(p)); }
  static F32 loadBf16(const uint8_t* p) { return widenBf16(load128(p)); }
  static F32 loadF32Part(const uint8_t* p, size_t n) { uint8_t b[32]; return loadF32(part(b, p, 4 * n)); }
  static F32 loadF16Part(const uint8_t* p, size_t n) { uint8_t b[16]; return loadF16(part(b, p, 2 * n)); }
  static F32 loadBf16Part(const uint8_t* p, size_t n) { uint8_t b[16]; return loadBf16(part(b, p, 2 * n)); }
  static void storeF32(uint8_t* p, F32 v) { _mm256_storeu_ps(reinterpret_cast<float*>(p), v); }
  static void storeF16(uint8_t* p, F32 v) { store128(p, narrowF16(v)); }
  static void storeBf16(uint8_t* p, F32 v) { store128(p, narrowBf16(v)); }
  static void storeF32Part(uint8_t* p, F32 v, size_t n) { uint8_t b[32]; storeF32(b, v); std::memcpy(p, b, 4 * n); }
  static void storeF16Part(uint8_t* p, F32 v, size_t n) { uint8_t b[16]; storeF16(b, v); std::memcpy(p, b, 2 * n); }
  static void storeBf16Part(uint8_t* p, F32 v, size_t n) { uint8_t b[16]; storeBf16(b, v); std::memcpy(p, b, 2 * n); }
  static void storeF32AsF64(double* dst, F32 v) {
    _mm256_storeu_pd(dst, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    _mm256_storeu_pd(dst + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
  static F32 narrow(F64 lo, F64 hi) { return _mm256_set_m128(_mm256_cvtpd_ps(hi), _mm256_cvtpd_ps(lo)); }
  static F32 narrowOdd(F64 lo, F64 hi) { return _mm256_set_m128(narrowOdd4(hi), narrowOdd4(lo)); }
  static bool anyBf16Halfway(F32 v) {
    const __m256i low = _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0xFFFF));
    return _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(low, _mm256_set1_epi32(0x8000)))) != 0;
  }
  static void keep(F64& v) { __asm__("" : "+x"(v)); }
  static void storeF64(uint8_t* p, F64 v) { _mm256_storeu_pd(reinterpret_cast<double*>(p), v); }
  static F64 lo(F32 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
  static F64 hi(F32 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
  // A prefetch past the end of a buffer is harmless: prefetches never fault.
  static void prefetch(const uint8_t* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0); }
  static F32 ldf(const float* p) { return _mm256_loadu_ps(p); }
  static void stf(float* p, F32 v) { _mm256_storeu_ps(p, v); }
  static F32 set1f(float a) { return _mm256_set1_ps(a); }
  static F32 addf(F32 a, F32 b) { return _mm256_add_ps(a, b); }
  static F32 mulf(F32 a, F32 b) { return _mm256_mul_ps(a, b); }

  static F64 loadF64(const uint8_t* p) { return _mm256_loadu_pd(reinterpret_cast<const double*>(p)); }
  static F64 loadF64Part(const uint8_t* p, size_t n) { uint8_t b[32]; return loadF64(part(b, p, 8 * n)); }
  static F64 ld(const double* p) { return _mm256_loadu_pd(p); }
  static void st(double* p, F64 v) { _mm256_storeu_pd(p, v); }
  static F64 zero() { return _mm256_setzero_pd(); }
  static F64 set1(double a) { return _mm256_set1_pd(a); }
  static F64 add(F64 a, F64 b) { return _mm256_add_pd(a, b); }
  static F64 sub(F64 a, F64 b) { return _mm256_sub_pd(a, b); }
  static F64 mul(F64 a, F64 b) { return _mm256_mul_pd(a, b); }
  static F64 fma(F64 a, F64 b, F64 c) { return _mm256_fmadd_pd(a, b, c); }
  static double hsum(F64 v) {
    const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }
};

#include "kernels_impl.h"
#include "lowrank_impl.h"

}  // namespace

const KernelTable* avx2Kernels() {
  static const KernelTable table{"avx2", &gramBlock<V>, &interpolateBlock<V>,
                                 &lowRankDots<V>, &lowRankRows<V>, &lowRankOutput<V>};
  return &table;
}

}  // namespace ms
MS_TARGET_END

#else
namespace ms {
const KernelTable* avx2Kernels() { return nullptr; }
}  // namespace ms
#endif
