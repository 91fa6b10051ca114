// The arithmetic of the two passes on the device, per element and per chunk, shared by the kernels
// (kernels.cu) and by their CPU emulation (emulate.cc), plus the host-side plan both follow: how a
// window is cut into chunks, which launches compute which Gram pairs, how the chunk partials are added
// into the Gram accumulators, and the per-unit coefficients. The emulation therefore produces the
// same bits the GPU should, and the device check compares them.
#pragma once
#include <cstdint>
#include <vector>

#include "codec.h"

namespace ms {
namespace cuda {

// Inputs a kernel reads: [0] = base w0, [1..n] = the fine-tunes. Passed by value as a kernel
// parameter (well under the 4 KiB limit), so N is bounded; the backend says so for larger N.
constexpr int kMaxModels = 64;
struct InputTable {
  const void* p[kMaxModels + 1];
  DType dt[kMaxModels + 1];
};

// ------------------------------------------------------------------------------------------------
// Interpolation: out = a·w0 + b·Σw_i, a = 1 − t, b = t/N, summed in the CPU kernels' order. Narrow
// inputs and output: float32, unfused, so the output bytes equal the native backend's. Any F64
// input or output: float64, half outputs rounded via float32 rounded to odd (exact RNE).

MS_HD void interpolateElement(const InputTable& in, int n, uint64_t k, double a, double b, bool wide, void* out,
                              DType outDt) {
  if (wide) {
    double s = loadF64(in.p[1], in.dt[1], k);
    for (int m = 2; m <= n; ++m) s = addF64(s, loadF64(in.p[m], in.dt[m], k));
    storeFromF64(out, outDt, k, addF64(mulF64(a, loadF64(in.p[0], in.dt[0], k)), mulF64(b, s)));
  } else {
    float s = loadF32(in.p[1], in.dt[1], k);
    for (int m = 2; m <= n; ++m) s = addF32(s, loadF32(in.p[m], in.dt[m], k));
    const float af = static_cast<float>(a), bf = static_cast<float>(b);
    storeFromF32(out, outDt, k, addF32(mulF32(af, loadF32(in.p[0], in.dt[0], k)), mulF32(bf, s)));
  }
}

// ------------------------------------------------------------------------------------------------
// Gram: one warp per chunk. A chunk is at most kChunkElements consecutive elements of one unit; its
// lanes take every 32nd element, accumulate Σ d_i·d_j in float64 with FMAs, and a shuffle tree adds
// the 32 lanes. The host adds the chunks of a unit in element order. float64 throughout: a float32
// tree over a whole tensor misses the 1e-9 cosine bound.

constexpr uint32_t kWarp = 32;
// Small enough that a TinyLlama MLP matrix (11.5M elements) gives ~5600 warps, enough to keep an
// H100's memory system busy; large enough that the partials are ~0.1% of the input bytes.
constexpr uint32_t kChunkElements = 2048;

struct ChunkGeometry {
  uint64_t firstElement;  // of the window, in the tensor
  uint64_t count;
  uint64_t unitLength;
  uint64_t chunksPerUnit;
  uint64_t firstChunk;  // global chunk index of the window's first element
};

inline ChunkGeometry chunkGeometry(uint64_t firstElement, uint64_t count, uint64_t unitLength) {
  ChunkGeometry g{firstElement, count, unitLength, (unitLength + kChunkElements - 1) / kChunkElements, 0};
  g.firstChunk = firstElement / unitLength * g.chunksPerUnit + firstElement % unitLength / kChunkElements;
  return g;
}

inline uint64_t chunkCount(const ChunkGeometry& g) {
  if (g.count == 0) return 0;
  const uint64_t last = g.firstElement + g.count - 1;
  return last / g.unitLength * g.chunksPerUnit + last % g.unitLength / kChunkElements - g.firstChunk + 1;
}

// Window-relative [begin, end) and the global unit of chunk c (0-based within the window).
MS_HD void chunkRange(const ChunkGeometry& g, uint64_t c, uint64_t* begin, uint64_t* end, uint64_t* unit) {
  const uint64_t gc = g.firstChunk + c;
  const uint64_t u = gc / g.chunksPerUnit;
  const uint64_t j = gc - u * g.chunksPerUnit;
  uint64_t s = u * g.unitLength + j * kChunkElements;
  uint64_t e = s + kChunkElements;
  const uint64_t unitEnd = (u + 1) * g.unitLength;
  if (e > unitEnd) e = unitEnd;
  if (s < g.firstElement) s = g.firstElement;
  if (e > g.firstElement + g.count) e = g.firstElement + g.count;
  *begin = s - g.firstElement;
  *end = e - g.firstElement;
  *unit = u;
}

// The dot products one launch computes: all pairs i ≤ j of `rows` (triangle) or all pairs of
// rows × cols (rectangle). An operand of −1 stands for the base itself (task vector 0): groups of
// fewer than four models are padded with it, and those pairs are dropped on the host.
enum class GramShape : int { Tri2, Tri3, Tri4, Rect4x4 };

struct GramOperands {
  const void* base;
  DType baseDt;
  const void* rows[4];
  DType rowDt[4];
  const void* cols[4];
  DType colDt[4];
};

template <int R, int C, bool Tri>
struct GramShapeOf {
  static constexpr int kRows = R, kCols = C;
  static constexpr bool kTri = Tri;
  static constexpr int kQ = Tri ? R * (R + 1) / 2 : R * C;
};

// Adds element k's products into acc[kQ].
template <class S>
MS_HD void gramStep(const GramOperands& op, uint64_t k, double* acc) {
  const double w0 = loadF64(op.base, op.baseDt, k);
  double dr[S::kRows];
  for (int i = 0; i < S::kRows; ++i) dr[i] = subF64(loadF64(op.rows[i], op.rowDt[i], k), w0);
  if constexpr (S::kTri) {
    int q = 0;
    for (int i = 0; i < S::kRows; ++i)
      for (int j = i; j < S::kRows; ++j, ++q) acc[q] = fmaF64(dr[i], dr[j], acc[q]);
  } else {
    double dc[S::kCols];
    for (int j = 0; j < S::kCols; ++j) dc[j] = subF64(loadF64(op.cols[j], op.colDt[j], k), w0);
    for (int i = 0; i < S::kRows; ++i)
      for (int j = 0; j < S::kCols; ++j) acc[i * S::kCols + j] = fmaF64(dr[i], dc[j], acc[i * S::kCols + j]);
  }
}

struct GramLaunch {
  GramShape shape;
  int q;             // products per chunk
  int rows[4];       // model index 0..n−1, or −1 (the base)
  int cols[4];
  int gramIndex[16];  // packed upper-triangle index of product q, or −1 for a padded pair
};

inline int packedIndex(int i, int j, int n) {
  if (i > j) {
    const int s = i;
    i = j;
    j = s;
  }
  return i * n - i * (i - 1) / 2 + (j - i);
}

// N ≤ 4: one triangle launch. Larger N: models in groups of four, a triangle per group and a
// rectangle per pair of groups, so each launch keeps its accumulators in registers.
inline std::vector<GramLaunch> planGram(int n) {
  std::vector<GramLaunch> plan;
  auto triangle = [&](GramShape shape, int size, const int* models) {
    GramLaunch l{shape, size * (size + 1) / 2, {-1, -1, -1, -1}, {-1, -1, -1, -1}, {}};
    int q = 0;
    for (int i = 0; i < size; ++i) l.rows[i] = models[i];
    for (int i = 0; i < size; ++i)
      for (int j = i; j < size; ++j, ++q)
        l.gramIndex[q] = models[i] < 0 || models[j] < 0 ? -1 : packedIndex(models[i], models[j], n);
    plan.push_back(l);
  };
  if (n <= 4) {
    const int models[4] = {0, 1, 2, 3};
    triangle(n == 2 ? GramShape::Tri2 : n == 3 ? GramShape::Tri3 : GramShape::Tri4, n, models);
    return plan;
  }
  const int groups = (n + 3) / 4;
  auto group = [&](int g, int* models) {
    for (int i = 0; i < 4; ++i) models[i] = 4 * g + i < n ? 4 * g + i : -1;
  };
  for (int g = 0; g < groups; ++g) {
    int a[4];
    group(g, a);
    triangle(GramShape::Tri4, 4, a);
    for (int h = g + 1; h < groups; ++h) {
      int b[4];
      group(h, b);
      GramLaunch l{GramShape::Rect4x4, 16, {}, {}, {}};
      for (int i = 0; i < 4; ++i) {
        l.rows[i] = a[i];
        l.cols[i] = b[i];
      }
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j)
          l.gramIndex[i * 4 + j] = a[i] < 0 || b[j] < 0 ? -1 : packedIndex(a[i], b[j], n);
      plan.push_back(l);
    }
  }
  return plan;
}

// The operands of one launch over input pointers (base first) and their dtypes.
inline GramOperands gramOperands(const GramLaunch& l, const void* const* p, const DType* dt) {
  GramOperands op{};
  op.base = p[0];
  op.baseDt = dt[0];
  for (int i = 0; i < 4; ++i) {
    op.rows[i] = l.rows[i] < 0 ? p[0] : p[l.rows[i] + 1];
    op.rowDt[i] = l.rows[i] < 0 ? dt[0] : dt[l.rows[i] + 1];
    op.cols[i] = l.cols[i] < 0 ? p[0] : p[l.cols[i] + 1];
    op.colDt[i] = l.cols[i] < 0 ? dt[0] : dt[l.cols[i] + 1];
  }
  return op;
}

// gram[u·P + …] += the launch's chunk partials (chunks × l.q doubles), chunk by chunk in element
// order: the same order wherever the partials were computed.
inline void addPartials(const GramLaunch& l, const ChunkGeometry& g, const double* partials, int n, double* gram) {
  const uint64_t chunks = chunkCount(g);
  const uint64_t P = static_cast<uint64_t>(n) * (n + 1) / 2;
  for (uint64_t c = 0; c < chunks; ++c) {
    uint64_t begin, end, unit;
    chunkRange(g, c, &begin, &end, &unit);
    for (int q = 0; q < l.q; ++q)
      if (l.gramIndex[q] >= 0) gram[unit * P + static_cast<uint64_t>(l.gramIndex[q])] += partials[c * l.q + q];
  }
}

// (a, b) per unit of the window, computed on the host as the CPU kernels do (double a = 1 − t,
// b = t / N), so both backends start the interpolation from the same coefficients.
inline void unitCoefficients(const double* t, uint64_t firstUnit, uint64_t units, int n, double* ab) {
  for (uint64_t u = 0; u < units; ++u) {
    const double tu = t[firstUnit + u];
    ab[2 * u] = 1.0 - tu;
    ab[2 * u + 1] = tu / n;
  }
}

// Whether the interpolation runs in float64 (any F64 input or output), as on the CPU.
inline bool wideInterpolation(const DType* dt, int n, DType outDt) {
  bool wide = outDt == DType::F64;
  for (int m = 0; m <= n; ++m) wide = wide || dt[m] == DType::F64;
  return wide;
}

}  // namespace cuda
}  // namespace ms
