// Which SIMD kernels this CPU and OS can run. Each job names the ISA it runs on (a merge's choice, or a
// test forcing one), so nothing here is process-wide state.
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
const KernelTable* bestKernels();
// The kernels of ISA `name` ('avx512' | 'avx2' | 'scalar'); throws std::runtime_error naming what this
// CPU or build lacks.
const KernelTable* kernelsFor(const std::string& name);

}  // namespace ms
