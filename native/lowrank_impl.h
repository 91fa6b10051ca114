// The low-rank kernels (lowrank.h), written once against kernels_impl.h's SIMD vocabulary `V`; each
// kernels_<isa>.cc includes this after kernels_impl.h, inside its target region.
//
// Extra vocabulary, SIMD only (the scalar ISA, W == 1, converts with convert.h):
//   F32 narrow(F64 lo, F64 hi)      2·W64 doubles → W floats, rounded to nearest even
//   F32 narrowOdd(F64 lo, F64 hi)   the same, rounded to odd: rounding that once more to BF16 or F16
//                                   (≤ 11 significant bits) is round-to-nearest-even from the double
//   void storeF64(uint8_t* p, F64)  W64 doubles to any byte address
//   void keep(F64& v)               an optimization barrier: v stays in a register (see outputTile)
//   bool anyBf16Halfway(F32 v)      whether a lane's low 16 bits are 0x8000 (halfway between two BF16)
//
// Everything accumulates in float64. Why not float32 for the output GEMM (twice the lanes): its error
// is ~2^-24·Σ_a|coef·U_ka·V_ac| per element, while the contract allows 2^-20·(|t·avg| + |(1−t)·w0|)
// — about 2^-20·|t·avg(d)| where w0 is small. Rank terms that cancel by more than ~16× (an adapter's
// columns need not be independent) break float32; float64 holds up to ~2^30× cancellation, which is
// as far as the float64 reference itself is defined (test/engine/lowRank.test.ts builds such cases,
// and checks that float32 accumulation would miss the contract on them). Even without cancellation
// float32 misses it wherever w0 and avg are both small against the row's task vector (weights that
// cross zero). Measured (AMD EPYC Zen 3, AVX2, 2 vCPUs, shared machine, load average 1.4–3.8): a
// 4096 × 4096 BF16 tensor with two rank-16 adapters (S = 32) took 61 ms on one thread (1.09 GB/s, base
// read + output written) with 2-row × 16-column tiles: ~0.7 vector FMAs per cycle, each rank step
// loading 4 vectors of V from L2 for 8 FMAs, and a third of the time outside the tile (decode, the
// round-to-odd encode). 4 × 8 tiles (2 loads per 8 FMAs) and the BF16 encode's fast path
// (encodeDoubles) take 13–25% less time, old and new alternated in one process (49–55 ms on one
// thread); bench:kernels under that load could not rank them more finely. AVX-512 (not measured here)
// keeps 4 × 16 tiles.

inline int pairIndex(int i, int j, int n) { return i * n - i * (i - 1) / 2 + (j - i); }

// Panels per block of lowRankDots: S × kLowRankDotPanels × kPanel doubles stay in L1/L2 while every
// pair reads them (pairs streaming through all panels each missed every cache: 3× slower at S = 32).
constexpr uint64_t kLowRankDotPanels = 8;

// partial(a, b) = Σ_l x(a, l)·x(b, l) over the task's panels, a ≤ b: per block of panels, kPanel/W64
// vector sums per pair, reduced in a fixed order and added to the pair's total — results do not depend
// on how panels are split among threads.
template <class V>
void lowRankDots(const LowRankDotsTask& t) {
  using F = typename V::F64;
  constexpr size_t NV = kPanel / V::W64;
  const int S = t.S;
  const size_t stride = static_cast<size_t>(S) * kPanel;
  for (uint64_t q0 = t.p0; q0 < t.p1; q0 += kLowRankDotPanels) {
    const uint64_t q1 = std::min(t.p1, q0 + kLowRankDotPanels);
    for (int a = 0; a < S; ++a) {
      for (int b = a; b < S; ++b) {
        F s[NV];
        for (size_t v = 0; v < NV; ++v) s[v] = V::zero();
        const double* xa = t.x + q0 * stride + static_cast<size_t>(a) * kPanel;
        const double* xb = t.x + q0 * stride + static_cast<size_t>(b) * kPanel;
        for (uint64_t p = q0; p < q1; ++p, xa += stride, xb += stride)
          for (size_t v = 0; v < NV; ++v) s[v] = V::fma(V::ld(xa + v * V::W64), V::ld(xb + v * V::W64), s[v]);
        for (size_t v = 1; v < NV; ++v) s[0] = V::add(s[0], s[v]);
        t.partial[static_cast<size_t>(a) * S + b] += V::hsum(s[0]);
      }
    }
  }
}

// Filter-wise Gram of kPanel consecutive rows of U, vectors across rows:
// G_k(i, j) = s_i s_j Σ_{a∈i} U_ka·z_a,  z_a = Σ_{b∈j} MV_ab·U_kb.
template <class V>
void lowRankRows(const LowRankRowsTask& t) {
  using F = typename V::F64;
  const PackedFactors& f = *t.f;
  const int S = f.rank(), n = f.n, P = gramSize(n);
  const double* u = f.u + t.panel * static_cast<size_t>(S) * kPanel;
  const uint64_t row0 = t.panel * kPanel;
  thread_local std::vector<double> acc;
  acc.resize(static_cast<size_t>(P) * V::W64);
  for (size_t q = 0; q < kPanel && row0 + q < f.uRows; q += V::W64) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int j = 0; j < n; ++j) {
      const int b0 = f.offsets[j], b1 = f.offsets[j + 1];
      if (b0 == b1) continue;
      for (int a = 0; a < b1; ++a) {
        F z = V::zero();
        const double* mv = t.mv + static_cast<size_t>(a) * S;
        for (int b = b0; b < b1; ++b) z = V::fma(V::set1(mv[b]), V::ld(u + b * kPanel + q), z);
        double* g = acc.data() + static_cast<size_t>(pairIndex(f.factorOf[a], j, n)) * V::W64;
        V::st(g, V::fma(V::ld(u + a * kPanel + q), z, V::ld(g)));
      }
    }
    for (size_t l = 0; l < V::W64 && row0 + q + l < f.uRows; ++l) {
      double* dst = t.gram + (row0 + q + l) * P;
      for (int i = 0; i < n; ++i)
        for (int j = i; j < n; ++j) {
          const int p = pairIndex(i, j, n);
          dst[p] = t.scales[i] * t.scales[j] * acc[static_cast<size_t>(p) * V::W64 + l];
        }
    }
  }
}

// The output micro-tile: MR rows × NV vectors of columns (NV·W64 divides kPanel), MR·NV accumulators
// plus NV vectors of V and one broadcast in registers. On AVX2 (16 registers) 4 × 8 columns: per rank
// step 2 loads of V (streamed from L2) feed 8 FMAs, where 2 × 16 columns loaded 4 for 8.
template <class V>
constexpr int outputTileRows() {
  return V::W64 >= 8 ? 4 : V::W64 >= 4 ? 4 : 1;
}
template <class V>
constexpr size_t outputTileVectors() {
  return V::W64 >= 8 ? 2 : V::W64 >= 4 ? 2 : kPanel;
}

// tile[r][0 … kPanel) = w0[r] + Σ_a up[a][r]·vp[a] for one panel of V: a rank-S update of MR rows,
// NV vectors of columns at a time. Every element's sum runs over a in ascending order from 0, whatever
// the tile's shape: every ISA and tile writes the same bytes.
// Not inlined: in the caller's register pressure GCC spilled the tile's vectors to the stack.
template <class V, int MR>
[[gnu::noinline]] void outputTile(const double* up, const double* vp, int S, const double* const* w0, double* tile) {
  using F = typename V::F64;
  constexpr size_t NV = outputTileVectors<V>(), CW = NV * V::W64;
  static_assert(kPanel % CW == 0, "the tile's columns divide a panel");
  for (size_t c0 = 0; c0 < kPanel; c0 += CW) {
    F acc[MR][NV];
    for (int r = 0; r < MR; ++r)
      for (size_t v = 0; v < NV; ++v) acc[r][v] = V::zero();
    const double* u = up;
    const double* vp0 = vp + c0;
    for (int a = 0; a < S; ++a, u += MR, vp0 += kPanel) {
      F x[NV];
      for (size_t v = 0; v < NV; ++v) {
        x[v] = V::ld(vp0 + v * V::W64);
        // Without it GCC folds the load into each of the MR FMAs using x[v]: MR·NV loads per rank step
        // instead of NV, and the loop becomes load-bound (measured 25–35% slower on AVX2).
        if constexpr (V::W > 1) V::keep(x[v]);
      }
      for (int r = 0; r < MR; ++r) {
        const F c = V::set1(u[r]);
        for (size_t v = 0; v < NV; ++v) acc[r][v] = V::fma(c, x[v], acc[r][v]);
      }
    }
    // The base is added once, to the finished low-rank sum: w0 + δ rounds once in float64.
    for (int r = 0; r < MR; ++r)
      for (size_t v = 0; v < NV; ++v) {
        const size_t c = c0 + v * V::W64;
        V::st(tile + r * kPanel + c, V::add(V::ld(w0[r] + c), acc[r][v]));
      }
  }
}

// n ≤ kPanel doubles → `o` at any byte address, rounded once (RNE) from the double.
template <class V>
void encodeDoubles(DType o, const double* x, size_t n, uint8_t* out) {
  if constexpr (V::W > 1) {
    using F64 = typename V::F64;
    using F32 = typename V::F32;
    if (n == kPanel) {
      switch (o) {
        case DType::F64:
          for (size_t l = 0; l < kPanel; l += V::W64) V::storeF64(out + 8 * l, V::ld(x + l));
          return;
        case DType::F32:
          for (size_t l = 0; l < kPanel; l += V::W) V::storeF32(out + 4 * l, V::narrow(V::ld(x + l), V::ld(x + l + V::W64)));
          return;
        case DType::BF16:
          // Rounded to the nearest float first, then to BF16 (storeBf16), the result differs from one
          // rounding only where that float was inexact and lies exactly halfway between two BF16
          // values (its low 16 bits 0x8000): one element in ~2^16. Only vectors holding such a float
          // take the slower round-to-odd narrowing, which is exact in every case.
          for (size_t l = 0; l < kPanel; l += V::W) {
            const F64 lo = V::ld(x + l), hi = V::ld(x + l + V::W64);
            const F32 nearest = V::narrow(lo, hi);
            V::storeBf16(out + 2 * l, V::anyBf16Halfway(nearest) ? V::narrowOdd(lo, hi) : nearest);
          }
          return;
        case DType::F16:
          for (size_t l = 0; l < kPanel; l += V::W)
            V::storeF16(out + 2 * l, V::narrowOdd(V::ld(x + l), V::ld(x + l + V::W64)));
          return;
      }
    }
  }
  // The last panel of a row, and the scalar ISA: the same correctly rounded results, one at a time.
  switch (o) {
    case DType::F64: std::memcpy(out, x, n * 8); break;
    case DType::F32:
      for (size_t k = 0; k < n; ++k) ms::storeF32(out + 4 * k, static_cast<float>(x[k]));
      break;
    case DType::BF16:
      for (size_t k = 0; k < n; ++k) storeU16(out + 2 * k, f64ToBf16(x[k]));
      break;
    case DType::F16:
      for (size_t k = 0; k < n; ++k) storeU16(out + 2 * k, f64ToF16(x[k]));
      break;
  }
}

// Panels of V per column block: one block (S × width doubles) stays in L2 while the task's rows
// stream past it.
constexpr size_t kOutputBlockDoubles = 32 * 1024;

// Whether any of x[0, n) is NaN or ±Inf: its exponent bits all ones. (b & exp) + 2^52 reaches bit 63
// exactly then, so an OR over the elements tells — integer ops only, which the compiler vectorizes
// (a float sum would be one serial chain).
inline bool anyNonFinite(const double* x, size_t n) {
  constexpr uint64_t kExp = 0x7ff0000000000000ull;
  uint64_t acc = 0;
  for (size_t i = 0; i < n; ++i) {
    uint64_t b;
    std::memcpy(&b, x + i, 8);
    acc |= (b & kExp) + (uint64_t{1} << 52);
  }
  return (acc >> 63) != 0;
}

// Rows [r0, r1) of the window: out = encode(w0 + Σ_a coef·U·V), MR rows × one panel at a time.
template <class V>
void lowRankOutput(const LowRankOutputTask& t) {
  constexpr int MR = outputTileRows<V>();
  static_assert(kOutputRowMultiple % MR == 0, "tasks hold whole tiles");
  const LowRankOutputJob& job = *t.job;
  const PackedFactors& f = *job.f;
  const int S = f.rank(), n = f.n;
  const uint64_t cols = f.cols, panels = panelsOf(cols);
  const size_t inSize = dtypeSize(job.base.dtype), outSize = dtypeSize(job.outDtype);
  const uint64_t blockPanels =
      std::max<uint64_t>(1, kOutputBlockDoubles / (static_cast<size_t>(std::max(S, 1)) * kPanel));
  const size_t rowDoubles = blockPanels * kPanel;
  thread_local std::vector<double> scratch;
  scratch.resize(static_cast<size_t>(S) * MR + MR * rowDoubles + MR * kPanel + 64);
  double* up = scratch.data();
  double* rowsBuf = up + static_cast<size_t>(S) * MR;
  double* tile = rowsBuf + MR * rowDoubles;
  const double* w0[MR];

  for (uint64_t p0 = 0; p0 < panels; p0 += blockPanels) {
    const uint64_t p1 = std::min(panels, p0 + blockPanels);
    const uint64_t c0 = p0 * kPanel;
    const size_t width = static_cast<size_t>(std::min(cols, p1 * kPanel) - c0);
    for (uint64_t k = t.r0; k < t.r1; k += MR) {
      const int mr = static_cast<int>(std::min<uint64_t>(MR, t.r1 - k));
      // coef × U for these rows, rank-major; rows past the end get 0 (their results are not stored).
      for (int a = 0; a < S; ++a) {
        for (int r = 0; r < MR; ++r) {
          double c = 0;
          if (r < mr) {
            const uint64_t row = job.firstRow + k + r;  // a row of U
            c = job.coef[(k + r) * n + f.factorOf[a]] *
                f.u[(row / kPanel) * S * kPanel + static_cast<size_t>(a) * kPanel + row % kPanel];
          }
          up[static_cast<size_t>(a) * MR + r] = c;
        }
      }
      for (int r = 0; r < MR; ++r) {
        double* dst = rowsBuf + r * rowDoubles;
        if (r < mr) {
          decodeF64<V>(job.base.dtype, job.base.bytes + ((k + r) * cols + c0) * inSize, width, dst);
          if (anyNonFinite(dst, width)) job.nonFinite->store(1, std::memory_order_relaxed);
        }
        w0[r] = dst;
      }
      for (uint64_t p = p0; p < p1; ++p) {
        const double* row[MR];
        for (int r = 0; r < MR; ++r) row[r] = w0[r] + (p - p0) * kPanel;
        outputTile<V, MR>(up, f.v + p * S * kPanel, S, row, tile);
        const size_t valid = static_cast<size_t>(std::min<uint64_t>(kPanel, cols - p * kPanel));
        for (int r = 0; r < mr; ++r)
          encodeDoubles<V>(job.outDtype, tile + r * kPanel, valid,
                           job.out + ((k + r) * cols + p * kPanel) * outSize);
      }
    }
  }
}
