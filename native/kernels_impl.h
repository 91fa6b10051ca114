// The per-block kernels, written once against a small SIMD vocabulary `V` (ggml style). Each
// kernels_<isa>.cc defines V inside an anonymous namespace and includes this file there, inside its
// target region, so every instantiation is compiled for that ISA only and stays private to it.
//
// V provides, for W float32 lanes and W64 = W/2 float64 lanes:
//   F32 loadF32|loadF16|loadBf16(p)            W elements from any byte address
//   F32 load…Part(p, n)                        n < W elements, the rest zero (leftovers)
//   void storeF32|storeF16|storeBf16(p, v)      W elements, rounded to nearest even, NaN kept quiet
//   void store…Part(p, v, n)                   n < W elements
//   void storeF32AsF64(double* dst, F32 v)     W float64 values
//   F64 lo(F32) / hi(F32)                      the lower / upper W64 lanes widened (SIMD only)
//   void prefetch(p)                           hint: p will be read soon (SIMD only)
//   F64 loadF64(p) / loadF64Part(p, n), ld(const double*), st(double*, F64)
//   add/sub/mul/fma/zero/set1/hsum on F32 and F64 (fma may be unfused on the scalar path)
//
// No intrinsic appears below this line: a new ISA is a new V.

inline size_t roundUp(size_t n, size_t w) { return (n + w - 1) / w * w; }

// Decodes n elements into float64, zero-filling up to whole vectors.
template <class V>
void decodeF64(DType dt, const uint8_t* src, size_t n, double* dst) {
  size_t i = 0;
  switch (dt) {
    case DType::BF16:
      for (; i + V::W <= n; i += V::W) V::storeF32AsF64(dst + i, V::loadBf16(src + 2 * i));
      if (i < n) V::storeF32AsF64(dst + i, V::loadBf16Part(src + 2 * i, n - i));  // leftovers
      break;
    case DType::F16:
      for (; i + V::W <= n; i += V::W) V::storeF32AsF64(dst + i, V::loadF16(src + 2 * i));
      if (i < n) V::storeF32AsF64(dst + i, V::loadF16Part(src + 2 * i, n - i));
      break;
    case DType::F32:
      for (; i + V::W <= n; i += V::W) V::storeF32AsF64(dst + i, V::loadF32(src + 4 * i));
      if (i < n) V::storeF32AsF64(dst + i, V::loadF32Part(src + 4 * i, n - i));
      break;
    case DType::F64:
      for (; i + V::W64 <= n; i += V::W64) V::st(dst + i, V::loadF64(src + 8 * i));
      if (i < n) V::st(dst + i, V::loadF64Part(src + 8 * i, n - i));
      break;
  }
}

// Decodes n elements of a dtype narrower than float64 into float32, zero-filling up to whole vectors.
template <class V>
void decodeF32(DType dt, const uint8_t* src, size_t n, float* dst) {
  size_t i = 0;
  switch (dt) {
    case DType::BF16:
      for (; i + V::W <= n; i += V::W) V::stf(dst + i, V::loadBf16(src + 2 * i));
      if (i < n) V::stf(dst + i, V::loadBf16Part(src + 2 * i, n - i));
      break;
    case DType::F16:
      for (; i + V::W <= n; i += V::W) V::stf(dst + i, V::loadF16(src + 2 * i));
      if (i < n) V::stf(dst + i, V::loadF16Part(src + 2 * i, n - i));
      break;
    case DType::F32:
      for (; i + V::W <= n; i += V::W) V::stf(dst + i, V::loadF32(src + 4 * i));
      if (i < n) V::stf(dst + i, V::loadF32Part(src + 4 * i, n - i));
      break;
    case DType::F64:
      break;  // float64 windows take the float64 path
  }
}

// Σ d_i·d_j over one tile, d_i = x_{i+1} − x_0, accumulators kept in registers (N ≤ 4).
// `acc` holds P vectors of W64 lanes.
template <class V, int N>
void gramTile(double* const* x, size_t nPad, double* acc) {
  using F = typename V::F64;
  constexpr int P = N * (N + 1) / 2;
  F a[P];
  for (int p = 0; p < P; ++p) a[p] = V::ld(acc + p * V::W64);
  for (size_t k = 0; k < nPad; k += V::W64) {
    const F base = V::ld(x[0] + k);
    F d[N];
    for (int m = 0; m < N; ++m) d[m] = V::sub(V::ld(x[m + 1] + k), base);
    int p = 0;
    for (int i = 0; i < N; ++i)
      for (int j = i; j < N; ++j, ++p) a[p] = V::fma(d[i], d[j], a[p]);
  }
  for (int p = 0; p < P; ++p) V::st(acc + p * V::W64, a[p]);
}

// Any N: task vectors formed in place, then one dot product per pair.
template <class V>
void gramTileAny(double* const* x, int n, size_t nPad, double* acc) {
  using F = typename V::F64;
  for (int m = 1; m <= n; ++m)
    for (size_t k = 0; k < nPad; k += V::W64) V::st(x[m] + k, V::sub(V::ld(x[m] + k), V::ld(x[0] + k)));
  int p = 0;
  for (int i = 1; i <= n; ++i)
    for (int j = i; j <= n; ++j, ++p) {
      F s = V::ld(acc + p * V::W64);
      for (size_t k = 0; k < nPad; k += V::W64) s = V::fma(V::ld(x[i] + k), V::ld(x[j] + k), s);
      V::st(acc + p * V::W64, s);
    }
}

// ---------------------------------------------------------------------------------------------------
// Fused paths for the common case (every input in one dtype narrower than F64, N ≤ 4): decode in
// registers, no scratch round trip. SIMD only; the scalar ISA keeps the tile path as the reference.

template <class V, DType D>
typename V::F32 loadAs(const uint8_t* p) {
  if constexpr (D == DType::BF16) return V::loadBf16(p);
  else if constexpr (D == DType::F16) return V::loadF16(p);
  else return V::loadF32(p);
}
template <class V, DType D>
typename V::F32 loadAsPart(const uint8_t* p, size_t n) {
  if constexpr (D == DType::BF16) return V::loadBf16Part(p, n);
  else if constexpr (D == DType::F16) return V::loadF16Part(p, n);
  else return V::loadF32Part(p, n);
}
template <class V, DType D>
void storeAs(uint8_t* p, typename V::F32 v) {
  if constexpr (D == DType::BF16) V::storeBf16(p, v);
  else if constexpr (D == DType::F16) V::storeF16(p, v);
  else V::storeF32(p, v);
}
template <class V, DType D>
void storeAsPart(uint8_t* p, typename V::F32 v, size_t n) {
  if constexpr (D == DType::BF16) V::storeBf16Part(p, v, n);
  else if constexpr (D == DType::F16) V::storeF16Part(p, v, n);
  else V::storeF32Part(p, v, n);
}
constexpr size_t sizeOf(DType d) { return d == DType::F64 ? 8 : d == DType::F32 ? 4 : 2; }

// Software prefetch distance per input stream. Measured on the 2-core AVX-512 VM, BF16 N = 2 lerp
// from RAM: none 9.6, 512 B 11.1, 1 KiB 11.3, 4 KiB 11.2 GB/s (one thread); non-temporal stores on
// top changed nothing measurable, so the output uses ordinary stores (it is written to a file next).
constexpr size_t kPrefetchBytes = 1024;

// Σ d_i·d_j over elements [from, to) of one unit, into sums[P]. Inputs are widened to float64 before
// subtracting; separate accumulators for the low and high halves keep 2P independent FMA chains.
template <class V, DType D, int N>
void gramFused(const Input* in, uint64_t from, uint64_t to, double* sums) {
  using F = typename V::F64;
  using F32 = typename V::F32;
  constexpr int P = N * (N + 1) / 2;
  constexpr size_t S = sizeOf(D);
  const uint8_t* p[N + 1];
  for (int m = 0; m <= N; ++m) p[m] = in[m].bytes + from * S;
  F lo[P], hi[P];
  for (int q = 0; q < P; ++q) lo[q] = hi[q] = V::zero();
  auto step = [&](F32 base, const F32* x) {
    const F blo = V::lo(base), bhi = V::hi(base);
    F dlo[N], dhi[N];
    for (int m = 0; m < N; ++m) {
      dlo[m] = V::sub(V::lo(x[m]), blo);
      dhi[m] = V::sub(V::hi(x[m]), bhi);
    }
    int q = 0;
    for (int i = 0; i < N; ++i)
      for (int j = i; j < N; ++j, ++q) {
        lo[q] = V::fma(dlo[i], dlo[j], lo[q]);
        hi[q] = V::fma(dhi[i], dhi[j], hi[q]);
      }
  };
  const size_t len = static_cast<size_t>(to - from);
  size_t k = 0;
  F32 x[N];
  for (; k + V::W <= len; k += V::W) {
    for (int m = 0; m <= N; ++m) V::prefetch(p[m] + k * S + kPrefetchBytes);
    for (int m = 0; m < N; ++m) x[m] = loadAs<V, D>(p[m + 1] + k * S);
    step(loadAs<V, D>(p[0] + k * S), x);
  }
  if (k < len) {  // leftovers: zero-filled lanes add 0
    for (int m = 0; m < N; ++m) x[m] = loadAsPart<V, D>(p[m + 1] + k * S, len - k);
    step(loadAsPart<V, D>(p[0] + k * S, len - k), x);
  }
  for (int q = 0; q < P; ++q) sums[q] = V::hsum(V::add(lo[q], hi[q]));
}

template <class V, DType D>
void gramFusedN(const Input* in, int n, uint64_t from, uint64_t to, double* sums) {
  switch (n) {
    case 2: gramFused<V, D, 2>(in, from, to, sums); break;
    case 3: gramFused<V, D, 3>(in, from, to, sums); break;
    default: gramFused<V, D, 4>(in, from, to, sums); break;
  }
}

using GramFusedFn = void (*)(const Input*, int, uint64_t, uint64_t, double*);

// The fused Gram kernel for this window, or null when it needs the tile path.
template <class V>
GramFusedFn gramFusedFor(const WindowGeometry& w) {
  if constexpr (V::W == 1) {
    return nullptr;
  } else {
    if (w.n > 4) return nullptr;
    for (int m = 1; m <= w.n; ++m)
      if (w.inputs[m].dtype != w.inputs[0].dtype) return nullptr;
    switch (w.inputs[0].dtype) {
      case DType::BF16: return &gramFusedN<V, DType::BF16>;
      case DType::F16: return &gramFusedN<V, DType::F16>;
      case DType::F32: return &gramFusedN<V, DType::F32>;
      case DType::F64: return nullptr;
    }
    return nullptr;
  }
}

// out = a·w0 + b·Σw_i over [from, to), the same operations in the same order as lerpEncodeF32.
template <class V, DType D, DType O>
void lerpFused(const Input* in, int n, uint64_t from, uint64_t to, float a, float b, uint8_t* out) {
  using F32 = typename V::F32;
  constexpr size_t S = sizeOf(D), OS = sizeOf(O);
  const F32 va = V::set1f(a), vb = V::set1f(b);
  const size_t len = static_cast<size_t>(to - from);
  const uint8_t* base = in[0].bytes + from * S;
  uint8_t* dst = out + from * OS;
  size_t k = 0;
  for (; k + V::W <= len; k += V::W) {
    for (int m = 0; m <= n; ++m) V::prefetch(in[m].bytes + (from + k) * S + kPrefetchBytes);
    F32 s = loadAs<V, D>(in[1].bytes + (from + k) * S);
    for (int m = 2; m <= n; ++m) s = V::addf(s, loadAs<V, D>(in[m].bytes + (from + k) * S));
    storeAs<V, O>(dst + k * OS, V::addf(V::mulf(va, loadAs<V, D>(base + k * S)), V::mulf(vb, s)));
  }
  if (k < len) {  // leftovers
    const size_t r = len - k;
    F32 s = loadAsPart<V, D>(in[1].bytes + (from + k) * S, r);
    for (int m = 2; m <= n; ++m) s = V::addf(s, loadAsPart<V, D>(in[m].bytes + (from + k) * S, r));
    storeAsPart<V, O>(dst + k * OS, V::addf(V::mulf(va, loadAsPart<V, D>(base + k * S, r)), V::mulf(vb, s)), r);
  }
}

using LerpFusedFn = void (*)(const Input*, int, uint64_t, uint64_t, float, float, uint8_t*);

template <class V, DType D>
LerpFusedFn lerpFusedOut(DType o) {
  switch (o) {
    case DType::BF16: return &lerpFused<V, D, DType::BF16>;
    case DType::F16: return &lerpFused<V, D, DType::F16>;
    case DType::F32: return &lerpFused<V, D, DType::F32>;
    case DType::F64: return nullptr;
  }
  return nullptr;
}

template <class V>
LerpFusedFn lerpFusedFor(const InterpolateWindow& w) {
  if constexpr (V::W == 1) {
    return nullptr;
  } else {
    for (int m = 1; m <= w.n; ++m)
      if (w.inputs[m].dtype != w.inputs[0].dtype) return nullptr;
    switch (w.inputs[0].dtype) {
      case DType::BF16: return lerpFusedOut<V, DType::BF16>(w.outDtype);
      case DType::F16: return lerpFusedOut<V, DType::F16>(w.outDtype);
      case DType::F32: return lerpFusedOut<V, DType::F32>(w.outDtype);
      case DType::F64: return nullptr;
    }
    return nullptr;
  }
}

// ---------------------------------------------------------------------------------------------------
// Tile paths: any mix of dtypes and any N, through per-thread float64 / float32 scratch.

template <class V>
void gramBlock(const GramBlock& blk) {
  const GramWindow& w = *blk.w;
  const int n = w.n;
  const int P = gramSize(n);
  const size_t stride = kTile + kTilePad;
  std::vector<double*> x(static_cast<size_t>(n) + 1);
  for (int m = 0; m <= n; ++m) x[m] = blk.scratch + static_cast<size_t>(m) * stride;
  std::vector<double> acc(static_cast<size_t>(P) * V::W64);
  std::vector<double> sums(static_cast<size_t>(P));
  const GramFusedFn fused = gramFusedFor<V>(w);

  uint64_t k = blk.begin;
  bool first = true;
  while (k < blk.end) {
    const uint64_t u = unitOf(w, k);
    const uint64_t unitEnd = (u + 1) * w.unitLength - w.firstElement;  // window-relative
    const uint64_t segEnd = unitEnd < blk.end ? unitEnd : blk.end;
    // A unit cut by the block's first or last element may be shared with a neighbour block: its
    // sums go to the block's partials. Units strictly inside belong to this block alone.
    double* dst = first ? blk.firstPartial : segEnd == blk.end ? blk.lastPartial : w.gram + u * P;
    first = false;
    if (fused != nullptr) {
      fused(w.inputs, n, k, segEnd, sums.data());
      for (int p = 0; p < P; ++p) dst[p] += sums[p];
      k = segEnd;
      continue;
    }
    std::fill(acc.begin(), acc.end(), 0.0);
    for (uint64_t s = k; s < segEnd; s += kTile) {
      const size_t len = static_cast<size_t>(segEnd - s < kTile ? segEnd - s : kTile);
      for (int m = 0; m <= n; ++m) {
        const Input& in = w.inputs[m];
        decodeF64<V>(in.dtype, in.bytes + s * dtypeSize(in.dtype), len, x[m]);
      }
      const size_t nPad = roundUp(len, V::W64);
      switch (n) {
        case 2: gramTile<V, 2>(x.data(), nPad, acc.data()); break;
        case 3: gramTile<V, 3>(x.data(), nPad, acc.data()); break;
        case 4: gramTile<V, 4>(x.data(), nPad, acc.data()); break;
        default: gramTileAny<V>(x.data(), n, nPad, acc.data()); break;
      }
    }
    for (int p = 0; p < P; ++p) dst[p] += V::hsum(V::ld(acc.data() + p * V::W64));
    k = segEnd;
  }
}

// out = a·w0 + b·Σw_i, a = 1 − t, b = t/N, in float32, rounded once to the output dtype.
// Unfused on every ISA so that all of them write the same bytes.
template <class V>
void lerpEncodeF32(DType outDtype, float* const* x, int n, size_t len, float a, float b, uint8_t* out) {
  using F = typename V::F32;
  const F va = V::set1f(a), vb = V::set1f(b);
  const size_t osz = dtypeSize(outDtype);
  size_t k = 0;
  auto value = [&](size_t at) {
    F s = V::ldf(x[1] + at);
    for (int m = 2; m <= n; ++m) s = V::addf(s, V::ldf(x[m] + at));
    return V::addf(V::mulf(va, V::ldf(x[0] + at)), V::mulf(vb, s));
  };
  switch (outDtype) {
    case DType::BF16:
      for (; k + V::W <= len; k += V::W) V::storeBf16(out + k * osz, value(k));
      if (k < len) V::storeBf16Part(out + k * osz, value(k), len - k);  // leftovers
      break;
    case DType::F16:
      for (; k + V::W <= len; k += V::W) V::storeF16(out + k * osz, value(k));
      if (k < len) V::storeF16Part(out + k * osz, value(k), len - k);
      break;
    case DType::F32:
      for (; k + V::W <= len; k += V::W) V::storeF32(out + k * osz, value(k));
      if (k < len) V::storeF32Part(out + k * osz, value(k), len - k);
      break;
    case DType::F64:
      break;  // float64 output takes the float64 path
  }
}

// The same in float64 (any input or the output is F64); half outputs are rounded via float32
// rounded-to-odd, which is exact round-to-nearest-even from float64.
template <class V>
void lerpEncodeF64(DType outDtype, double* const* x, int n, size_t len, double a, double b, double* r,
                   uint8_t* out) {
  using F = typename V::F64;
  const F va = V::set1(a), vb = V::set1(b);
  const size_t nPad = roundUp(len, V::W64);
  for (size_t k = 0; k < nPad; k += V::W64) {
    F s = V::ld(x[1] + k);
    for (int m = 2; m <= n; ++m) s = V::add(s, V::ld(x[m] + k));
    V::st(r + k, V::add(V::mul(va, V::ld(x[0] + k)), V::mul(vb, s)));
  }
  switch (outDtype) {
    case DType::F64: std::memcpy(out, r, len * 8); break;
    case DType::F32:
      for (size_t k = 0; k < len; ++k) storeF32(out + 4 * k, static_cast<float>(r[k]));
      break;
    case DType::F16:
      for (size_t k = 0; k < len; ++k) storeU16(out + 2 * k, f64ToF16(r[k]));
      break;
    case DType::BF16:
      for (size_t k = 0; k < len; ++k) storeU16(out + 2 * k, f64ToBf16(r[k]));
      break;
  }
}

template <class V>
void interpolateBlock(const InterpolateBlock& blk) {
  const InterpolateWindow& w = *blk.w;
  const int n = w.n;
  bool wide = w.outDtype == DType::F64;
  for (int m = 0; m <= n; ++m) wide = wide || w.inputs[m].dtype == DType::F64;
  const size_t stride = kTile + kTilePad;
  const size_t osz = dtypeSize(w.outDtype);
  std::vector<double*> xd(static_cast<size_t>(n) + 2);
  std::vector<float*> xf(static_cast<size_t>(n) + 1);
  for (int m = 0; m <= n + 1; ++m) xd[m] = blk.scratch + static_cast<size_t>(m) * stride;
  for (int m = 0; m <= n; ++m) xf[m] = reinterpret_cast<float*>(xd[m]);
  const LerpFusedFn fused = wide ? nullptr : lerpFusedFor<V>(w);

  uint64_t k = blk.begin;
  while (k < blk.end) {
    const uint64_t u = unitOf(w, k);
    const uint64_t unitEnd = (u + 1) * w.unitLength - w.firstElement;
    const uint64_t segEnd = unitEnd < blk.end ? unitEnd : blk.end;
    const double t = w.t[u];
    const double a = 1.0 - t, b = t / n;
    if (fused != nullptr) {
      fused(w.inputs, n, k, segEnd, static_cast<float>(a), static_cast<float>(b), w.out);
      k = segEnd;
      continue;
    }
    for (uint64_t s = k; s < segEnd; s += kTile) {
      const size_t len = static_cast<size_t>(segEnd - s < kTile ? segEnd - s : kTile);
      uint8_t* out = w.out + s * osz;
      if (wide) {
        for (int m = 0; m <= n; ++m) {
          const Input& in = w.inputs[m];
          decodeF64<V>(in.dtype, in.bytes + s * dtypeSize(in.dtype), len, xd[m]);
        }
        lerpEncodeF64<V>(w.outDtype, xd.data(), n, len, a, b, xd[n + 1], out);
      } else {
        for (int m = 0; m <= n; ++m) {
          const Input& in = w.inputs[m];
          decodeF32<V>(in.dtype, in.bytes + s * dtypeSize(in.dtype), len, xf[m]);
        }
        lerpEncodeF32<V>(w.outDtype, xf.data(), n, len, static_cast<float>(a), static_cast<float>(b), out);
      }
    }
    k = segEnd;
  }
}
