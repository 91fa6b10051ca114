// The ISA-independent driver of the low-rank steps (lowrank.h): packing (and orthonormalizing) the factors, the Gram from
// them, the fused output over row windows — each split into tasks over the pool, the job's abort flag
// checked between tasks. Results never depend on the thread count: every output element and every
// filter-wise unit is computed by one task in a fixed order, and partial sums are added in task order.
#include "lowrank.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "convert.h"
#include "pool.h"

namespace ms {
namespace {

// Panels per task of the Gram's dot products (1024 columns or rows).
constexpr uint64_t kDotPanels = 64;
// Output elements per task: a few milliseconds at most, so a cancelled merge stops promptly.
constexpr uint64_t kOutputTaskElements = 64 * 1024;
// 4·2^-52: see orthonormalizeRows.
constexpr double kDependent = 4 * 2.220446049250313e-16;

double elementOf(const uint8_t* p, DType d) {
  switch (d) {
    case DType::F64: return loadF64(p);
    case DType::F32: return loadF32(p);
    case DType::F16: return f16ToF32(loadU16(p));
    case DType::BF16: return bf16ToF32(loadU16(p));
  }
  return 0;
}

// n consecutive elements, decoded exactly (the switch outside the loop).
void decodeRun(const uint8_t* src, DType d, size_t n, double* dst) {
  switch (d) {
    case DType::F64:
      for (size_t k = 0; k < n; ++k) dst[k] = loadF64(src + 8 * k);
      break;
    case DType::F32:
      for (size_t k = 0; k < n; ++k) dst[k] = loadF32(src + 4 * k);
      break;
    case DType::F16:
      for (size_t k = 0; k < n; ++k) dst[k] = f16ToF32(loadU16(src + 2 * k));
      break;
    case DType::BF16:
      for (size_t k = 0; k < n; ++k) dst[k] = bf16ToF32(loadU16(src + 2 * k));
      break;
  }
}

// Element (i, j) of a row-major matrix of `width` columns, decoded exactly.
double at(const uint8_t* m, DType d, uint64_t i, uint64_t j, uint64_t width) {
  return elementOf(m + (i * width + j) * dtypeSize(d), d);
}

// Σ x_c·y_c in four interleaved partial sums, added as (s0 + s1) + (s2 + s3): four independent chains
// instead of one latency-bound one (3–4× faster; GCC may also run them as one vector), in an order
// lib/math/lowRank.ts dot() repeats exactly.
double dot(const double* x, const double* y, uint64_t n) {
  double s[4] = {0, 0, 0, 0};
  uint64_t c = 0;
  for (; c + 4 <= n; c += 4)
    for (int j = 0; j < 4; ++j) s[j] += x[c + j] * y[c + j];
  for (int j = 0; c < n; ++c, ++j) s[j] += x[c] * y[c];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// V (rank × cols, row-major) becomes Q with V = L·Q: L lower-triangular (rank × rank, zeroed by the
// caller), Q's rows orthonormal — modified Gram–Schmidt, twice ("twice is enough"); a row left with
// less than kDependent·rank·‖v_a‖ is numerically dependent on earlier ones, and its row of Q is zero.
// lib/math/lowRank.ts orthonormalizeRows runs the same operations in the same order (the js backend
// and the scalar kernels write the same bytes).
void orthonormalizeRows(double* v, int rank, uint64_t cols, double* l) {
  for (int a = 0; a < rank; ++a) {
    double* q = v + a * cols;
    const double norm = std::sqrt(dot(q, q, cols));
    for (int pass = 0; pass < 2; ++pass) {
      for (int b = 0; b < a; ++b) {
        const double* qb = v + b * cols;
        const double h = dot(qb, q, cols);
        for (uint64_t c = 0; c < cols; ++c) q[c] = q[c] - h * qb[c];
        l[a * rank + b] += h;
      }
    }
    const double rest = std::sqrt(dot(q, q, cols));
    if (rest <= kDependent * rank * norm) {
      std::fill(q, q + cols, 0.0);
      l[a * rank + a] = 0;
    } else {
      l[a * rank + a] = rest;
      for (uint64_t c = 0; c < cols; ++c) q[c] = q[c] / rest;
    }
  }
}

// The upper triangle (a ≤ b) of X·Xᵀ over `panels` panels, mirrored into a full S × S matrix.
std::vector<double> dots(const KernelTable* kernels, const double* x, int S, uint64_t panels, unsigned threads,
                         const int32_t* abort) {
  const size_t SS = static_cast<size_t>(S) * S;
  const uint64_t tasks = (panels + kDotPanels - 1) / kDotPanels;
  std::vector<double> partials(tasks * SS, 0.0);
  parallelFor(tasks, threads, [&](size_t b) {
    if (aborted(abort)) return;
    LowRankDotsTask t{x, S, b * kDotPanels, std::min(panels, (b + 1) * kDotPanels), partials.data() + b * SS};
    kernels->lowRankDots(t);
  });
  if (aborted(abort)) throw Cancelled();
  std::vector<double> m(SS, 0.0);
  for (uint64_t b = 0; b < tasks; ++b)
    for (int a = 0; a < S; ++a)
      for (int c = a; c < S; ++c) m[a * S + c] += partials[b * SS + a * S + c];
  for (int a = 0; a < S; ++a)
    for (int c = 0; c < a; ++c) m[a * S + c] = m[c * S + a];
  return m;
}

void checkKernels(const KernelTable* kernels) {
  if (kernels == nullptr) throw std::runtime_error("no kernels chosen");
}

}  // namespace

void setRanks(PackedFactors& f, const std::vector<int>& ranks) {
  f.n = static_cast<int>(ranks.size());
  f.offsets.assign(1, 0);
  f.factorOf.clear();
  for (int i = 0; i < f.n; ++i) {
    f.offsets.push_back(f.offsets.back() + ranks[i]);
    f.factorOf.insert(f.factorOf.end(), static_cast<size_t>(ranks[i]), i);
  }
}

void packFactors(const std::vector<LowRankFactorInput>& factors, uint64_t rows, PackedFactors& f, double* u,
                 double* v, unsigned threads, const int32_t* abort) {
  const int S = f.rank();
  const uint64_t cols = f.cols;
  // Per factor: V_i decoded row-major (plain: lora_A [r, C]; transposed: lora_Bᵀ, B [C, r]), then
  // orthonormalized in place: V_i = L_i·Q_i.
  std::vector<std::vector<double>> q(f.n), l(f.n);
  parallelFor(static_cast<size_t>(f.n), threads, [&](size_t i) {
    const LowRankFactorInput& in = factors[i];
    const int r = in.rank;
    if (r == 0 || aborted(abort)) return;
    q[i].resize(static_cast<size_t>(r) * cols);
    l[i].assign(static_cast<size_t>(r) * r, 0.0);
    if (in.transposed) {
      std::vector<double> row(static_cast<size_t>(r));
      for (uint64_t c = 0; c < cols; ++c) {
        decodeRun(in.b + c * r * dtypeSize(in.bDtype), in.bDtype, static_cast<size_t>(r), row.data());
        for (int a = 0; a < r; ++a) q[i][a * cols + c] = row[a];
      }
    } else {
      decodeRun(in.a, in.aDtype, static_cast<size_t>(r) * cols, q[i].data());
    }
    orthonormalizeRows(q[i].data(), r, cols, l[i].data());
  });
  if (aborted(abort)) throw Cancelled();
  const uint64_t uPanels = panelsOf(f.uRows), vPanels = panelsOf(cols);
  parallelFor(uPanels + vPanels, threads, [&](size_t task) {
    if (aborted(abort)) return;
    const bool isU = task < uPanels;
    const uint64_t p = isU ? task : task - uPanels;
    for (int i = 0; i < f.n; ++i) {
      const LowRankFactorInput& in = factors[i];
      const int r = in.rank;
      if (r == 0) continue;
      const int column = f.offsets[i];
      const uint64_t first = p * kPanel;
      if (!isU) {
        const uint64_t n = std::min(kPanel, cols - first);
        for (int a = 0; a < r; ++a)
          std::copy_n(q[i].data() + a * cols + first, n, v + (p * S + column + a) * kPanel);
        continue;
      }
      // Y_i = U_i·L_i, row by row: U = lora_B (plain, [R, r]) or lora_Aᵀ (transposed, A is [r, R]).
      const uint64_t n = std::min(kPanel, f.uRows - first);
      std::vector<double> row(static_cast<size_t>(r)), y(static_cast<size_t>(r));
      for (uint64_t j = 0; j < n; ++j) {
        const uint64_t k = f.uFirstRow + first + j;
        if (in.transposed) {
          for (int a = 0; a < r; ++a) row[a] = at(in.a, in.aDtype, a, k, rows);
        } else {
          decodeRun(in.b + k * r * dtypeSize(in.bDtype), in.bDtype, static_cast<size_t>(r), row.data());
        }
        // y_b = Σ_{a ≥ b} row_a·L_ab, each sum in ascending a; the b's advance together.
        std::fill(y.begin(), y.end(), 0.0);
        for (int a = 0; a < r; ++a)
          for (int b = 0; b <= a; ++b) y[b] += row[a] * l[i][a * r + b];
        for (int b = 0; b < r; ++b) u[(p * S + column + b) * kPanel + j] = y[b];
      }
    }
  });
  if (aborted(abort)) throw Cancelled();
}

void runLowRankGram(const LowRankGramJob& job) {
  checkKernels(job.kernels);
  const PackedFactors& f = *job.f;
  const int S = f.rank(), n = f.n, P = gramSize(n);
  const uint64_t units = job.filterWise ? f.uRows : 1;
  std::fill(job.gram, job.gram + units * P, 0.0);
  if (S == 0 || f.uRows == 0) return;
  const std::vector<double> mv = dots(job.kernels, f.v, S, panelsOf(f.cols), job.threads, job.abort);
  if (!job.filterWise) {
    const std::vector<double> mu = dots(job.kernels, f.u, S, panelsOf(f.uRows), job.threads, job.abort);
    for (int i = 0; i < n; ++i)
      for (int j = i; j < n; ++j) {
        double sum = 0;
        for (int a = f.offsets[i]; a < f.offsets[i + 1]; ++a)
          for (int b = f.offsets[j]; b < f.offsets[j + 1]; ++b) sum += mu[a * S + b] * mv[a * S + b];
        job.gram[i * n - i * (i - 1) / 2 + (j - i)] = job.scales[i] * job.scales[j] * sum;
      }
    return;
  }
  parallelFor(panelsOf(f.uRows), job.threads, [&](size_t p) {
    if (aborted(job.abort)) return;
    LowRankRowsTask t{&f, mv.data(), job.scales, p, job.gram};
    job.kernels->lowRankRows(t);
  });
  if (aborted(job.abort)) throw Cancelled();
}

void runLowRankOutput(const LowRankOutputJob& job) {
  checkKernels(job.kernels);
  if (job.rows == 0 || job.f->cols == 0) return;
  const uint64_t rowsFit = std::max<uint64_t>(1, kOutputTaskElements / job.f->cols);
  const uint64_t perTask = (rowsFit + kOutputRowMultiple - 1) / kOutputRowMultiple * kOutputRowMultiple;
  const uint64_t tasks = (job.rows + perTask - 1) / perTask;
  parallelFor(tasks, job.threads, [&](size_t b) {
    if (aborted(job.abort)) return;
    LowRankOutputTask t{&job, b * perTask, std::min(job.rows, (b + 1) * perTask)};
    job.kernels->lowRankOutput(t);
  });
  if (aborted(job.abort)) throw Cancelled();
  if (job.nonFinite->load(std::memory_order_relaxed) != 0)
    throw NonFinite("a NaN or Inf in the base's rows of this window");
}

}  // namespace ms
