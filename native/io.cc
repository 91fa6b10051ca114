// Reading files through read-only mappings whose views keep the mapping alive, and read-ahead hints.
// (Reads into buffers: reader.cc.) POSIX only; on Windows these report that they are unavailable.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "args.h"
#include "exports.h"
#include "fault_guard.h"
#include "js_errors.h"
#include "promise_worker.h"

#if !defined(_WIN32)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace ms {
namespace {

// Node 20 aborts the process on an external ArrayBuffer over 4 GiB − 1.
constexpr uint64_t kMaxView = 0xFFFFFFFFull;

#if !defined(_WIN32)

// One mapping of a whole file, unmapped when the last owner (handle or view) lets go. Its range is
// guarded (fault_guard.h): a page that can no longer be read faults into zeros and a flag, not SIGBUS.
struct Mapping {
  std::string path;
  uint8_t* addr = nullptr;
  uint64_t size = 0;
  GuardedRegion* guard = nullptr;
  // Unmaps now (mapClose, once every view is detached) rather than when the last view is collected.
  void close() {
    unguardRegion(guard);
    guard = nullptr;
    if (addr != nullptr) ::munmap(addr, size);
    addr = nullptr;
  }
  ~Mapping() { close(); }
};
using MappingRef = std::shared_ptr<Mapping>;

std::shared_ptr<Mapping> openMapping(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IoError(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw IoError(path + ": cannot stat: " + std::strerror(e));
  }
  auto m = std::make_shared<Mapping>();
  m->path = path;
  m->size = static_cast<uint64_t>(st.st_size);
  if (m->size > 0) {
    // Private and writable, so a stray write from JS copies the page instead of faulting or reaching
    // the file; MAP_NORESERVE so the kernel does not charge the whole file to the commit limit (without
    // it a 64 GiB file failed with ENOMEM on a 23 GiB machine). Where the commit limit is strict
    // (vm.overcommit_memory = 2) that still fails, and the mapping falls back to read-only: a write
    // through a view then faults, as with any read-only mapping.
    int flags = MAP_PRIVATE;
#ifdef MAP_NORESERVE
    flags |= MAP_NORESERVE;
#endif
    void* p = ::mmap(nullptr, m->size, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (p == MAP_FAILED && errno == ENOMEM) p = ::mmap(nullptr, m->size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      throw IoError(path + ": cannot map " + std::to_string(m->size) + " bytes: " + std::strerror(e));
    }
    m->addr = static_cast<uint8_t*>(p);
    m->guard = guardRegion(p, static_cast<size_t>(m->size));
  }
  ::close(fd);  // the mapping holds its own reference to the file
  return m;
}

void releaseHandle(napi_env, void* data, void*) { delete static_cast<MappingRef*>(data); }

MappingRef* unwrapHandle(Napi::Env env, Napi::Value v, const char* op) {
  void* data = nullptr;
  if (!v.IsObject() || napi_unwrap(env, v, &data) != napi_ok || data == nullptr)
    throw codedError(env, std::string(op) + ": expected a mapping from mapFile", "INVALID_ARGUMENT");
  return static_cast<MappingRef*>(data);
}

// Read-ahead of bytes the merge needs next, on a worker: submitting the reads can block (request queue
// full, page allocation), which the event loop must never wait for. Advice only: a failure (a file
// system without read-ahead) changes nothing but speed, so it is not reported. Never DONTNEED: input
// pages stay cached for whoever reads them next.
class WillNeedWorker : public PromiseWorker {
 public:
  WillNeedWorker(Napi::Env env, int fd, MappingRef mapping, uint64_t offset, uint64_t length)
      : PromiseWorker(env, "model-stock:willNeed"),
        fd_(fd),
        mapping_(std::move(mapping)),
        offset_(offset),
        length_(length) {}

 protected:
  // Linux reads at most max(read_ahead_kb, max_sectors_kb) per hint (force_page_cache_ra), 128 KiB
  // with default settings, whatever length it is given: a tensor is advised in pieces of that size.
  static constexpr uint64_t kPiece = 128 * 1024;

  void Run() override {
    const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    for (uint64_t at = offset_; at < offset_ + length_; at += kPiece) {
      const uint64_t n = std::min(kPiece, offset_ + length_ - at);
      if (mapping_) {
        const uintptr_t start = reinterpret_cast<uintptr_t>(mapping_->addr + at);
        const uintptr_t aligned = start & ~(page - 1);
        ::madvise(reinterpret_cast<void*>(aligned), static_cast<size_t>(start + n - aligned), MADV_WILLNEED);
      } else {
#if defined(POSIX_FADV_WILLNEED)
        ::posix_fadvise(fd_, static_cast<off_t>(at), static_cast<off_t>(n), POSIX_FADV_WILLNEED);
#endif
      }
    }
  }

 private:
  int fd_;
  MappingRef mapping_;  // keeps the mapping alive until the advice is given
  uint64_t offset_;
  uint64_t length_;
};

#endif

}  // namespace

Napi::Value MapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw codedError(env, "mapFile: expected a path string", "INVALID_ARGUMENT");
#if defined(_WIN32)
  throw codedError(env, "mapFile: not available on Windows", "NATIVE_ERROR");
#else
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  MappingRef mapping;
  try {
    mapping = openMapping(path);
  } catch (const IoError& e) {
    throw codedError(env, e.what(), "IO_ERROR");
  }
  Napi::Object handle = Napi::Object::New(env);
  handle.DefineProperties({
      Napi::PropertyDescriptor::Value("path", Napi::String::New(env, path), napi_enumerable),
      Napi::PropertyDescriptor::Value("size", Napi::Number::New(env, static_cast<double>(mapping->size)),
                                      napi_enumerable),
  });
  auto* ref = new MappingRef(std::move(mapping));
  if (napi_wrap(env, handle, ref, releaseHandle, nullptr, nullptr) != napi_ok) {
    delete ref;
    throw codedError(env, "mapFile: cannot attach the mapping to its handle", "NATIVE_ERROR");
  }
  return handle;
#endif
}

Napi::Value MapView(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if defined(_WIN32)
  throw codedError(env, "mapView: not available on Windows", "NATIVE_ERROR");
#else
  MappingRef* ref = unwrapHandle(env, info[0], "mapView");
  if (!*ref) throw codedError(env, "mapView: the mapping was unmapped", "INVALID_ARGUMENT");
  const Mapping& m = **ref;
  uint64_t offset, length;
  if (!safeInteger(info[1], 0, &offset)) throw codedError(env, "mapView: expected a safe integer ≥ 0 for offset", "INVALID_ARGUMENT");
  if (!safeInteger(info[2], 0, &length)) throw codedError(env, "mapView: expected a safe integer ≥ 0 for length", "INVALID_ARGUMENT");
  if (offset > m.size || length > m.size - offset)
    throw codedError(env,
                     "mapView: bytes [" + std::to_string(offset) + ", " + std::to_string(offset + length) +
                         ") lie outside " + m.path + " (" + std::to_string(m.size) + " bytes)",
                     "INVALID_ARGUMENT");
  if (length > kMaxView)
    throw codedError(env, "mapView: a view must be under 4 GiB (Node aborts on larger external buffers); got " +
                              std::to_string(length) + " bytes",
                     "INVALID_ARGUMENT");
  if (length == 0) return Napi::Uint8Array::New(env, 0);
  uint8_t* start = m.addr + offset;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  uint8_t* aligned = reinterpret_cast<uint8_t*>(reinterpret_cast<uintptr_t>(start) & ~(page - 1));
  const size_t span = static_cast<size_t>(start + length - aligned);
  // Advice only: a failure changes nothing but speed. Read-ahead is asked for by mapWillNeed, on a
  // worker: submitting reads here would block the event loop.
  ::madvise(aligned, span, MADV_SEQUENTIAL);
  auto* keep = new MappingRef(*ref);
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(
      env, start, static_cast<size_t>(length), [](Napi::Env, void*, MappingRef* k) { delete k; }, keep);
  return Napi::Uint8Array::New(env, static_cast<size_t>(length), buffer, 0);
#endif
}

Napi::Value MapRelease(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if !defined(_WIN32)
  MappingRef* ref = unwrapHandle(env, info[0], "mapRelease");
  if (!*ref) return env.Undefined();
  const Mapping& m = **ref;
  uint64_t offset, length;
  if (!safeInteger(info[1], 0, &offset) || !safeInteger(info[2], 0, &length) || offset > m.size ||
      length > m.size - offset)
    throw codedError(env, "mapRelease: expected a byte range inside " + m.path, "INVALID_ARGUMENT");
  // Drops the range's pages from this process (they stay in the page cache): mapped pages count in
  // RSS, and a merge that maps every input would otherwise hold them all. The range is widened to 2 MiB
  // blocks: a fault maps cached pages around it (fault-around, and whole large folios on recent
  // kernels, measured here up to 1 MiB), so touching the start of one tensor maps the tail of the
  // previous one, and without the widening those pages were never dropped (measured: RSS grew ~0.3 MiB
  // per tensor). Dropping a neighbour's pages that are still in use is safe: the mapping is private and
  // never written, and an access faults them back in.
  constexpr uintptr_t kFaultAround = 2 * 1024 * 1024;
  const uintptr_t lo = reinterpret_cast<uintptr_t>(m.addr);
  const uintptr_t hi = lo + static_cast<uintptr_t>(m.size);
  const uintptr_t start = reinterpret_cast<uintptr_t>(m.addr + offset);
  const uintptr_t from = std::max(lo, start & ~(kFaultAround - 1));
  const uintptr_t to = std::min(hi, (start + static_cast<uintptr_t>(length) + kFaultAround - 1) & ~(kFaultAround - 1));
  if (to > from) ::madvise(reinterpret_cast<void*>(from), static_cast<size_t>(to - from), MADV_DONTNEED);
#endif
  return env.Undefined();
}

Napi::Value MapFault(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if !defined(_WIN32)
  MappingRef* ref = unwrapHandle(env, info[0], "mapFault");
  uint64_t offset = 0;
  if (*ref && regionFaulted((*ref)->guard, &offset)) return Napi::Number::New(env, static_cast<double>(offset));
#endif
  return env.Undefined();
}

Napi::Value Unmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if !defined(_WIN32)
  unwrapHandle(env, info[0], "unmap")->reset();
#endif
  return env.Undefined();
}

// fileWillNeed(fd, offset, length) → Promise<void>: posix_fadvise(WILLNEED) on a file range.
Napi::Value FileWillNeed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t fd, offset, length;
  if (!safeInteger(info[0], 0, &fd) || fd > 0x7FFFFFFF)
    return rejected(env, "fileWillNeed: expected a file descriptor for fd", "INVALID_ARGUMENT");
  if (!safeInteger(info[1], 0, &offset) || !safeInteger(info[2], 0, &length))
    return rejected(env, "fileWillNeed: expected safe integers ≥ 0 for offset and length", "INVALID_ARGUMENT");
#if defined(_WIN32)
  return rejected(env, "fileWillNeed: not available on Windows", "NATIVE_ERROR");
#else
  return queued<WillNeedWorker>(env, static_cast<int>(fd), nullptr, offset, length);
#endif
}

// mapWillNeed(mapping, offset, length) → Promise<void>: madvise(WILLNEED) on a range of a mapping.
Napi::Value MapWillNeed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if defined(_WIN32)
  return rejected(env, "mapWillNeed: not available on Windows", "NATIVE_ERROR");
#else
  void* data = nullptr;
  if (!info[0].IsObject() || napi_unwrap(env, info[0], &data) != napi_ok || data == nullptr)
    return rejected(env, "mapWillNeed: expected a mapping from mapFile", "INVALID_ARGUMENT");
  MappingRef mapping = *static_cast<MappingRef*>(data);
  if (!mapping) {  // unmapped: nothing left to advise
    Napi::Promise::Deferred done = Napi::Promise::Deferred::New(env);
    done.Resolve(env.Undefined());
    return done.Promise();
  }
  uint64_t offset, length;
  if (!safeInteger(info[1], 0, &offset) || !safeInteger(info[2], 0, &length) || offset > mapping->size ||
      length > mapping->size - offset)
    return rejected(env, "mapWillNeed: expected a byte range inside " + mapping->path, "INVALID_ARGUMENT");
  return queued<WillNeedWorker>(env, -1, std::move(mapping), offset, length);
#endif
}

Napi::Value MapClose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if !defined(_WIN32)
  MappingRef* ref = unwrapHandle(env, info[0], "mapClose");
  if (!info[1].IsArray()) throw codedError(env, "mapClose: expected an array of views", "INVALID_ARGUMENT");
  Napi::Array views = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < views.Length(); ++i) {
    Napi::Value v = views.Get(i);
    if (!v.IsTypedArray()) throw codedError(env, "mapClose: expected views from mapView", "INVALID_ARGUMENT");
  }
  // Every view first loses its bytes (JS sees empty arrays from now on), then the pages go: nothing
  // can reach the unmapped range. The caller has settled every read and kernel that used them.
  for (uint32_t i = 0; i < views.Length(); ++i) {
    Napi::ArrayBuffer buffer = views.Get(i).As<Napi::TypedArray>().ArrayBuffer();
    if (buffer.ByteLength() > 0 && !buffer.IsDetached()) buffer.Detach();
  }
  if (*ref) (*ref)->close();
  ref->reset();
#endif
  return env.Undefined();
}

}  // namespace ms
