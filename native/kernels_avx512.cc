// AVX-512 kernels (F + BW + VL + DQ; Skylake-SP and later). Leftovers use masked loads and stores;
// the main loops do not (a masked store in the main loop measured 9.3 → 5.3 GB/s on a lerp).
#include <algorithm>
#include <cstring>
#include <vector>

#include "convert.h"
#include "kernels.h"
#include "lowrank.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "target_region.h"

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags the intrinsics' own `_mm512_undefined_*` placeholders.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
MS_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
namespace ms {
namespace {

#include "narrow_x86.h"

struct V {
  static constexpr size_t W = 16, W64 = 8;
  using F32 = __m512;
  using F64 = __m512d;

  static __mmask16 mask16(size_t n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static __mmask8 mask8(size_t n) { return static_cast<__mmask8>((1u << n) - 1u); }
  static F32 widenBf16(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
  static __m256i narrowBf16(F32 v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x00400000));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
  }
  static __m256i narrowF16(F32 v) { return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static __m256i load256(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void store256(uint8_t* p, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }

  static F32 loadF32(const uint8_t* p) { return _mm512_loadu_ps(p); }
  static F32 loadF16(const uint8_t* p) { return _mm512_cvtph_ps(load256(p)); }
  static F32 loadBf16(const uint8_t* p) { return widenBf16(load256(p)); }
  static F32 loadF32Part(const uint8_t* p, size_t n) { return _mm512_maskz_loadu_ps(mask16(n), p); }
  static F32 loadF16Part(const uint8_t* p, size_t n) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask16(n), p)); }
  static F32 loadBf16Part(const uint8_t* p, size_t n) { return widenBf16(_mm256_maskz_loadu_epi16(mask16(n), p)); }
  static void storeF32(uint8_t* p, F32 v) { _mm512_storeu_ps(p, v); }
  static void storeF16(uint8_t* p, F32 v) { store256(p, narrowF16(v)); }
  static void storeBf16(uint8_t* p, F32 v) { store256(p, narrowBf16(v)); }
  static void storeF32Part(uint8_t* p, F32 v, size_t n) { _mm512_mask_storeu_ps(p, mask16(n), v); }
  static void storeF16Part(uint8_t* p, F32 v, size_t n) { _mm256_mask_storeu_epi16(p, mask16(n), narrowF16(v)); }
  static void storeBf16Part(uint8_t* p, F32 v, size_t n) { _mm256_mask_storeu_epi16(p, mask16(n), narrowBf16(v)); }
  static void storeF32AsF64(double* dst, F32 v) {
    _mm512_storeu_pd(dst, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    _mm512_storeu_pd(dst + 8, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
  }
  static F32 join(__m256 lo, __m256 hi) {
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(lo)), _mm256_castps_pd(hi), 1));
  }
  static F32 narrow(F64 lo, F64 hi) { return join(_mm512_cvtpd_ps(lo), _mm512_cvtpd_ps(hi)); }
  // The AVX2 rounding to odd, a quarter at a time (one tested path for both ISAs).
  static __m256 narrowOdd8(F64 x) {
    return _mm256_set_m128(narrowOdd4(_mm512_extractf64x4_pd(x, 1)), narrowOdd4(_mm512_castpd512_pd256(x)));
  }
  static F32 narrowOdd(F64 lo, F64 hi) { return join(narrowOdd8(lo), narrowOdd8(hi)); }
  static bool anyBf16Halfway(F32 v) {
    const __m512i low = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0xFFFF));
    return _mm512_cmpeq_epi32_mask(low, _mm512_set1_epi32(0x8000)) != 0;
  }
  static void keep(F64& v) { __asm__("" : "+v"(v)); }
  static void storeF64(uint8_t* p, F64 v) { _mm512_storeu_pd(p, v); }
  static F64 lo(F32 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
  static F64 hi(F32 v) { return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))); }
  // A prefetch past the end of a buffer is harmless: prefetches never fault.
  static void prefetch(const uint8_t* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0); }
  static F32 ldf(const float* p) { return _mm512_loadu_ps(p); }
  static void stf(float* p, F32 v) { _mm512_storeu_ps(p, v); }
  static F32 set1f(float a) { return _mm512_set1_ps(a); }
  static F32 addf(F32 a, F32 b) { return _mm512_add_ps(a, b); }
  static F32 mulf(F32 a, F32 b) { return _mm512_mul_ps(a, b); }

  static F64 loadF64(const uint8_t* p) { return _mm512_loadu_pd(p); }
  static F64 loadF64Part(const uint8_t* p, size_t n) { return _mm512_maskz_loadu_pd(mask8(n), p); }
  static F64 ld(const double* p) { return _mm512_loadu_pd(p); }
  static void st(double* p, F64 v) { _mm512_storeu_pd(p, v); }
  static F64 zero() { return _mm512_setzero_pd(); }
  static F64 set1(double a) { return _mm512_set1_pd(a); }
  static F64 add(F64 a, F64 b) { return _mm512_add_pd(a, b); }
  static F64 sub(F64 a, F64 b) { return _mm512_sub_pd(a, b); }
  static F64 mul(F64 a, F64 b) { return _mm512_mul_pd(a, b); }
  static F64 fma(F64 a, F64 b, F64 c) { return _mm512_fmadd_pd(a, b, c); }
  static double hsum(F64 v) { return _mm512_reduce_add_pd(v); }
};

#include "kernels_impl.h"
#include "lowrank_impl.h"

}  // namespace

const KernelTable* avx512Kernels() {
  static const KernelTable table{"avx512", &gramBlock<V>, &interpolateBlock<V>,
                                 &lowRankDots<V>, &lowRankRows<V>, &lowRankOutput<V>};
  return &table;
}

}  // namespace ms
MS_TARGET_END

#else
namespace ms {
const KernelTable* avx512Kernels() { return nullptr; }
}  // namespace ms
#endif
