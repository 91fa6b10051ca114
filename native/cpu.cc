#include "cpu.h"

#include <stdexcept>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

namespace ms {
namespace {

#if defined(__x86_64__) || defined(_M_X64)
uint64_t readXcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  f.avx = (c >> 28) & 1;
  f.fma = (c >> 12) & 1;
  f.f16c = (c >> 29) & 1;
  if (osxsave) {
    const uint64_t xcr0 = readXcr0();
    f.osAvx = (xcr0 & 0x6) == 0x6;             // SSE + AVX state
    f.osAvx512 = f.osAvx && (xcr0 & 0xE0) == 0xE0;  // opmask + ZMM_Hi256 + Hi16_ZMM
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = (b >> 5) & 1;
    f.avx512f = (b >> 16) & 1;
    f.avx512dq = (b >> 17) & 1;
    f.avx512bw = (b >> 30) & 1;
    f.avx512vl = (b >> 31) & 1;
  }
  return f;
}
#else
CpuFeatures detect() { return CpuFeatures{}; }
#endif

bool canRunAvx2(const CpuFeatures& f) { return f.osAvx && f.avx && f.avx2 && f.fma && f.f16c; }
bool canRunAvx512(const CpuFeatures& f) {
  return canRunAvx2(f) && f.osAvx512 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
}

}  // namespace

const CpuFeatures& cpuFeatures() {
  static const CpuFeatures features = detect();
  return features;
}

std::vector<const KernelTable*> availableKernels() {
  const CpuFeatures& f = cpuFeatures();
  std::vector<const KernelTable*> out;
  if (avx512Kernels() != nullptr && canRunAvx512(f)) out.push_back(avx512Kernels());
  if (avx2Kernels() != nullptr && canRunAvx2(f)) out.push_back(avx2Kernels());
  out.push_back(scalarKernels());
  return out;
}

const KernelTable* bestKernels() { return availableKernels().front(); }

const KernelTable* kernelsFor(const std::string& name) {
  for (const KernelTable* t : availableKernels())
    if (name == t->isa) return t;
  const CpuFeatures& f = cpuFeatures();
  if (name == "avx512") {
    if (avx512Kernels() == nullptr) throw std::runtime_error("isa 'avx512': not compiled in (not an x86-64 build)");
    throw std::runtime_error(std::string("isa 'avx512': this CPU/OS lacks") + (f.avx512f ? "" : " AVX-512F") +
                             (f.avx512bw ? "" : " AVX-512BW") + (f.avx512vl ? "" : " AVX-512VL") +
                             (f.avx512dq ? "" : " AVX-512DQ") + (f.osAvx512 ? "" : " OS ZMM state (XCR0)") +
                             (canRunAvx2(f) ? "" : " AVX2/FMA/F16C"));
  }
  if (name == "avx2") {
    if (avx2Kernels() == nullptr) throw std::runtime_error("isa 'avx2': not compiled in (not an x86-64 build)");
    throw std::runtime_error(std::string("isa 'avx2': this CPU/OS lacks") + (f.avx2 ? "" : " AVX2") +
                             (f.fma ? "" : " FMA") + (f.f16c ? "" : " F16C") + (f.osAvx ? "" : " OS YMM state (XCR0)"));
  }
  throw std::runtime_error("isa: expected 'avx512', 'avx2' or 'scalar' but received '" + name + "'");
}

}  // namespace ms
