#include "device.h"

#include <map>

#include "../js_errors.h"

namespace ms {
namespace cuda {

std::string describe(cudaError_t status) {
  return std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
}

void check(cudaError_t status, const std::string& what) {
  if (status == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  const std::string message = what + " (" + describe(status) + ")";
  switch (status) {
    case cudaErrorMemoryAllocation: throw CodedError("CUDA_OUT_OF_MEMORY", message);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable: throw CodedError("BACKEND_UNAVAILABLE", message);
    default: throw CodedError("CUDA_ERROR", message);
  }
}

std::string unavailableReason(int index) {
  int driver = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess || driver == 0) {
    cudaGetLastError();
    return "no CUDA device: no NVIDIA driver is installed (libcuda.so.1 not found)";
  }
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();
    return "no CUDA device (" + describe(status) + ")";
  }
  if (count == 0) return "no CUDA device";
  if (index < 0 || index >= count)
    return "no CUDA device " + std::to_string(index) + " (" + std::to_string(count) + " present)";
  return "";
}

Device& Device::get(int index) {
  static std::mutex mu;
  static std::map<int, std::unique_ptr<Device>> devices;
  std::lock_guard<std::mutex> lock(mu);
  auto it = devices.find(index);
  if (it != devices.end()) return *it->second;
  const std::string why = unavailableReason(index);
  if (!why.empty()) throw CodedError("BACKEND_UNAVAILABLE", why);
  std::unique_ptr<Device> d(new Device(index));
  Device& ref = *d;
  devices.emplace(index, std::move(d));
  return ref;
}

Device::Device(int index) : index_(index) {
  check(cudaSetDevice(index), "cudaSetDevice");
  // Before the context exists: a thread waiting in cudaStreamSynchronize sleeps rather than spins,
  // which keeps the CPU time of a GPU merge low. Refused once a context is active; harmless then.
  if (cudaSetDeviceFlags(cudaDeviceScheduleBlockingSync) != cudaSuccess) cudaGetLastError();
  check(cudaFree(nullptr), "creating the CUDA context on device " + std::to_string(index));
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, index), "cudaGetDeviceProperties");
  name_ = prop.name;
  total_ = prop.totalGlobalMem;
  int pools = 0;
  check(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, index), "cudaDeviceGetAttribute");
  if (pools != 0) {
    check(cudaDeviceGetDefaultMemPool(&pool_, index), "cudaDeviceGetDefaultMemPool");
    // Keep freed blocks for the next tensor instead of returning them at every synchronisation.
    uint64_t keep = UINT64_MAX;
    check(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &keep), "cudaMemPoolSetAttribute");
  }
}

void Device::makeCurrent() const { check(cudaSetDevice(index_), "cudaSetDevice"); }

uint64_t Device::available() const {
  size_t free = 0, total = 0;
  check(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
  uint64_t cached = 0;
  if (pool_ != nullptr) {
    uint64_t reserved = 0, used = 0;
    check(cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrReservedMemCurrent, &reserved), "cudaMemPoolGetAttribute");
    check(cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrUsedMemCurrent, &used), "cudaMemPoolGetAttribute");
    cached = reserved > used ? reserved - used : 0;
  }
  return free + cached;
}

void* Device::allocate(size_t bytes, cudaStream_t stream) const {
  void* p = nullptr;
  const cudaError_t status = pool_ != nullptr ? cudaMallocAsync(&p, bytes, stream) : cudaMalloc(&p, bytes);
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    return nullptr;
  }
  check(status, "allocating " + std::to_string(bytes) + " bytes on CUDA device " + std::to_string(index_));
  return p;
}

void Device::release(void* p, cudaStream_t stream) const {
  if (p == nullptr) return;
  // Errors here are not thrown: a release runs on cleanup paths, often after another error.
  if ((pool_ != nullptr ? cudaFreeAsync(p, stream) : cudaFree(p)) != cudaSuccess) cudaGetLastError();
}

Slot* Device::acquireSlot() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (!idle_.empty()) {
      Slot* s = idle_.back();
      idle_.pop_back();
      return s;
    }
    if (slots_.size() < static_cast<size_t>(kSlots)) break;
    freed_.wait(lock);
  }
  // A new slot (at most kSlots in the device's life), made under the lock: simple, and rare.
  auto slot = std::make_unique<Slot>();
  try {
    makeCurrent();
    check(cudaStreamCreateWithFlags(&slot->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    for (int i = 0; i < 2; ++i) {
      check(cudaHostAlloc(&slot->staging[i], kStagingBytes, cudaHostAllocPortable), "allocating pinned staging");
      check(cudaEventCreateWithFlags(&slot->ready[i], cudaEventDisableTiming | cudaEventBlockingSync),
            "cudaEventCreate");
    }
    check(cudaEventCreateWithFlags(&slot->kernelStart, cudaEventBlockingSync), "cudaEventCreate");
    check(cudaEventCreateWithFlags(&slot->kernelEnd, cudaEventBlockingSync), "cudaEventCreate");
  } catch (...) {
    if (slot->kernelStart != nullptr) cudaEventDestroy(slot->kernelStart);
    if (slot->kernelEnd != nullptr) cudaEventDestroy(slot->kernelEnd);
    for (int i = 0; i < 2; ++i) {
      if (slot->ready[i] != nullptr) cudaEventDestroy(slot->ready[i]);
      if (slot->staging[i] != nullptr) cudaFreeHost(slot->staging[i]);
    }
    if (slot->stream != nullptr) cudaStreamDestroy(slot->stream);
    cudaGetLastError();
    throw;
  }
  slots_.push_back(std::move(slot));
  return slots_.back().get();
}

void Device::releaseSlot(Slot* slot) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    idle_.push_back(slot);
  }
  freed_.notify_one();
}

SlotLease::~SlotLease() {
  if (cudaStreamSynchronize(slot_->stream) != cudaSuccess) cudaGetLastError();
  device_.releaseSlot(slot_);
}

namespace pinned {
namespace {

struct Allocation {
  size_t bytes;
  int uses;
  uint64_t generation;
};

std::mutex mu;
uint64_t generations = 0;
std::map<uintptr_t, Allocation> live;  // by start address

}  // namespace

void* allocate(size_t bytes, uint64_t* generation) {
  Device::get(0).makeCurrent();
  void* p = nullptr;
  // Portable: usable for copies to any device's context, not only device 0's.
  check(cudaHostAlloc(&p, bytes == 0 ? 1 : bytes, cudaHostAllocPortable),
        "allocating " + std::to_string(bytes) + " bytes of pinned host memory");
  std::lock_guard<std::mutex> lock(mu);
  *generation = ++generations;
  live[reinterpret_cast<uintptr_t>(p)] = Allocation{bytes, 0, *generation};
  return p;
}

void free(void* p) {
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = live.find(reinterpret_cast<uintptr_t>(p));
    if (it == live.end()) throw CodedError("INVALID_ARGUMENT", "freeHost: not a live pinned allocation");
    if (it->second.uses > 0) throw CodedError("INVALID_ARGUMENT", "freeHost: the buffer is in use by a pending copy");
    live.erase(it);
  }
  if (cudaFreeHost(p) != cudaSuccess) cudaGetLastError();
}

void finalize(void* p, uint64_t generation) {
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = live.find(reinterpret_cast<uintptr_t>(p));
    if (it == live.end() || it->second.generation != generation) return;  // freed explicitly already
    live.erase(it);
  }
  if (cudaFreeHost(p) != cudaSuccess) cudaGetLastError();
}

bool use(const void* p, size_t bytes) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(mu);
  auto it = live.upper_bound(a);
  if (it == live.begin()) return false;
  --it;
  if (a + bytes > it->first + it->second.bytes) return false;
  ++it->second.uses;
  return true;
}

void unuse(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(mu);
  auto it = live.upper_bound(a);
  if (it == live.begin()) return;
  --it;
  if (it->second.uses > 0) --it->second.uses;
}

}  // namespace pinned

}  // namespace cuda
}  // namespace ms
