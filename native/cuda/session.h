// One tensor on the device: the backend seam's per-tensor session (openTensor → gram(window) …
// interpolate(window, t, out) … close()). On its first call the session decides whether the whole
// tensor's inputs fit the device budget; if they do, every input window is uploaded once, by the Gram
// pass, and the interpolation pass reads it from device memory (each input byte crosses PCIe once).
// Otherwise each call uploads its window into pooled device memory and gives it back.
//
// Calls block their (libuv worker) thread until their work is done and are serialised per session;
// calls of different sessions run on different streams and overlap. Compiled only with CUDA.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "../kernels.h"
#include "device.h"
#include "passes.h"

namespace ms {
namespace cuda {

struct SessionSpec {
  std::string tensor;          // named in errors
  int device = 0;
  int n = 0;                   // fine-tunes
  uint64_t count = 0;          // elements of the whole tensor
  uint64_t unitLength = 1;
  std::vector<DType> dtypes;   // base first, then the n fine-tunes
  DType outDtype = DType::F32;
  uint64_t budget = 0;         // device bytes the resident copy may take; 0: what the device has free
};

struct SessionStats {
  bool decided = false;
  bool resident = false;
  uint64_t residentBytes = 0;
  uint64_t uploadedInputBytes = 0;  // host → device, the inputs' bytes only
  uint64_t uploadedBytes = 0;       // host → device, everything
  uint64_t downloadedBytes = 0;  // device → host, outputs and Gram partials
  double gramKernelMs = 0;        // GPU time in the kernels alone (CUDA events), for benchmarks
  double interpolateKernelMs = 0;
};

class DeviceBuffer;

class Session {
 public:
  explicit Session(SessionSpec spec) : spec_(std::move(spec)) {}
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // The two passes over one window (kernels.h's structs, as job.cc parses them). Throw CodedError
  // or ArgumentError; on error the window's output is unspecified and the session stays usable
  // unless the device itself failed.
  void gram(const GramWindow& w);
  void interpolate(const InterpolateWindow& w);
  // Frees the device memory; later calls throw. Idempotent.
  void close();

  // Safe to call while a pass runs: guarded by its own lock.
  SessionStats stats();
  const SessionSpec& spec() const { return spec_; }

 private:
  struct Placement {
    const void* p[kMaxModels + 1];  // device address of each input's first window element
  };
  void checkWindow(const WindowGeometry& w, const char* op) const;
  void decide(Device& d, Slot& slot);
  Placement place(Device& d, Slot& slot, PinnedUses& uses, const WindowGeometry& w, DeviceBuffer& window);
  void* allocateOrThrow(Device& d, Slot& slot, uint64_t bytes, const char* what);
  bool covered(uint64_t first, uint64_t count) const;
  void cover(uint64_t first, uint64_t count);

  void count(uint64_t inputUp, uint64_t up, uint64_t down);
  void timeKernels(Slot& slot, double* total);

  std::mutex mu_;  // one pass at a time
  SessionSpec spec_;
  std::mutex statsMu_;
  SessionStats stats_;
  bool closed_ = false;
  void* resident_ = nullptr;
  std::vector<uint64_t> offsets_;                         // per input, in resident_
  std::vector<std::pair<uint64_t, uint64_t>> uploaded_;  // element ranges resident, sorted, disjoint
};

}  // namespace cuda
}  // namespace ms
