// Four doubles → four floats rounded to odd (convert.h f64ToF32Odd, vectorized): the nearest float,
// stepped back towards zero where it rounded away, its last bit set where inexact. AVX2 code, shared by
// the AVX2 and AVX-512 kernels: include it inside their target region and anonymous namespace (each
// translation unit gets its own copy, compiled for its own ISA).
#pragma once

inline __m128 narrowOdd4(__m256d x) {
  const __m128 nearest = _mm256_cvtpd_ps(x);
  const __m256d back = _mm256_cvtps_pd(nearest);
  const __m256d magnitude = _mm256_set1_pd(-0.0);
  const __m256d inexact = _mm256_cmp_pd(back, x, _CMP_NEQ_UQ);  // NaN too: its payload keeps it NaN
  const __m256d away = _mm256_and_pd(
      inexact, _mm256_cmp_pd(_mm256_andnot_pd(magnitude, back), _mm256_andnot_pd(magnitude, x), _CMP_GT_OQ));
  // 64-bit lane masks → 32-bit lanes (the low half of each).
  const __m256i lowHalves = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  const __m128i inexact32 =
      _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(_mm256_castpd_si256(inexact), lowHalves));
  const __m128i away32 = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(_mm256_castpd_si256(away), lowHalves));
  __m128i bits = _mm_add_epi32(_mm_castps_si128(nearest), away32);  // away32 is −1 where it rounded away
  bits = _mm_or_si128(bits, _mm_srli_epi32(inexact32, 31));
  return _mm_castsi128_ps(bits);
}
