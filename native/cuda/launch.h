// Launchers of the device kernels (kernels.cu, compiled by nvcc), called by the session (session.cc,
// compiled by the host compiler). Each enqueues work on `stream` and returns the launch's status.
#pragma once
#include <cuda_runtime_api.h>

#include "passes.h"

namespace ms {
namespace cuda {

struct GramArgs {
  GramShape shape;
  GramOperands operands;  // device pointers to the window's first element
  ChunkGeometry geometry;
  uint64_t chunks;
  double* partials;  // chunks × q doubles, device
};

struct InterpolateArgs {
  InputTable inputs;  // device pointers to the window's first element
  int n;
  bool wide;
  uint64_t count;
  uint64_t firstElement;
  uint64_t unitLength;
  uint64_t firstUnit;
  const double* coefficients;  // (a, b) per unit from firstUnit on, device
  void* out;                   // device
  DType outDtype;
};

cudaError_t launchGram(const GramArgs& args, cudaStream_t stream);
cudaError_t launchInterpolate(const InterpolateArgs& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace ms
