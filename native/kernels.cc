// The ISA-independent driver: cuts a window into blocks, runs them over the pool with the kernels
// the job names, and adds the blocks' shared-unit partials in block order.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "kernels.h"
#include "pool.h"

namespace ms {
namespace {

// Per-thread decode scratch, 64-byte aligned, grown on demand and kept for the next job.
double* scratch(size_t doubles) {
  thread_local std::vector<double> buffer;
  if (buffer.size() < doubles + 8) buffer.resize(doubles + 8);
  const uintptr_t p = reinterpret_cast<uintptr_t>(buffer.data());
  return reinterpret_cast<double*>((p + 63) & ~static_cast<uintptr_t>(63));
}

uint64_t blocksOf(const WindowGeometry& w) { return (w.count + kBlock - 1) / kBlock; }

void checkGeometry(const WindowGeometry& w) {
  if (w.n < 2) throw std::runtime_error("N must be at least 2");
  if (w.unitLength == 0) throw std::runtime_error("unitLength must be at least 1");
  if (w.kernels == nullptr) throw std::runtime_error("no kernels chosen");
}

}  // namespace

void runGram(const GramWindow& w) {
  checkGeometry(w);
  if (w.count == 0) return;
  const KernelTable* kernels = w.kernels;
  const size_t P = static_cast<size_t>(gramSize(w.n));
  const uint64_t blocks = blocksOf(w);
  std::vector<double> partials(blocks * 2 * P, 0.0);
  const size_t scratchDoubles = (static_cast<size_t>(w.n) + 1) * (kTile + kTilePad);
  parallelFor(blocks, w.threads, [&](size_t b) {
    if (aborted(w.abort)) return;
    GramBlock blk;
    blk.w = &w;
    blk.begin = b * kBlock;
    blk.end = std::min<uint64_t>(w.count, blk.begin + kBlock);
    blk.firstPartial = partials.data() + b * 2 * P;
    blk.lastPartial = blk.firstPartial + P;
    blk.scratch = scratch(scratchDoubles);
    kernels->gramBlock(blk);
  });
  if (aborted(w.abort)) throw Cancelled();
  for (uint64_t b = 0; b < blocks; ++b) {
    const uint64_t begin = b * kBlock;
    const uint64_t end = std::min<uint64_t>(w.count, begin + kBlock);
    const uint64_t firstUnit = unitOf(w, begin), lastUnit = unitOf(w, end - 1);
    const double* first = partials.data() + b * 2 * P;
    for (size_t p = 0; p < P; ++p) w.gram[firstUnit * P + p] += first[p];
    if (lastUnit != firstUnit)
      for (size_t p = 0; p < P; ++p) w.gram[lastUnit * P + p] += first[P + p];
  }
}

void runInterpolate(const InterpolateWindow& w) {
  checkGeometry(w);
  if (w.count == 0) return;
  const KernelTable* kernels = w.kernels;
  const size_t scratchDoubles = (static_cast<size_t>(w.n) + 2) * (kTile + kTilePad);
  parallelFor(blocksOf(w), w.threads, [&](size_t b) {
    if (aborted(w.abort)) return;
    InterpolateBlock blk;
    blk.w = &w;
    blk.begin = b * kBlock;
    blk.end = std::min<uint64_t>(w.count, blk.begin + kBlock);
    blk.scratch = scratch(scratchDoubles);
    kernels->interpolateBlock(blk);
  });
  if (aborted(w.abort)) throw Cancelled();
}

}  // namespace ms
