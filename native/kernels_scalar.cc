// Scalar kernels: the reference path every SIMD variant is tested against, and the one non-x86
// builds use. W = 1, so there are no leftovers.
#include <algorithm>
#include <cstring>
#include <vector>

#include "convert.h"
#include "kernels.h"
#include "lowrank.h"

namespace ms {
namespace {

struct V {
  static constexpr size_t W = 1, W64 = 1;
  using F32 = float;
  using F64 = double;
  static F32 loadF32(const uint8_t* p) { return ms::loadF32(p); }
  static F32 loadF16(const uint8_t* p) { return f16ToF32(loadU16(p)); }
  static F32 loadBf16(const uint8_t* p) { return bf16ToF32(loadU16(p)); }
  static F32 loadF32Part(const uint8_t* p, size_t) { return loadF32(p); }
  static F32 loadF16Part(const uint8_t* p, size_t) { return loadF16(p); }
  static F32 loadBf16Part(const uint8_t* p, size_t) { return loadBf16(p); }
  static void storeF32(uint8_t* p, F32 v) { ms::storeF32(p, v); }
  static void storeF16(uint8_t* p, F32 v) { storeU16(p, f32ToF16(v)); }
  static void storeBf16(uint8_t* p, F32 v) { storeU16(p, f32ToBf16(v)); }
  static void storeF32Part(uint8_t* p, F32 v, size_t) { storeF32(p, v); }
  static void storeF16Part(uint8_t* p, F32 v, size_t) { storeF16(p, v); }
  static void storeBf16Part(uint8_t* p, F32 v, size_t) { storeBf16(p, v); }
  static void storeF32AsF64(double* dst, F32 v) { *dst = v; }
  static F32 ldf(const float* p) { return *p; }
  static void stf(float* p, F32 v) { *p = v; }
  static F32 set1f(float a) { return a; }
  static F32 addf(F32 a, F32 b) { return a + b; }
  static F32 mulf(F32 a, F32 b) { return a * b; }

  static F64 loadF64(const uint8_t* p) { return ms::loadF64(p); }
  static F64 loadF64Part(const uint8_t* p, size_t) { return loadF64(p); }
  static F64 ld(const double* p) { return *p; }
  static void st(double* p, F64 v) { *p = v; }
  static F64 zero() { return 0.0; }
  static F64 set1(double a) { return a; }
  static F64 add(F64 a, F64 b) { return a + b; }
  static F64 sub(F64 a, F64 b) { return a - b; }
  static F64 mul(F64 a, F64 b) { return a * b; }
  // Unfused: a software fma would be ~100× slower on the baseline ISA.
  static F64 fma(F64 a, F64 b, F64 c) { return a * b + c; }
  static double hsum(F64 v) { return v; }
};

#include "kernels_impl.h"
#include "lowrank_impl.h"

}  // namespace

const KernelTable* scalarKernels() {
  static const KernelTable table{"scalar", &gramBlock<V>, &interpolateBlock<V>,
                                 &lowRankDots<V>, &lowRankRows<V>, &lowRankOutput<V>};
  return &table;
}

}  // namespace ms
