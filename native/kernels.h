// The two passes of Model Stock over one window of a tensor, split into blocks. The driver
// (kernels.cc) cuts a window into blocks and spreads them over the pool; each ISA (kernels_*.cc)
// supplies the per-block work. A block never shares an output element with another block, and it
// shares a Gram accumulator only for the (at most two) units cut by its boundaries: those go to the
// block's partials, which the driver adds in block order, so the result is independent of threads.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "dtype.h"

namespace ms {

struct Input {
  const uint8_t* bytes;  // any alignment
  DType dtype;
};

struct KernelTable;

// A job whose abort flag was raised before it finished: its output is incomplete and must not be used.
struct Cancelled : std::runtime_error {
  Cancelled() : std::runtime_error("cancelled") {}
};

// A NaN or ±Inf found in an input the job reads where no Gram diagonal would show it (the base of a
// low-rank output): the job fails, and the addon rejects with code NON_FINITE.
struct NonFinite : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct WindowGeometry {
  const KernelTable* kernels;  // the ISA this job runs on
  unsigned threads;            // parallelism of this job, the calling thread included (0 = all cores)
  const int32_t* abort;        // non-zero once the merge is cancelled (checked between blocks); may be null
  const Input* inputs;  // inputs[0] = base w0, inputs[1..n] = the fine-tunes
  int n;                // N fine-tunes, ≥ 2
  uint64_t count;
  uint64_t firstElement;
  uint64_t unitLength;
};

struct GramWindow : WindowGeometry {
  double* gram;  // P = N(N+1)/2 per unit, packed upper triangle, indexed by global unit
};

struct InterpolateWindow : WindowGeometry {
  const double* t;  // per global unit
  uint8_t* out;
  DType outDtype;
};

// Elements per block; also the longest run summed in one set of float64 vector accumulators.
constexpr uint64_t kBlock = 64 * 1024;
// Elements decoded at a time into the per-thread scratch (L1-sized for N ≤ 4).
constexpr size_t kTile = 512;
// Scratch tail: SIMD loops round a tile up to whole vectors.
constexpr size_t kTilePad = 16;

struct GramBlock {
  const GramWindow* w;
  uint64_t begin, end;      // window-relative element range
  double* firstPartial;     // P sums for the unit containing element `begin`
  double* lastPartial;      // P sums for the unit containing `end − 1`, when it is another unit
  double* scratch;          // (N+1)·(kTile+kTilePad) doubles, 64-byte aligned
};

struct InterpolateBlock {
  const InterpolateWindow* w;
  uint64_t begin, end;
  double* scratch;  // (N+2)·(kTile+kTilePad) doubles, 64-byte aligned (float32 mode uses it as floats)
};

// Low-rank (LoRA) steps: lowrank.h.
struct LowRankDotsTask;
struct LowRankRowsTask;
struct LowRankOutputTask;

struct KernelTable {
  const char* isa;
  void (*gramBlock)(const GramBlock&);
  void (*interpolateBlock)(const InterpolateBlock&);
  void (*lowRankDots)(const LowRankDotsTask&);
  void (*lowRankRows)(const LowRankRowsTask&);
  void (*lowRankOutput)(const LowRankOutputTask&);
};

// Each is null when the ISA was not compiled in (non-x86 builds).
const KernelTable* scalarKernels();
const KernelTable* avx2Kernels();
const KernelTable* avx512Kernels();

inline int gramSize(int n) { return n * (n + 1) / 2; }
// The flag JS sets (Atomics.store on a shared Int32Array) when the merge's AbortSignal fires.
inline bool aborted(const int32_t* flag) { return flag != nullptr && __atomic_load_n(flag, __ATOMIC_RELAXED) != 0; }
inline uint64_t unitOf(const WindowGeometry& w, uint64_t k) { return (w.firstElement + k) / w.unitLength; }

// Runs a whole window on its kernels over the pool. Throws std::runtime_error on misuse, Cancelled
// when the job's abort flag is raised (blocks not yet started are skipped).
void runGram(const GramWindow& w);
void runInterpolate(const InterpolateWindow& w);

}  // namespace ms
