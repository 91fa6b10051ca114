#include "session.h"

#include <algorithm>
#include <cstring>

#include "../js_errors.h"
#include "../pool.h"
#include "launch.h"

namespace ms {
namespace cuda {

// Pooled device memory released (stream-ordered) when the call ends, however it ends.
class DeviceBuffer {
 public:
  DeviceBuffer(const Device& d, cudaStream_t stream, void* p) : device_(d), stream_(stream), p_(p) {}
  ~DeviceBuffer() { device_.release(p_, stream_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  // Takes ownership of p (the buffer held nothing before).
  void reset(void* p) { p_ = p; }
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  const Device& device_;
  cudaStream_t stream_;
  void* p_;
};

namespace {

constexpr uint64_t kAlign = 256;  // every input's device region starts on a 256-byte boundary

uint64_t alignUp(uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

std::string mib(uint64_t bytes) { return std::to_string((bytes + (1 << 19)) >> 20) + " MiB"; }

// Host memcpy into or out of a staging buffer, over the pool above 2 MiB: one core copies ~10 GB/s,
// a fifth of what PCIe takes.
void hostCopy(void* dst, const void* src, size_t bytes) {
  constexpr size_t kPiece = size_t{1} << 20;
  if (bytes < 2 * kPiece) {
    std::memcpy(dst, src, bytes);
    return;
  }
  const size_t pieces = (bytes + kPiece - 1) / kPiece;
  parallelFor(pieces, 0, [&](size_t i) {
    const size_t off = i * kPiece;
    std::memcpy(static_cast<uint8_t*>(dst) + off, static_cast<const uint8_t*>(src) + off, std::min(kPiece, bytes - off));
  });
}

// Host → device on the slot's stream: directly from pinned memory, else through the two staging
// buffers, the host copy of one piece overlapping the DMA of the previous one.
void toDevice(Slot& s, PinnedUses& uses, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  if (uses.use(src, bytes)) {
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s.stream), "copying to the device");
    return;
  }
  int i = 0;
  for (size_t off = 0; off < bytes; off += kStagingBytes, i ^= 1) {
    const size_t len = std::min(kStagingBytes, bytes - off);
    check(cudaEventSynchronize(s.ready[i]), "waiting for a staging buffer");  // its last DMA is done
    hostCopy(s.staging[i], static_cast<const uint8_t*>(src) + off, len);
    check(cudaMemcpyAsync(static_cast<uint8_t*>(dst) + off, s.staging[i], len, cudaMemcpyHostToDevice, s.stream),
          "copying to the device");
    check(cudaEventRecord(s.ready[i], s.stream), "cudaEventRecord");
  }
}

// Device → host, after the work queued before it. Pinned destinations are complete once the stream
// is idle; pageable ones are complete when this returns.
void toHost(Slot& s, PinnedUses& uses, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  if (uses.use(dst, bytes)) {
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s.stream), "copying from the device");
    return;
  }
  auto drain = [&](int i, size_t off) {
    check(cudaEventSynchronize(s.ready[i]), "copying from the device");
    hostCopy(static_cast<uint8_t*>(dst) + off, s.staging[i], std::min(kStagingBytes, bytes - off));
  };
  int i = 0;
  size_t off = 0;
  for (; off < bytes; off += kStagingBytes, i ^= 1) {
    const size_t len = std::min(kStagingBytes, bytes - off);
    check(cudaMemcpyAsync(s.staging[i], static_cast<const uint8_t*>(src) + off, len, cudaMemcpyDeviceToHost, s.stream),
          "copying from the device");
    check(cudaEventRecord(s.ready[i], s.stream), "cudaEventRecord");
    if (off > 0) drain(i ^ 1, off - kStagingBytes);  // the previous piece, while this one transfers
  }
  drain(i ^ 1, off - kStagingBytes);
}

uint64_t unitsTouched(const WindowGeometry& w, uint64_t* firstUnit) {
  *firstUnit = w.firstElement / w.unitLength;
  return (w.firstElement + w.count - 1) / w.unitLength - *firstUnit + 1;
}

}  // namespace

Session::~Session() {
  if (resident_ == nullptr) return;
  // Runs when JavaScript dropped an unclosed session: give the memory back without waiting.
  try {
    Device& d = Device::get(spec_.device);
    d.makeCurrent();
    d.release(resident_, nullptr);
  } catch (...) {
  }
}

SessionStats Session::stats() {
  std::lock_guard<std::mutex> lock(statsMu_);
  return stats_;
}

void Session::count(uint64_t inputUp, uint64_t up, uint64_t down) {
  std::lock_guard<std::mutex> lock(statsMu_);
  stats_.uploadedInputBytes += inputUp;
  stats_.uploadedBytes += up;
  stats_.downloadedBytes += down;
}

// Adds the time between the slot's kernel events (the stream must be idle).
void Session::timeKernels(Slot& slot, double* total) {
  float ms = 0;
  check(cudaEventElapsedTime(&ms, slot.kernelStart, slot.kernelEnd), "cudaEventElapsedTime");
  std::lock_guard<std::mutex> lock(statsMu_);
  *total += ms;
}

void Session::checkWindow(const WindowGeometry& w, const char* op) const {
  const std::string where = std::string(op) + ": tensor \"" + spec_.tensor + "\": ";
  if (closed_) throw ArgumentError(where + "the CUDA session is closed");
  if (w.n != spec_.n)
    throw ArgumentError(where + "the window has " + std::to_string(w.n) + " fine-tunes, the session " +
                        std::to_string(spec_.n));
  for (int m = 0; m <= w.n; ++m)
    if (w.inputs[m].dtype != spec_.dtypes[m])
      throw ArgumentError(where + "input " + std::to_string(m) + " is " + dtypeName(w.inputs[m].dtype) +
                          " but the session was opened with " + dtypeName(spec_.dtypes[m]));
  if (w.unitLength != spec_.unitLength)
    throw ArgumentError(where + "unitLength " + std::to_string(w.unitLength) + " differs from the session's " +
                        std::to_string(spec_.unitLength));
  if (w.firstElement + w.count > spec_.count)
    throw ArgumentError(where + "the window ends at element " + std::to_string(w.firstElement + w.count) +
                        ", past the tensor's " + std::to_string(spec_.count));
}

void* Session::allocateOrThrow(Device& d, Slot& slot, uint64_t bytes, const char* what) {
  void* p = d.allocate(bytes, slot.stream);
  if (p != nullptr || bytes == 0) return p;
  throw CodedError("CUDA_OUT_OF_MEMORY",
                   "tensor \"" + spec_.tensor + "\": CUDA device " + std::to_string(d.index()) + " (" + d.name() +
                       ") is out of memory: " + what + " needs " + mib(bytes) + ", " + mib(d.available()) +
                       " available of " + mib(d.total()) + " (a smaller --memory gives smaller windows)");
}

// On the first call: the whole tensor's inputs stay resident when they fit the budget together with
// what one whole-tensor call needs besides (output, partials, coefficients).
void Session::decide(Device& d, Slot& slot) {
  if (stats_.decided) return;
  uint64_t inputs = 0;
  offsets_.clear();
  for (int m = 0; m <= spec_.n; ++m) {
    offsets_.push_back(inputs);
    inputs += alignUp(spec_.count * sizeOfDType(spec_.dtypes[m]));
  }
  const ChunkGeometry whole = chunkGeometry(0, spec_.count, spec_.unitLength);
  uint64_t products = 0;
  for (const GramLaunch& l : planGram(spec_.n)) products += static_cast<uint64_t>(l.q);
  const uint64_t units = spec_.count == 0 ? 0 : (spec_.count - 1) / spec_.unitLength + 1;
  const uint64_t besides = alignUp(spec_.count * sizeOfDType(spec_.outDtype)) +
                           alignUp(chunkCount(whole) * products * 8) + alignUp(units * 16);
  uint64_t budget = d.available();
  if (spec_.budget != 0) budget = std::min(budget, spec_.budget);
  void* p = inputs + besides <= budget ? d.allocate(inputs, slot.stream) : nullptr;
  std::lock_guard<std::mutex> lock(statsMu_);
  stats_.decided = true;
  stats_.resident = p != nullptr;
  stats_.residentBytes = p != nullptr ? inputs : 0;
  resident_ = p;
}

bool Session::covered(uint64_t first, uint64_t count) const {
  for (const auto& [b, e] : uploaded_)
    if (b <= first && first + count <= e) return true;
  return false;
}

void Session::cover(uint64_t first, uint64_t count) {
  uploaded_.emplace_back(first, first + count);
  std::sort(uploaded_.begin(), uploaded_.end());
  std::vector<std::pair<uint64_t, uint64_t>> merged;
  for (const auto& r : uploaded_) {
    if (!merged.empty() && r.first <= merged.back().second)
      merged.back().second = std::max(merged.back().second, r.second);
    else
      merged.push_back(r);
  }
  uploaded_.swap(merged);
}

// Where each input's window lives on the device, uploading it unless the resident copy has it
// already (the Gram pass uploaded it).
Session::Placement Session::place(Device& d, Slot& slot, PinnedUses& uses, const WindowGeometry& w,
                                  DeviceBuffer& window) {
  const bool upload = resident_ == nullptr || !covered(w.firstElement, w.count);
  if (upload)
    for (int m = 0; m <= w.n; ++m)
      if (w.inputs[m].bytes == nullptr)
        throw ArgumentError("tensor \"" + spec_.tensor + "\": the window's inputs were left out, but the session does not hold elements " +
                            std::to_string(w.firstElement) + "…" + std::to_string(w.firstElement + w.count) +
                            (resident_ == nullptr ? " (they did not fit on the device)" : ""));
  Placement pl{};
  uint8_t* base;
  std::vector<uint64_t> offsets;
  if (resident_ != nullptr) {
    base = static_cast<uint8_t*>(resident_);
    for (int m = 0; m <= w.n; ++m) offsets.push_back(offsets_[m] + w.firstElement * sizeOfDType(w.inputs[m].dtype));
  } else {
    uint64_t bytes = 0;
    for (int m = 0; m <= w.n; ++m) {
      offsets.push_back(bytes);
      bytes += alignUp(w.count * sizeOfDType(w.inputs[m].dtype));
    }
    window.reset(allocateOrThrow(d, slot, bytes, "a window of the inputs"));
    base = window.as<uint8_t>();
  }
  uint64_t sent = 0;
  for (int m = 0; m <= w.n; ++m) {
    pl.p[m] = base + offsets[m];
    if (!upload) continue;
    const uint64_t bytes = w.count * sizeOfDType(w.inputs[m].dtype);
    toDevice(slot, uses, base + offsets[m], w.inputs[m].bytes, bytes);
    sent += bytes;
  }
  if (upload && resident_ != nullptr) cover(w.firstElement, w.count);
  count(sent, sent, 0);
  return pl;
}

void Session::gram(const GramWindow& w) {
  std::lock_guard<std::mutex> lock(mu_);
  checkWindow(w, "gram");
  if (w.count == 0) return;
  Device& d = Device::get(spec_.device);
  d.makeCurrent();
  PinnedUses uses;
  SlotLease slot(d);
  decide(d, *slot);
  DeviceBuffer window(d, slot->stream, nullptr);
  const Placement pl = place(d, *slot, uses, w, window);

  const ChunkGeometry g = chunkGeometry(w.firstElement, w.count, w.unitLength);
  const uint64_t chunks = chunkCount(g);
  const std::vector<GramLaunch> plan = planGram(w.n);
  uint64_t products = 0;
  for (const GramLaunch& l : plan) products += static_cast<uint64_t>(l.q);
  DeviceBuffer partials(d, slot->stream, allocateOrThrow(d, *slot, chunks * products * 8, "the Gram partials"));
  const void* pointers[kMaxModels + 1];
  DType dtypes[kMaxModels + 1];
  for (int m = 0; m <= w.n; ++m) {
    pointers[m] = pl.p[m];
    dtypes[m] = w.inputs[m].dtype;
  }
  uint64_t at = 0;
  check(cudaEventRecord(slot->kernelStart, slot->stream), "cudaEventRecord");
  for (const GramLaunch& l : plan) {
    const GramArgs args{l.shape, gramOperands(l, pointers, dtypes), g, chunks, partials.as<double>() + at};
    check(launchGram(args, slot->stream), "tensor \"" + spec_.tensor + "\": launching the Gram kernel");
    at += chunks * static_cast<uint64_t>(l.q);
  }
  check(cudaEventRecord(slot->kernelEnd, slot->stream), "cudaEventRecord");
  std::vector<double> host(chunks * products);
  toHost(*slot, uses, host.data(), partials.as<double>(), host.size() * 8);
  check(cudaStreamSynchronize(slot->stream), "tensor \"" + spec_.tensor + "\": the Gram pass");
  count(0, 0, host.size() * 8);
  timeKernels(*slot, &stats_.gramKernelMs);
  at = 0;
  for (const GramLaunch& l : plan) {
    addPartials(l, g, host.data() + at, w.n, w.gram);
    at += chunks * static_cast<uint64_t>(l.q);
  }
}

void Session::interpolate(const InterpolateWindow& w) {
  std::lock_guard<std::mutex> lock(mu_);
  checkWindow(w, "interpolate");
  if (w.outDtype != spec_.outDtype)
    throw ArgumentError(std::string("interpolate: tensor \"") + spec_.tensor + "\": outDtype " +
                        dtypeName(w.outDtype) + " differs from the session's " + dtypeName(spec_.outDtype));
  if (w.count == 0) return;
  Device& d = Device::get(spec_.device);
  d.makeCurrent();
  PinnedUses uses;
  SlotLease slot(d);
  decide(d, *slot);
  DeviceBuffer window(d, slot->stream, nullptr);
  const Placement pl = place(d, *slot, uses, w, window);

  uint64_t firstUnit;
  const uint64_t units = unitsTouched(w, &firstUnit);
  std::vector<double> ab(2 * units);
  unitCoefficients(w.t, firstUnit, units, w.n, ab.data());
  DeviceBuffer coefficients(d, slot->stream, allocateOrThrow(d, *slot, ab.size() * 8, "the per-unit ratios"));
  toDevice(*slot, uses, coefficients.as<double>(), ab.data(), ab.size() * 8);
  const uint64_t outBytes = w.count * sizeOfDType(w.outDtype);
  DeviceBuffer out(d, slot->stream, allocateOrThrow(d, *slot, outBytes, "the output window"));

  InterpolateArgs args{};
  DType dtypes[kMaxModels + 1];
  for (int m = 0; m <= w.n; ++m) {
    args.inputs.p[m] = pl.p[m];
    args.inputs.dt[m] = dtypes[m] = w.inputs[m].dtype;
  }
  args.n = w.n;
  args.wide = wideInterpolation(dtypes, w.n, w.outDtype);
  args.count = w.count;
  args.firstElement = w.firstElement;
  args.unitLength = w.unitLength;
  args.firstUnit = firstUnit;
  args.coefficients = coefficients.as<double>();
  args.out = out.as<void>();
  args.outDtype = w.outDtype;
  check(cudaEventRecord(slot->kernelStart, slot->stream), "cudaEventRecord");
  check(launchInterpolate(args, slot->stream), "tensor \"" + spec_.tensor + "\": launching the interpolation kernel");
  check(cudaEventRecord(slot->kernelEnd, slot->stream), "cudaEventRecord");
  toHost(*slot, uses, w.out, out.as<void>(), outBytes);
  check(cudaStreamSynchronize(slot->stream), "tensor \"" + spec_.tensor + "\": the interpolation pass");
  count(0, ab.size() * 8, outBytes);
  timeKernels(*slot, &stats_.interpolateKernelMs);
}

void Session::close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return;
  closed_ = true;
  if (resident_ == nullptr) return;
  Device& d = Device::get(spec_.device);
  d.makeCurrent();
  SlotLease slot(d);
  d.release(resident_, slot->stream);
  resident_ = nullptr;
}

}  // namespace cuda
}  // namespace ms
