// Which SIMD kernels this CPU and OS can run, the one in use, and a forced override for tests.
#pragma once
#include <string>
#include <vector>

#include "kernels.h"

namespace ms {

struct CpuFeatures {
  bool avx = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool osAvx = false, osAvx512 = false;  // XCR0 says the OS saves the YMM / ZMM+opmask state
};

const CpuFeatures& cpuFeatures();
// Kernel tables this machine can run, best first (scalar always last).
std::vector<const KernelTable*> availableKernels();
const KernelTable* currentKernels();
// Forces an ISA ('avx512' | 'avx2' | 'scalar'); throws std::runtime_error naming what is missing.
void setIsa(const std::string& name);

}  // namespace ms
