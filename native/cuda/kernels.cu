// The device kernels: thin loops around the per-element arithmetic of passes.h (the same code the CPU
// emulation runs). Both are memory-bound; a dtype switch per element costs nothing next to the loads,
// so there are five instantiations in all (four Gram shapes, one interpolation).
#include "launch.h"

namespace ms {
namespace cuda {
namespace {

constexpr unsigned kThreads = 256;
constexpr unsigned kWarpsPerBlock = kThreads / kWarp;
// Elements per thread in the interpolation: four independent loads per input in flight.
constexpr unsigned kItems = 4;

template <class S>
__global__ void __launch_bounds__(kThreads) gramKernel(GramOperands op, ChunkGeometry g, uint64_t chunks,
                                                        double* __restrict__ partials) {
  const uint64_t chunk = static_cast<uint64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (chunk >= chunks) return;  // whole warps only: the shuffles below need every lane
  const unsigned lane = threadIdx.x % kWarp;
  uint64_t begin, end, unit;
  chunkRange(g, chunk, &begin, &end, &unit);
  double acc[S::kQ];
#pragma unroll
  for (int q = 0; q < S::kQ; ++q) acc[q] = 0.0;
#pragma unroll 4
  for (uint64_t k = begin + lane; k < end; k += kWarp) gramStep<S>(op, k, acc);
  // The tree the emulation reproduces: lane l adds lane l + off for off = 16, 8, 4, 2, 1.
#pragma unroll
  for (int q = 0; q < S::kQ; ++q)
    for (unsigned off = kWarp / 2; off > 0; off /= 2) acc[q] = addF64(acc[q], __shfl_down_sync(0xFFFFFFFFu, acc[q], off));
  if (lane == 0) {
#pragma unroll
    for (int q = 0; q < S::kQ; ++q) partials[chunk * S::kQ + q] = acc[q];
  }
}

__global__ void __launch_bounds__(kThreads) interpolateKernel(InputTable in, int n, bool wide, uint64_t count,
                                                               uint64_t firstElement, uint64_t unitLength,
                                                               uint64_t firstUnit, const double* __restrict__ ab,
                                                               void* __restrict__ out, DType outDt) {
  const uint64_t tile = static_cast<uint64_t>(blockIdx.x) * kThreads * kItems;
  // 32-bit division when every element index fits: several times cheaper than 64-bit on the GPU.
  const bool narrow = firstElement + count <= 0xFFFFFFFFull && unitLength <= 0xFFFFFFFFull;
#pragma unroll
  for (unsigned i = 0; i < kItems; ++i) {
    const uint64_t k = tile + i * kThreads + threadIdx.x;
    if (k >= count) return;
    const uint64_t e = firstElement + k;
    const uint64_t u = (narrow ? static_cast<uint32_t>(e) / static_cast<uint32_t>(unitLength) : e / unitLength) - firstUnit;
    interpolateElement(in, n, k, ab[2 * u], ab[2 * u + 1], wide, out, outDt);
  }
}

template <class S>
cudaError_t gram(const GramArgs& a, cudaStream_t stream) {
  const uint64_t blocks = (a.chunks + kWarpsPerBlock - 1) / kWarpsPerBlock;
  gramKernel<S><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a.operands, a.geometry, a.chunks, a.partials);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launchGram(const GramArgs& a, cudaStream_t stream) {
  if (a.chunks == 0) return cudaSuccess;
  if ((a.chunks + kWarpsPerBlock - 1) / kWarpsPerBlock > 0x7FFFFFFFull) return cudaErrorInvalidConfiguration;
  switch (a.shape) {
    case GramShape::Tri2: return gram<GramShapeOf<2, 2, true>>(a, stream);
    case GramShape::Tri3: return gram<GramShapeOf<3, 3, true>>(a, stream);
    case GramShape::Tri4: return gram<GramShapeOf<4, 4, true>>(a, stream);
    case GramShape::Rect4x4: return gram<GramShapeOf<4, 4, false>>(a, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launchInterpolate(const InterpolateArgs& a, cudaStream_t stream) {
  if (a.count == 0) return cudaSuccess;
  const uint64_t blocks = (a.count + kThreads * kItems - 1) / (kThreads * kItems);
  if (blocks > 0x7FFFFFFFull) return cudaErrorInvalidConfiguration;
  interpolateKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      a.inputs, a.n, a.wide, a.count, a.firstElement, a.unitLength, a.firstUnit, a.coefficients, a.out, a.outDtype);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace ms
