// One CUDA device as the sessions use it: its context (created on first use, blocking sync so a
// waiting libuv thread sleeps instead of spinning), a stream-ordered memory pool that keeps freed
// memory for the next tensor, and a few slots — a stream with two pinned staging buffers — that calls
// borrow while they run, so calls of different tensors overlap on different streams. Also the
// registry of pinned host memory handed to JavaScript. Compiled only with CUDA (MODEL_STOCK_WITH_CUDA).
#pragma once
#include <cuda_runtime_api.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace ms {
namespace cuda {

// Throws CodedError when status is not cudaSuccess: CUDA_OUT_OF_MEMORY, BACKEND_UNAVAILABLE (no
// driver or device), else CUDA_ERROR; the message starts with `what`.
void check(cudaError_t status, const std::string& what);
std::string describe(cudaError_t status);

// Why no device can be used ("no CUDA device: …"), or empty when device `index` exists.
std::string unavailableReason(int index);

constexpr size_t kStagingBytes = size_t{8} << 20;
constexpr int kSlots = 4;

struct Slot {
  cudaStream_t stream = nullptr;
  void* staging[2] = {nullptr, nullptr};
  cudaEvent_t ready[2] = {nullptr, nullptr};  // recorded after the copy that last used staging[i]
  cudaEvent_t kernelStart = nullptr, kernelEnd = nullptr;  // timing the kernels of one call
};

class Device {
 public:
  // The device, its context created on first use. Throws CodedError (BACKEND_UNAVAILABLE when
  // there is no such device). Thread-safe.
  static Device& get(int index);

  int index() const { return index_; }
  const std::string& name() const { return name_; }
  // The CUDA runtime's current device is per thread: every libuv worker sets it first.
  void makeCurrent() const;

  // Free device memory plus what the pool holds unused: what a new allocation can get.
  uint64_t available() const;
  uint64_t total() const { return total_; }

  // Stream-ordered allocation from the pool. allocate returns null on out-of-memory (the error is
  // cleared) so callers can fall back or name what they needed.
  void* allocate(size_t bytes, cudaStream_t stream) const;
  void release(void* p, cudaStream_t stream) const;

  Slot* acquireSlot();
  void releaseSlot(Slot* slot);

 private:
  explicit Device(int index);
  int index_;
  std::string name_;
  uint64_t total_ = 0;
  cudaMemPool_t pool_ = nullptr;
  std::mutex mu_;
  std::condition_variable freed_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<Slot*> idle_;
};

// A slot for the duration of one call; the destructor waits for the slot's stream so no copy into
// or out of memory the call borrowed outlives it, then returns the slot.
class SlotLease {
 public:
  explicit SlotLease(Device& d) : device_(d), slot_(d.acquireSlot()) {}
  ~SlotLease();
  SlotLease(const SlotLease&) = delete;
  SlotLease& operator=(const SlotLease&) = delete;
  Slot& operator*() const { return *slot_; }
  Slot* operator->() const { return slot_; }

 private:
  Device& device_;
  Slot* slot_;
};

// Pinned host memory given to JavaScript (cudaAllocHost). Copies from or to a range inside a live
// allocation skip the staging buffers; a use count keeps such an allocation from being freed while a
// copy runs.
namespace pinned {
// Throws CodedError. *generation tells this allocation from a later one at the same address.
void* allocate(size_t bytes, uint64_t* generation);
// Frees now; throws CodedError (NATIVE_ERROR) when a copy is using it or p is not an allocation.
void free(void* p);
// Called by the ArrayBuffer's finalizer: frees unless freed already.
void finalize(void* p, uint64_t generation);
// Whether [p, p + bytes) lies inside one live allocation; when it does, that allocation's use count
// is raised until unuse(p).
bool use(const void* p, size_t bytes);
void unuse(const void* p);
}  // namespace pinned

// The pinned ranges one call copies from or to directly, released when the call is over. Declare it
// before the call's SlotLease: it is then destroyed after the lease has waited for the stream.
class PinnedUses {
 public:
  PinnedUses() = default;
  PinnedUses(const PinnedUses&) = delete;
  PinnedUses& operator=(const PinnedUses&) = delete;
  ~PinnedUses() {
    for (const void* p : held_) pinned::unuse(p);
  }
  // Whether [p, p + bytes) is pinned memory from pinned::allocate; if so it is held until destruction.
  bool use(const void* p, size_t bytes) {
    if (!pinned::use(p, bytes)) return false;
    held_.push_back(p);
    return true;
  }

 private:
  std::vector<const void*> held_;
};

}  // namespace cuda
}  // namespace ms
