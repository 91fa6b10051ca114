// Low-rank task vectors (LoRA adapters): d_i = s_i·U_i·V_i for a stored tensor seen as [R, C], where
// U_i [R, r_i] and V_i [r_i, C] are the adapter's factors in stored-row order — plain (Linear):
// U = lora_B, V = lora_A; transposed (Conv1D, fan_in_fan_out, stored [in, out]): U = lora_Aᵀ,
// V = lora_Bᵀ.
//
// Packing first rewrites each factor pair as d_i = s_i·Y_i·Q_i with Q_i's rows orthonormal
// (V_i = L_i·Q_i, Y_i = U_i·L_i). Why: the Gram identity on raw factors rounds like Σ|UᵀU|⊙|VVᵀ|, which
// exceeds ‖d_i‖‖d_j‖ by the *square* of any cancellation between an adapter's rank terms (PEFT's "cat"
// adapters B1·A1 − B2·A2, merged adapters fed back in); with orthonormal rows the error is linear in it,
// like the dense Gram's. The N fine-tunes' Y and Q are concatenated along the rank (S = Σ r_i columns of
// Y, S rows of Q; a zero task vector has r_i = 0) and packed in panels of kPanel along their long
// dimension: X[p][a][l] = X(a, p·kPanel + l), zero past the end. One layout serves every step: the
// Gram's dot products read kPanel-element strips of two rows, the filter-wise Gram runs its vectors
// across kPanel consecutive rows, and the output kernel's micro-tiles read one panel of Q as an
// [S × kPanel] block. Below, U and V name the packed Y and Q.
//
// The steps (lowrank.cc drives them over the pool; each ISA supplies the inner kernels, lowrank_impl.h):
//   Gram   MV = V·Vᵀ, MU = Uᵀ·U (S × S): ⟨d_i, d_j⟩ = s_i s_j Σ_{a∈i, b∈j} MU_ab·MV_ab (layer-wise);
//          filter-wise, stored row k: s_i s_j Σ_{a∈i} U_ka Σ_{b∈j} MV_ab U_kb. Never an R × C product.
//   Output out[k, c] = encode(w0[k, c] + Σ_a coef_{k,i(a)}·U_ka·V_ac), coef_{k,i} = (t_k/N)·s_i — a
//          rank-S GEMM per row window, in float64, added to the base once and rounded once.
#pragma once
#include <atomic>
#include <cstdint>
#include <vector>

#include "kernels.h"

namespace ms {

constexpr uint64_t kPanel = 16;
inline uint64_t panelsOf(uint64_t n) { return (n + kPanel - 1) / kPanel; }
// The output's tasks take rows in multiples of this: every ISA's micro-tile rows (lowrank_impl.h
// outputTileRows) divide it, so only a window's last tile can run partly empty.
constexpr uint64_t kOutputRowMultiple = 4;

// One fine-tune's factors as stored in the adapter (row-major, any byte alignment).
struct LowRankFactorInput {
  const uint8_t* a;  // lora_A: [rank, C] plain, [rank, R] transposed
  DType aDtype;
  const uint8_t* b;  // lora_B: [R, rank] plain, [C, rank] transposed
  DType bDtype;
  int rank;          // 0: a zero task vector (a and b unused)
  bool transposed;
};

// The concatenated factors of a tensor, packed (see above). U holds rows [uFirstRow, uFirstRow + uRows)
// of the stored tensor only: the rows a merge or a window needs.
struct PackedFactors {
  int n = 0;                  // N fine-tunes
  std::vector<int> offsets;   // factor i owns columns [offsets[i], offsets[i+1]) of U; offsets[n] = S
  std::vector<int> factorOf;  // S entries: the factor a column belongs to
  uint64_t uFirstRow = 0, uRows = 0, cols = 0;
  const double* u = nullptr;  // panelsOf(uRows) × S × kPanel
  const double* v = nullptr;  // panelsOf(cols) × S × kPanel
  int rank() const { return offsets.empty() ? 0 : offsets.back(); }
};

// Fills offsets/factorOf from the ranks.
void setRanks(PackedFactors& f, const std::vector<int>& ranks);

// Decodes every factor, orthonormalizes it, and packs Y into `u`, Q into `v` (zeroed by the caller; the
// writable arrays behind f.u, f.v). `rows` is the stored R (a transposed factor's A rows are that long).
void packFactors(const std::vector<LowRankFactorInput>& factors, uint64_t rows, PackedFactors& f, double* u,
                 double* v, unsigned threads, const int32_t* abort);

struct LowRankGramJob {
  const KernelTable* kernels;
  unsigned threads;
  const int32_t* abort;
  const PackedFactors* f;
  const double* scales;  // s_i, N entries
  bool filterWise;       // one unit per row of U (f->uRows units), else one unit
  double* gram;          // units × P, packed upper triangle (overwritten)
};

struct LowRankOutputJob {
  const KernelTable* kernels;
  unsigned threads;
  const int32_t* abort;
  const PackedFactors* f;
  const double* coef;  // rows × N: the factor coefficients of each window row
  uint64_t firstRow;   // the window's first row, relative to f->uFirstRow
  uint64_t rows;
  Input base;          // rows × cols elements
  uint8_t* out;        // rows × cols × size(outDtype)
  DType outDtype;
  // Set (by any task) when a base element is NaN or ±Inf: the job then fails with NON_FINITE, since
  // the Gram from factors never sees the base (a dense Gram's diagonal would have caught it).
  std::atomic<int>* nonFinite;
};

// What one ISA's kernels are handed (lowrank_impl.h).
struct LowRankDotsTask {
  const double* x;   // packed factor (U or V)
  int S;
  uint64_t p0, p1;   // panels summed
  double* partial;   // S × S, zeroed; the upper triangle (a ≤ b) accumulated
};

struct LowRankRowsTask {
  const PackedFactors* f;
  const double* mv;      // S × S, symmetric
  const double* scales;
  uint64_t panel;        // rows panel·kPanel … + kPanel − 1 of U
  double* gram;          // the Gram of U's row 0 (units × P)
};

struct LowRankOutputTask {
  const LowRankOutputJob* job;
  uint64_t r0, r1;  // window-relative rows
};

void runLowRankGram(const LowRankGramJob& job);
void runLowRankOutput(const LowRankOutputJob& job);

}  // namespace ms
