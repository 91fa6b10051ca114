// Input files read by the engine's own threads, straight into the pipeline's buffers: O_DIRECT
// (nothing enters the page cache, nothing has to be reclaimed, nothing faults inside a kernel) or
// buffered pread where the file system refuses it. The JS side (lib/engine/fileSource.ts) lays every
// read out so that its bytes land at the same offset within a 4 KiB block as they lie in the file: the
// region it hands over starts at a block boundary of the file, so whole blocks are read into it by DMA,
// heads and tails included, and no byte is copied. A region that is not laid out that way (a caller's
// own buffer) is read through an aligned bounce block and copied.
//
// Reads are split into chunks and run on a small pool of I/O threads of their own, so the disk sees
// several requests per input at once (cat's read-ahead does that for buffered reads; O_DIRECT has none)
// and the compute threads and libuv's pool are never blocked on the disk. A batch (the reads of one
// pipeline step) settles its Promise from the thread that finishes its last chunk, through a
// thread-safe function: no libuv thread waits on a batch, so any number may be in flight.
//
// Refusals, as native/writer.cc handles them: a file system that refuses O_DIRECT at open (ramfs: EINVAL)
// is read buffered from the start; one that accepts the flag but refuses the first read (alignment
// larger than ours, some FUSE file systems) has the flag cleared and the read retried buffered. Either way
// inputFileInfo() says so, and the report names the reason. Tests inject both (`refuse`).
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "args.h"
#include "exports.h"
#include "js_errors.h"
#include "promise_worker.h"

#if !defined(_WIN32)
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace ms {
namespace {

// O_DIRECT needs offsets, lengths and memory aligned to the device's logical block (512 B or 4 KiB).
constexpr uint64_t kAlign = 4096;
// The most I/O threads the pool grows to, whatever is asked.
constexpr unsigned kMaxIoThreads = 64;

constexpr uint64_t alignDown(uint64_t v) { return v & ~(kAlign - 1); }
constexpr uint64_t alignUp(uint64_t v) { return (v + kAlign - 1) & ~(kAlign - 1); }

std::string errnoText(int e) { return std::strerror(e); }

#if !defined(_WIN32)

// Live in this process, for inputReaderStats: a cancelled or failed merge must leave none behind.
std::atomic<int64_t> gOpenInputs{0};
std::atomic<int64_t> gBatchesInFlight{0};

// Failures injected by tests (lib/engine/fileSource.ts reads MODEL_STOCK_TEST_REFUSE_READ): the calls
// answer EINVAL as a file system that refuses them would.
struct Refusals {
  bool open = false;  // open(O_DIRECT)
  bool read = false;  // the first O_DIRECT read
};

struct InputFile {
  std::string path;
  int fd = -1;
  uint64_t size = 0;
  Refusals refuse;
  std::atomic<bool> direct{false};
  std::atomic<bool> refusedOnce{false};
  std::mutex m;          // fallback
  std::string fallback;  // why reads are buffered although direct was asked for

  ~InputFile() {
    if (fd >= 0) {
      ::close(fd);
      gOpenInputs--;
    }
  }

  std::string why() {
    std::lock_guard<std::mutex> lock(m);
    return fallback;
  }

  // From here on every read of this file is buffered; the first reason given is kept.
  void downgrade(const std::string& reason) {
    std::lock_guard<std::mutex> lock(m);
    if (!direct.load()) return;
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_DIRECT);
    direct.store(false);
    if (fallback.empty()) fallback = reason;
  }
};
using InputFileRef = std::shared_ptr<InputFile>;

// Opens `path` read-only; with O_DIRECT when asked and the file system takes it.
InputFileRef openInput(const std::string& path, bool direct, Refusals refuse) {
  auto f = std::make_shared<InputFile>();
  f->path = path;
  f->refuse = refuse;
  if (direct) {
    f->fd = refuse.open ? (errno = EINVAL, -1) : ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (f->fd >= 0) {
      f->direct.store(true);
    } else if (errno == EINVAL || errno == EOPNOTSUPP) {
      f->fallback = "O_DIRECT refused (" + errnoText(errno) + ")";
    } else {
      throw IoError(path + ": cannot open: " + errnoText(errno));
    }
  }
  if (f->fd < 0) {
    f->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) throw IoError(path + ": cannot open: " + errnoText(errno));
  }
  gOpenInputs++;
  struct stat st;
  if (::fstat(f->fd, &st) != 0) throw IoError(path + ": cannot stat: " + errnoText(errno));
  f->size = static_cast<uint64_t>(st.st_size);
  return f;
}

// One read of a batch: file bytes [position, position + length) land at target[head …]; target is the
// whole region the caller set aside (laid out for direct reads when it starts at a block boundary of
// the file: position − head aligned, target and its length aligned).
struct ReadJob {
  InputFileRef file;
  uint64_t position;
  uint64_t length;
  uint8_t* target;
  uint64_t targetLength;
  uint64_t head;
};

struct Chunk {
  size_t job;
  uint64_t begin, end;  // file offsets, within the job's range
};

class Batch;
void settleOnJsThread(Napi::Env env, Napi::Function, void*, Batch* batch);

// What the pool runs: one chunk of one batch.
struct IoTask {
  Batch* batch;
  size_t chunk;
};

class IoPool {
 public:
  void submit(std::vector<IoTask> tasks, unsigned threads) {
    {
      std::lock_guard<std::mutex> lock(m_);
      const unsigned want = std::min(kMaxIoThreads, std::max(1u, threads));
      while (workers_.size() < want) workers_.emplace_back([this] { loop(); });
      for (IoTask& t : tasks) queue_.push_back(t);
    }
    wake_.notify_all();
  }

  size_t threads() {
    std::lock_guard<std::mutex> lock(m_);
    return workers_.size();
  }

 private:
  void loop();

  std::mutex m_;
  std::condition_variable wake_;
  std::deque<IoTask> queue_;
  std::vector<std::thread> workers_;
};

// Never destroyed: an I/O thread may still be finishing a chunk while the process exits.
IoPool& ioPool() {
  static IoPool* p = new IoPool();
  return *p;
}

using Settle = Napi::TypedThreadSafeFunction<void, Batch, settleOnJsThread>;

class Batch {
 public:
  Batch(Napi::Env env, std::vector<ReadJob> jobs, uint64_t chunkBytes, const int32_t* abort)
      : deferred_(Napi::Promise::Deferred::New(env)), jobs_(std::move(jobs)), abort_(abort) {
    // Chunk boundaries at multiples of chunkBytes from the block the job starts in, so that every
    // chunk but a job's first and last covers whole blocks and no two chunks share one. Round-robin
    // over the jobs: each input has its share of requests in flight at once.
    std::vector<std::vector<Chunk>> perJob(jobs_.size());
    for (size_t j = 0; j < jobs_.size(); j++) {
      const ReadJob& r = jobs_[j];
      const uint64_t origin = alignDown(r.position);
      for (uint64_t at = r.position; at < r.position + r.length;) {
        const uint64_t next = std::min(r.position + r.length, origin + ((at - origin) / chunkBytes + 1) * chunkBytes);
        perJob[j].push_back({j, at, next});
        at = next;
      }
    }
    for (size_t k = 0;; k++) {
      bool any = false;
      for (auto& list : perJob) {
        if (k < list.size()) {
          chunks_.push_back(list[k]);
          any = true;
        }
      }
      if (!any) break;
    }
    remaining_.store(chunks_.size());
    gBatchesInFlight++;
  }

  ~Batch() { gBatchesInFlight--; }

  Napi::Promise promise() const { return deferred_.Promise(); }
  size_t chunks() const { return chunks_.size(); }
  size_t jobs() const { return jobs_.size(); }
  void keep(Napi::Object o) { kept_.push_back(Napi::Persistent(o)); }
  void setSettle(Settle settle) { settle_ = settle; }

  // On an I/O thread.
  void run(size_t index) {
    if (!failed_.load() && !(abort_ != nullptr && __atomic_load_n(abort_, __ATOMIC_RELAXED) != 0)) {
      try {
        read(chunks_[index]);
      } catch (const IoError& e) {
        fail(e.what(), "IO_ERROR");
      } catch (const std::exception& e) {
        fail(e.what(), "NATIVE_ERROR");
      }
    }
    if (remaining_.fetch_sub(1) == 1) {
      if (!failed_.load() && abort_ != nullptr && __atomic_load_n(abort_, __ATOMIC_RELAXED) != 0)
        fail("cancelled", "CANCELLED");
      Settle settle = settle_;
      settle.BlockingCall(this);
      settle.Release();
    }
  }

  // On the JS thread, once every chunk is done.
  void settle(Napi::Env env) {
    kept_.clear();
    if (failed_.load())
      deferred_.Reject(codedError(env, error_, code_).Value());
    else
      deferred_.Resolve(env.Undefined());
  }

 private:
  void fail(const std::string& message, const char* code) {
    std::lock_guard<std::mutex> lock(m_);
    if (failed_.load()) return;
    error_ = message;
    code_ = code;
    failed_.store(true);
  }

  void read(const Chunk& c) {
    const ReadJob& r = jobs_[c.job];
    InputFile& f = *r.file;
    uint8_t* dst = r.target + r.head + (c.begin - r.position);
    if (f.direct.load()) {
      const uint64_t lo = alignDown(c.begin), hi = alignUp(c.end);
      const uint64_t spanStart = r.head <= r.position ? r.position - r.head : 1;  // 1: never aligned
      const bool laidOut = reinterpret_cast<uintptr_t>(r.target) % kAlign == 0 && r.targetLength % kAlign == 0 &&
                           spanStart % kAlign == 0 && hi - spanStart <= r.targetLength;
      if (laidOut) {
        if (readDirect(f, lo, r.target + (lo - spanStart), hi - lo, c.end - lo)) return;
      } else {
        std::unique_ptr<uint8_t, decltype(&std::free)> bounce(nullptr, &std::free);
        void* p = nullptr;
        if (posix_memalign(&p, kAlign, static_cast<size_t>(hi - lo)) != 0 || p == nullptr)
          throw std::runtime_error("out of memory allocating a " + std::to_string(hi - lo) + "-byte bounce block");
        bounce.reset(static_cast<uint8_t*>(p));
        if (readDirect(f, lo, bounce.get(), hi - lo, c.end - lo)) {
          std::memcpy(dst, bounce.get() + (c.begin - lo), static_cast<size_t>(c.end - c.begin));
          return;
        }
      }
      // Refused: the file is read buffered from now on (downgraded in readDirect).
    }
    readBuffered(f, c.begin, dst, c.end - c.begin);
  }

  // Reads file bytes [from, from + span) into dst (aligned) until at least `need` bytes arrived (the
  // file may end after those). False when the file system refused the O_DIRECT read.
  static bool readDirect(InputFile& f, uint64_t from, uint8_t* dst, uint64_t span, uint64_t need) {
    uint64_t done = 0;
    while (done < need) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(span - done, 1u << 30));
      const bool inject = f.refuse.read && !f.refusedOnce.exchange(true);
      const ssize_t got = inject ? (errno = EINVAL, -1) : ::pread(f.fd, dst + done, want, static_cast<off_t>(from + done));
      if (got < 0) {
        if (errno == EINTR) continue;
        // EINVAL on a file opened with O_DIRECT: the file system (or its alignment) refuses it.
        if (errno == EINVAL && done == 0) {
          f.downgrade("O_DIRECT read refused (" + errnoText(errno) + ")");
          return false;
        }
        throw IoError(readFailed(f, from + done, errno));
      }
      if (got == 0) throw IoError(shortRead(f, from + done, need - done));
      // A direct read stops early only at the end of the file: the rest is read from there.
      done += static_cast<uint64_t>(got);
      if (done < need && (done % kAlign) != 0) throw IoError(shortRead(f, from + done, need - done));
    }
    return true;
  }

  static void readBuffered(InputFile& f, uint64_t from, uint8_t* dst, uint64_t length) {
    uint64_t done = 0;
    while (done < length) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(length - done, 1u << 30));
      const ssize_t got = ::pread(f.fd, dst + done, want, static_cast<off_t>(from + done));
      if (got < 0) {
        if (errno == EINTR) continue;
        throw IoError(readFailed(f, from + done, errno));
      }
      if (got == 0) throw IoError(shortRead(f, from + done, length - done));
      done += static_cast<uint64_t>(got);
    }
  }

  static std::string readFailed(const InputFile& f, uint64_t at, int e) {
    return f.path + ": read failed at byte " + std::to_string(at) + ": " + errnoText(e);
  }

  static std::string shortRead(const InputFile& f, uint64_t at, uint64_t missing) {
    return f.path + ": short read: the file ended at byte " + std::to_string(at) + ", " + std::to_string(missing) +
           " bytes before the end of the range read (truncated by another program during the merge?)";
  }

  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> kept_;  // JS thread only
  std::vector<ReadJob> jobs_;
  std::vector<Chunk> chunks_;
  const int32_t* abort_;
  Settle settle_;
  std::atomic<size_t> remaining_{0};
  std::atomic<bool> failed_{false};
  std::mutex m_;
  std::string error_;
  const char* code_ = "NATIVE_ERROR";
};

void IoPool::loop() {
  for (;;) {
    IoTask task;
    {
      std::unique_lock<std::mutex> lock(m_);
      wake_.wait(lock, [&] { return !queue_.empty(); });
      task = queue_.front();
      queue_.pop_front();
    }
    task.batch->run(task.chunk);
  }
}

void settleOnJsThread(Napi::Env env, Napi::Function, void*, Batch* batch) {
  // env is null when the environment is going away: nothing to settle, only memory to free.
  if (static_cast<napi_env>(env) != nullptr) batch->settle(env);
  delete batch;
}

void releaseHandle(napi_env, void* data, void*) { delete static_cast<InputFileRef*>(data); }

InputFileRef* unwrapInput(Napi::Env env, Napi::Value v) {
  void* data = nullptr;
  if (!v.IsObject() || napi_unwrap(env, v, &data) != napi_ok || data == nullptr) return nullptr;
  return static_cast<InputFileRef*>(data);
}

class OpenWorker : public PromiseWorker {
 public:
  OpenWorker(Napi::Env env, std::string path, bool direct, Refusals refuse)
      : PromiseWorker(env, "model-stock:openInputFile"), path_(std::move(path)), direct_(direct), refuse_(refuse) {}

 protected:
  void Run() override { file_ = openInput(path_, direct_, refuse_); }

  Napi::Value Result() override {
    Napi::Env env = Env();
    Napi::Object handle = Napi::Object::New(env);
    handle.Set("path", file_->path);
    handle.Set("size", Napi::Number::New(env, static_cast<double>(file_->size)));
    handle.Set("fd", Napi::Number::New(env, file_->fd));
    auto* ref = new InputFileRef(file_);
    if (napi_wrap(env, handle, ref, releaseHandle, nullptr, nullptr) != napi_ok) {
      delete ref;  // the file closes when the last reference goes
      return env.Undefined();
    }
    return handle;
  }

 private:
  std::string path_;
  bool direct_;
  Refusals refuse_;
  InputFileRef file_;
};

// The fraction of a file in the page cache: mincore(2) over a read-only shared mapping, in 1 GiB
// slices. The kernel answers truthfully only for files the caller owns or may write (since Linux
// 5.2; for others it reports every page resident), so `exact` says whether the answer can be trusted.
struct Residency {
  uint64_t size = 0;
  uint64_t resident = 0;
  bool exact = false;
  std::string error;
};

Residency measureResidency(const std::string& path) {
  Residency r;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    r.error = "cannot open: " + errnoText(errno);
    return r;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    r.error = "cannot stat: " + errnoText(errno);
    ::close(fd);
    return r;
  }
  r.size = static_cast<uint64_t>(st.st_size);
  r.exact = ::geteuid() == 0 || st.st_uid == ::geteuid() || ::faccessat(AT_FDCWD, path.c_str(), W_OK, AT_EACCESS) == 0;
  if (r.size == 0) {
    ::close(fd);
    return r;
  }
  void* p = ::mmap(nullptr, static_cast<size_t>(r.size), PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) {
    r.error = "cannot map: " + errnoText(errno);
    r.exact = false;
    return r;
  }
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  constexpr uint64_t kSlice = uint64_t{1} << 30;
  std::vector<unsigned char> vec(static_cast<size_t>(kSlice / page));
  for (uint64_t at = 0; at < r.size; at += kSlice) {
    const uint64_t n = std::min(kSlice, r.size - at);
    const uint64_t pages = (n + page - 1) / page;
    if (::mincore(static_cast<uint8_t*>(p) + at, static_cast<size_t>(n), vec.data()) != 0) {
      r.error = "mincore: " + errnoText(errno);
      r.exact = false;
      break;
    }
    for (uint64_t i = 0; i < pages; i++)
      if (vec[i] & 1) r.resident += std::min(page, n - i * page);
  }
  ::munmap(p, static_cast<size_t>(r.size));
  return r;
}

class ResidencyWorker : public PromiseWorker {
 public:
  ResidencyWorker(Napi::Env env, std::vector<std::string> paths)
      : PromiseWorker(env, "model-stock:inputResidency"), paths_(std::move(paths)) {}

 protected:
  void Run() override {
    for (const std::string& p : paths_) results_.push_back(measureResidency(p));
  }

  Napi::Value Result() override {
    Napi::Env env = Env();
    Napi::Array out = Napi::Array::New(env, results_.size());
    for (size_t i = 0; i < results_.size(); i++) {
      const Residency& r = results_[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("size", Napi::Number::New(env, static_cast<double>(r.size)));
      o.Set("resident", Napi::Number::New(env, static_cast<double>(r.resident)));
      o.Set("exact", Napi::Boolean::New(env, r.exact));
      if (!r.error.empty()) o.Set("error", r.error);
      out.Set(static_cast<uint32_t>(i), o);
    }
    return out;
  }

 private:
  std::vector<std::string> paths_;
  std::vector<Residency> results_;
};

// Whether a folder's file system takes O_DIRECT: a probe file created there (never an existing name,
// removed after) is written and read back with O_DIRECT; where no file can be created (read-only), an
// existing regular file is read with O_DIRECT instead. Each answer is "" (taken) or why not.
struct Probe {
  std::string read = "not tried";
  std::string write = "not tried";
  std::string file;
};

std::string tryDirectRead(const std::string& path, uint8_t* block) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
  if (fd < 0) return "open with O_DIRECT: " + errnoText(errno);
  const ssize_t got = ::pread(fd, block, kAlign, 0);
  const int e = errno;
  ::close(fd);
  if (got < 0) return "O_DIRECT read: " + errnoText(e);
  return "";
}

Probe probeDirect(const std::string& dir) {
  Probe p;
  void* mem = nullptr;
  if (posix_memalign(&mem, kAlign, kAlign) != 0 || mem == nullptr) throw std::runtime_error("out of memory");
  std::unique_ptr<uint8_t, decltype(&std::free)> block(static_cast<uint8_t*>(mem), &std::free);
  std::memset(block.get(), 0x5a, kAlign);
  static std::atomic<unsigned> counter{0};
  const std::string probe = dir + "/.model-stock-direct-probe-" + std::to_string(::getpid()) + "-" +
                            std::to_string(counter.fetch_add(1));
  // Created without the flag (a file system that refuses O_DIRECT may still create the file first),
  // then switched to O_DIRECT for the write.
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_DIRECT) != 0) {
      p.write = "O_DIRECT refused: " + errnoText(errno);
      const ssize_t put = ::pwrite(fd, block.get(), kAlign, 0);
      if (put != static_cast<ssize_t>(kAlign)) p.read = "cannot write a probe file: " + errnoText(errno);
    } else {
      const ssize_t put = ::pwrite(fd, block.get(), kAlign, 0);
      p.write = put == static_cast<ssize_t>(kAlign) ? "" : "O_DIRECT write: " + errnoText(errno);
      if (put != static_cast<ssize_t>(kAlign)) {
        ::fcntl(fd, F_SETFL, flags);
        if (::pwrite(fd, block.get(), kAlign, 0) != static_cast<ssize_t>(kAlign))
          p.read = "cannot write a probe file: " + errnoText(errno);
      }
    }
    ::close(fd);
    if (p.read == "not tried") p.read = tryDirectRead(probe, block.get());
    ::unlink(probe.c_str());
    p.file = probe;
    return p;
  }
  p.write = "cannot create a probe file: " + errnoText(errno);
  // Read-only here: read an existing regular file instead.
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    p.read = "cannot list the folder: " + errnoText(errno);
    return p;
  }
  std::string found;
  while (struct dirent* e = ::readdir(d)) {
    const std::string candidate = dir + "/" + e->d_name;
    struct stat st;
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
      found = candidate;
      break;
    }
  }
  ::closedir(d);
  if (found.empty()) {
    p.read = "no file to read in a folder where none can be created";
    return p;
  }
  p.read = tryDirectRead(found, block.get());
  p.file = found;
  return p;
}

class ProbeWorker : public PromiseWorker {
 public:
  ProbeWorker(Napi::Env env, std::string dir) : PromiseWorker(env, "model-stock:probeDirectIo"), dir_(std::move(dir)) {}

 protected:
  void Run() override { probe_ = probeDirect(dir_); }

  Napi::Value Result() override {
    Napi::Env env = Env();
    Napi::Object o = Napi::Object::New(env);
    auto answer = [&](const std::string& why) -> Napi::Value {
      return why.empty() ? Napi::Value(Napi::Boolean::New(env, true)) : Napi::Value(Napi::String::New(env, why));
    };
    o.Set("read", answer(probe_.read));
    o.Set("write", answer(probe_.write));
    if (!probe_.file.empty()) o.Set("file", probe_.file);
    return o;
  }

 private:
  std::string dir_;
  Probe probe_;
};

#endif

}  // namespace

// openInputFile(path, { direct, refuse }) → Promise<handle>: the file opened for readRanges.
Napi::Value OpenInputFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) return rejected(env, "openInputFile: expected a path string", "INVALID_ARGUMENT");
  if (!info[1].IsObject()) return rejected(env, "openInputFile: expected an options object", "INVALID_ARGUMENT");
#if defined(_WIN32)
  return rejected(env, "openInputFile: not available on Windows", "NATIVE_ERROR");
#else
  Napi::Object o = info[1].As<Napi::Object>();
  const bool direct = o.Get("direct").ToBoolean().Value();
  Refusals refuse;
  Napi::Value r = o.Get("refuse");
  if (r.IsArray()) {
    Napi::Array list = r.As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); i++) {
      const std::string what = list.Get(i).ToString().Utf8Value();
      if (what == "directOpen")
        refuse.open = true;
      else if (what == "directRead")
        refuse.read = true;
      else
        return rejected(env, "openInputFile: unknown refusal \"" + what + "\"", "INVALID_ARGUMENT");
    }
  }
  return queued<OpenWorker>(env, info[0].As<Napi::String>().Utf8Value(), direct, refuse);
#endif
}

// inputFileInfo(handle) → { direct, fallback? }: how the file is read now (a refusal downgrades it).
Napi::Value InputFileInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if defined(_WIN32)
  throw codedError(env, "inputFileInfo: not available on Windows", "NATIVE_ERROR");
#else
  InputFileRef* ref = unwrapInput(env, info[0]);
  if (ref == nullptr) throw codedError(env, "inputFileInfo: expected a file from openInputFile", "INVALID_ARGUMENT");
  Napi::Object o = Napi::Object::New(env);
  if (!*ref) {
    o.Set("direct", false);
    return o;
  }
  o.Set("direct", (*ref)->direct.load());
  const std::string why = (*ref)->why();
  if (!why.empty()) o.Set("fallback", why);
  return o;
#endif
}

// closeInputFile(handle): drops the handle's reference; the descriptor closes once no read uses it.
Napi::Value CloseInputFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if !defined(_WIN32)
  InputFileRef* ref = unwrapInput(env, info[0]);
  if (ref == nullptr) throw codedError(env, "closeInputFile: expected a file from openInputFile", "INVALID_ARGUMENT");
  ref->reset();
#endif
  return env.Undefined();
}

// readRanges(reads, { queueDepth, chunkBytes, abort }) → Promise<void>. reads: [{ file, position,
// length, target, head }]: file bytes [position, position + length) land at target[head …]. At most
// queueDepth chunks of chunkBytes per read are in flight at once.
Napi::Value ReadRanges(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) return rejected(env, "readRanges: expected an array of reads", "INVALID_ARGUMENT");
  if (!info[1].IsObject()) return rejected(env, "readRanges: expected an options object", "INVALID_ARGUMENT");
#if defined(_WIN32)
  return rejected(env, "readRanges: not available on Windows", "NATIVE_ERROR");
#else
  Napi::Object o = info[1].As<Napi::Object>();
  uint64_t queueDepth = 0, chunkBytes = 0;
  if (!safeInteger(o.Get("queueDepth"), 1, &queueDepth) || queueDepth > kMaxIoThreads)
    return rejected(env, "readRanges: expected queueDepth from 1 to " + std::to_string(kMaxIoThreads), "INVALID_ARGUMENT");
  if (!safeInteger(o.Get("chunkBytes"), kAlign, &chunkBytes) || chunkBytes % kAlign != 0 || chunkBytes > (1u << 30))
    return rejected(env, "readRanges: expected chunkBytes, a multiple of 4096 up to 1 GiB", "INVALID_ARGUMENT");
  Napi::Value abort = o.Get("abort");
  const int32_t* abortFlag = nullptr;
  if (!abort.IsUndefined()) {
    if (!abort.IsTypedArray() || abort.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
        abort.As<Napi::TypedArray>().ElementLength() < 1)
      return rejected(env, "readRanges: expected an Int32Array for abort", "INVALID_ARGUMENT");
    abortFlag = abort.As<Napi::Int32Array>().Data();
  }
  Napi::Array list = info[0].As<Napi::Array>();
  std::vector<ReadJob> jobs;
  std::vector<Napi::Object> keep;
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value v = list.Get(i);
    if (!v.IsObject()) return rejected(env, "readRanges: expected read objects", "INVALID_ARGUMENT");
    Napi::Object r = v.As<Napi::Object>();
    InputFileRef* ref = unwrapInput(env, r.Get("file"));
    if (ref == nullptr || !*ref)
      return rejected(env, "readRanges: expected an open file from openInputFile", "INVALID_ARGUMENT");
    uint64_t position, length, head;
    Napi::Value target = r.Get("target");
    if (!safeInteger(r.Get("position"), 0, &position) || !safeInteger(r.Get("length"), 0, &length) ||
        !safeInteger(r.Get("head"), 0, &head))
      return rejected(env, "readRanges: expected safe integers ≥ 0 for position, length and head", "INVALID_ARGUMENT");
    if (!target.IsTypedArray() || target.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      return rejected(env, "readRanges: expected a Uint8Array for target", "INVALID_ARGUMENT");
    Napi::Uint8Array bytes = target.As<Napi::Uint8Array>();
    if (head > bytes.ByteLength() || length > bytes.ByteLength() - head)
      return rejected(env, "readRanges: the range does not fit its target at head", "INVALID_ARGUMENT");
    if (position > (*ref)->size || length > (*ref)->size - position)
      return rejected(env,
                      "readRanges: bytes [" + std::to_string(position) + ", " + std::to_string(position + length) +
                          ") lie outside " + (*ref)->path + " (" + std::to_string((*ref)->size) + " bytes when opened)",
                      "INVALID_ARGUMENT");
    if (length == 0) continue;
    jobs.push_back({*ref, position, length, bytes.Data(), bytes.ByteLength(), head});
    keep.push_back(target.As<Napi::Object>());
  }
  auto* batch = new Batch(env, std::move(jobs), chunkBytes, abortFlag);
  Napi::Promise promise = batch->promise();
  if (batch->chunks() == 0) {
    batch->settle(env);
    delete batch;
    return promise;
  }
  for (Napi::Object& k : keep) batch->keep(k);
  if (!abort.IsUndefined()) batch->keep(abort.As<Napi::Object>());
  batch->setSettle(Settle::New(env, "model-stock:readRanges", 0, 1));
  std::vector<IoTask> tasks;
  tasks.reserve(batch->chunks());
  for (size_t c = 0; c < batch->chunks(); c++) tasks.push_back({batch, c});
  ioPool().submit(std::move(tasks), static_cast<unsigned>(queueDepth * batch->jobs()));
  return promise;
#endif
}

// inputResidency(paths) → Promise<[{ size, resident, exact, error? }]>: bytes of each file in the page
// cache (`--io auto`).
Napi::Value InputResidency(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) return rejected(env, "inputResidency: expected an array of paths", "INVALID_ARGUMENT");
#if defined(_WIN32)
  return rejected(env, "inputResidency: not available on Windows", "NATIVE_ERROR");
#else
  Napi::Array list = info[0].As<Napi::Array>();
  std::vector<std::string> paths;
  for (uint32_t i = 0; i < list.Length(); i++) {
    if (!list.Get(i).IsString()) return rejected(env, "inputResidency: expected path strings", "INVALID_ARGUMENT");
    paths.push_back(list.Get(i).As<Napi::String>().Utf8Value());
  }
  return queued<ResidencyWorker>(env, std::move(paths));
#endif
}

// probeDirectIo(dir) → Promise<{ read: true | reason, write: true | reason, file? }> (`doctor DIR`).
Napi::Value ProbeDirectIo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) return rejected(env, "probeDirectIo: expected a folder path", "INVALID_ARGUMENT");
#if defined(_WIN32)
  return rejected(env, "probeDirectIo: not available on Windows", "NATIVE_ERROR");
#else
  return queued<ProbeWorker>(env, info[0].As<Napi::String>().Utf8Value());
#endif
}

// inputReaderStats() → { openFiles, batches, ioThreads }: input files open, read batches in flight and
// I/O threads started in this process (tests: a cancelled or failed merge leaves no file or batch).
Napi::Value InputReaderStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#if !defined(_WIN32)
  o.Set("openFiles", Napi::Number::New(env, static_cast<double>(gOpenInputs.load())));
  o.Set("batches", Napi::Number::New(env, static_cast<double>(gBatchesInFlight.load())));
  o.Set("ioThreads", Napi::Number::New(env, static_cast<double>(ioPool().threads())));
#else
  o.Set("openFiles", 0);
  o.Set("batches", 0);
  o.Set("ioThreads", 0);
#endif
  return o;
}

}  // namespace ms
