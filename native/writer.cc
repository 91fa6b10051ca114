// Output shards written off the event loop with bounded dirty data (RocksDB's bytes_per_sync,
// PostgreSQL's *_flush_after): dirty pages never pile up, so neither reclaim nor one big flush at the
// end stalls a merge, and the final fsync finds almost nothing left. Modes, chosen per file by JS and
// downgraded here when the kernel or file system refuses (the reason is kept for the report):
//
//  direct   O_DIRECT writes. Tensor bytes arrive at any offset and in any order. Bytes in a buffer laid
//           out like the file (at the same offset within a 4 KiB block: the engine's outputs are) are
//           written from that buffer, every whole 4 KiB block of a write in one call; the rest is
//           copied into aligned staging blocks this writer owns, each written (less what was written
//           directly) once every byte of it has arrived; the last block is padded to the alignment and
//           the file truncated to its size at close. Nothing goes through the page cache (measured
//           here: 0.13 s of system time per 2.4 GB, against 1.0 s for rolling and 9 s for plain
//           buffered writes).
//  rolling  buffered pwrite; every `flushBytes` written, writeback of those ranges starts
//           (sync_file_range WRITE) and the batch before it is waited on and its pages dropped
//           (POSIX_FADV_DONTNEED): at most two batches are dirty or under writeback at any time.
//  plain    buffered pwrite and an fdatasync every `flushBytes` (where sync_file_range is refused).
//
// Every call but shardWriterInfo runs on a libuv worker. JS serialises open → writes → close/abort;
// the native side re-checks that order cheaply (a close with writes in flight is refused).
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "args.h"
#include "exports.h"
#include "pages.h"
#include "js_errors.h"
#include "promise_worker.h"

#if !defined(_WIN32)
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace ms {
namespace {

enum class Mode : int { Direct = 0, Rolling = 1, Plain = 2 };

const char* modeName(Mode m) {
  switch (m) {
    case Mode::Direct:
      return "direct";
    case Mode::Rolling:
      return "rolling";
    case Mode::Plain:
      return "plain";
  }
  return "plain";
}

// O_DIRECT needs offsets, lengths and memory aligned to the device's logical block (512 B or 4 KiB).
constexpr uint64_t kAlign = 4096;
// Buffered writes are issued in pieces of this size, so one large tensor does not dirty more than a
// piece past the flush threshold before its writeback starts.
constexpr uint64_t kPiece = 8u << 20;
// Free staging blocks kept for reuse: fresh blocks fault their pages in again. The engine gives one
// write at a time, so a block written is reused by the next write; two spares leave room for a write
// that ends in one block and the next shard's header in another. The budget counts them
// (lib/safetensors/shardFile.ts, STAGING_BLOCKS).
constexpr size_t kSpareBlocks = 2;

// Failures injected by tests (lib/safetensors/shardFile.ts reads MODEL_STOCK_TEST_REFUSE_IO): the
// calls answer EINVAL as a file system that refuses them would.
struct Refusals {
  bool direct = false;         // fcntl(F_SETFL, O_DIRECT)
  bool directWrite = false;    // the first O_DIRECT pwrite
  bool syncFileRange = false;  // every sync_file_range
};

struct Range {
  uint64_t begin, end;
};

std::string errnoText(int e) { return std::strerror(e); }

// A call the file system does not support (as opposed to a failure of the device or of space).
bool isRefusal(int e) { return e == EINVAL || e == EOPNOTSUPP || e == ENOSYS || e == ESPIPE; }

#if !defined(_WIN32)

// Live in this process, for shardWriterStats: a cancelled or failed merge must leave none behind.
std::atomic<int64_t> gOpenFiles{0};
std::atomic<int64_t> gStagingBlocks{0};

void freeBlock(uint8_t* b, uint64_t bytes) {
  unmapPages(b, static_cast<size_t>(bytes));
  gStagingBlocks--;
}

void closeFile(int fd) {
  ::close(fd);
  gOpenFiles--;
}

struct WriteResult {
  int error;        // 0, or the errno of the failure
  uint64_t failedAt;  // the file offset the failing call wrote at
};

// Writes [data, data + length) at position fully, or says where and why it stopped.
WriteResult pwriteAll(int fd, const uint8_t* data, uint64_t length, uint64_t position) {
  uint64_t done = 0;
  while (done < length) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(length - done, 1u << 30));
    const ssize_t put = ::pwrite(fd, data + done, want, static_cast<off_t>(position + done));
    if (put < 0) {
      if (errno == EINTR) continue;
      return {errno, position + done};
    }
    if (put == 0) return {EIO, position + done};
    done += static_cast<uint64_t>(put);
  }
  return {0, 0};
}

int datasync(int fd) {
#if defined(__linux__)
  return ::fdatasync(fd) == 0 ? 0 : errno;
#else
  return ::fsync(fd) == 0 ? 0 : errno;
#endif
}

class ShardWriter {
 public:
  ShardWriter(std::string path, uint64_t size, Mode mode, uint64_t blockBytes, uint64_t flushBytes, Refusals refuse)
      : path_(std::move(path)),
        size_(size),
        blockBytes_(blockBytes),
        flushBytes_(flushBytes),
        refuse_(refuse),
        mode_(static_cast<int>(mode)) {}

  ~ShardWriter() {
    if (fd_ >= 0) closeFile(fd_);
    for (auto& [index, block] : blocks_)
      if (block.data != nullptr) freeBlock(block.data, blockBytes_);
    for (uint8_t* b : spare_) freeBlock(b, blockBytes_);
  }

  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  Mode mode() const { return static_cast<Mode>(mode_.load()); }
  std::string fallback() {
    std::lock_guard<std::mutex> lock(mu_);
    return fallback_;
  }
  std::atomic<int>& inflight() { return inflight_; }

  // Creates the file (never an existing one: it could be someone's data) and sets up the mode.
  void open() {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0) throw IoError("cannot create: " + errnoText(errno));
    gOpenFiles++;
    if (mode() == Mode::Direct) {
      const int e = refuse_.direct ? EINVAL : setDirect(true);
      if (e == 0)
        staged_ = true;
      else
        downgrade(Mode::Rolling, "O_DIRECT refused (" + errnoText(e) + ")");
    }
    // An empty range on an empty file: answers whether the call is supported at all, so the report
    // says the truth even for files too small to ever flush.
    if (mode() == Mode::Rolling) {
      const int e = startWriteback({{0, 0}});
      if (e != 0) {
        if (!isRefusal(e)) throw IoError("sync_file_range: " + errnoText(e));
        downgrade(Mode::Plain, "sync_file_range refused (" + errnoText(e) + ")");
      }
    }
  }

  void write(uint64_t position, const uint8_t* data, uint64_t length) {
    if (fd_ < 0) throw ArgumentError("shardWrite: the writer is closed");
    if (position > size_ || length > size_ - position)
      throw ArgumentError("shardWrite: bytes [" + std::to_string(position) + ", " + std::to_string(position + length) +
                          ") lie outside the file's " + std::to_string(size_) + " bytes");
    if (staged_)
      writeStaged(position, data, length);
    else
      writeBuffered(position, data, length);
  }

  // Flushes what is left, truncates the padding of the last direct block, fdatasyncs when asked, closes.
  // Returns the seconds spent in the final fdatasync (what the rolling flushes left for it).
  double close(bool fsync) {
    std::lock_guard<std::mutex> flushing(flushMu_);
    if (fd_ < 0) throw ArgumentError("closeShardWriter: the writer is closed");
    if (inflight_.load() != 0) throw ArgumentError("closeShardWriter: writes are still in flight");
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!blocks_.empty())
        throw ArgumentError("closeShardWriter: " + std::to_string(blocks_.size()) +
                            " staging block(s) never received all their bytes");
    }
    if (padded_.load() && ::ftruncate(fd_, static_cast<off_t>(size_)) != 0)
      throw IoError("cannot truncate to " + std::to_string(size_) + " bytes: " + errnoText(errno));
    std::vector<Range> rest;
    for (auto& batch : inflight_batches_) rest.insert(rest.end(), batch.begin(), batch.end());
    rest.insert(rest.end(), dirty_.begin(), dirty_.end());
    inflight_batches_.clear();
    dirty_.clear();
    double seconds = 0;
    if (fsync) {
      const auto start = std::chrono::steady_clock::now();
      const int e = datasync(fd_);
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (e != 0) throw IoError("fsync failed: " + errnoText(e));
      if (mode() == Mode::Rolling) dropPages(rest);
    } else if (mode() == Mode::Rolling) {
      // No wait: what is left (two batches at most) goes to disk in the background.
      const int e = startWriteback(rest);
      if (e != 0 && !isRefusal(e)) throw IoError("writeback failed: " + errnoText(e));
    }
    releaseBlocks();
    const int fd = fd_;
    fd_ = -1;
    gOpenFiles--;
    // close() reports deferred write errors on some file systems (NFS): they are write errors too.
    if (::close(fd) != 0 && errno != EINTR) throw IoError("close failed: " + errnoText(errno));
    return seconds;
  }

  // Closes without flushing; the caller removes the file.
  void abort() {
    std::lock_guard<std::mutex> flushing(flushMu_);
    if (inflight_.load() != 0) throw ArgumentError("abortShardWriter: writes are still in flight");
    if (fd_ >= 0) closeFile(fd_);
    fd_ = -1;
    releaseBlocks();
  }

 private:
  struct Block {
    uint8_t* data;  // null while every byte counted came from a direct write (no copy staged yet)
    uint64_t filled;
    int users;                // writes copying into it right now
    std::vector<Range> holes;  // file ranges written straight from a caller's buffer: never from data
  };

  void releaseBlocks() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [index, block] : blocks_)
      if (block.data != nullptr) freeBlock(block.data, blockBytes_);
    blocks_.clear();
    for (uint8_t* b : spare_) freeBlock(b, blockBytes_);
    spare_.clear();
  }

  void downgrade(Mode to, const std::string& why) {
    std::lock_guard<std::mutex> lock(mu_);
    if (static_cast<int>(to) <= mode_.load()) return;
    mode_.store(static_cast<int>(to));
    if (fallback_.empty()) fallback_ = why;
  }

  int setDirect(bool on) {
#if defined(O_DIRECT)
    const int flags = ::fcntl(fd_, F_GETFL);
    if (flags < 0) return errno;
    return ::fcntl(fd_, F_SETFL, on ? flags | O_DIRECT : flags & ~O_DIRECT) == 0 ? 0 : errno;
#else
    (void)on;
    return EINVAL;
#endif
  }

  uint8_t* takeBlock() {  // under mu_
    if (!spare_.empty()) {
      uint8_t* b = spare_.back();
      spare_.pop_back();
      return b;
    }
    void* p = mapPages(static_cast<size_t>(blockBytes_), kAlign);
    if (p == nullptr)
      throw std::runtime_error("out of memory allocating a " + std::to_string(blockBytes_) + "-byte staging block");
    gStagingBlocks++;
    return static_cast<uint8_t*>(p);
  }

  void giveBlock(uint8_t* b) {
    std::lock_guard<std::mutex> lock(mu_);
    if (spare_.size() < kSpareBlocks)
      spare_.push_back(b);
    else
      freeBlock(b, blockBytes_);
  }

  // A caller's buffer whose bytes sit at the same offset within a 4 KiB block as in the file (the engine
  // lays its outputs out that way) is written from where it is: every whole block of it in one O_DIRECT
  // call (the device gets all its requests at once, and nothing is copied). Only the partial blocks at
  // its ends are copied into staging blocks, which count the directly written bytes as filled and never
  // write over them.
  void writeStaged(uint64_t position, const uint8_t* data, uint64_t length) {
    uint64_t lo = position, hi = position;
    if (mode() == Mode::Direct && (reinterpret_cast<uintptr_t>(data) - position) % kAlign == 0) {
      lo = (position + kAlign - 1) / kAlign * kAlign;
      hi = (position + length) / kAlign * kAlign;
      if (hi <= lo) lo = hi = position;
    }
    if (hi > lo) {
      writeDirect(lo, data + (lo - position), hi - lo);
      stage(lo, nullptr, hi - lo);
      stage(position, data, lo - position);
      stage(hi, data + (hi - position), position + length - hi);
    } else {
      stage(position, data, length);
    }
  }

  // Bytes [position, position + length) of the file, copied from data into staging blocks — or, with
  // data null, already written directly: they count as filled and become holes of their blocks.
  void stage(uint64_t position, const uint8_t* data, uint64_t length) {
    while (length > 0) {
      const uint64_t index = position / blockBytes_;
      const uint64_t blockStart = index * blockBytes_;
      const uint64_t blockLength = std::min(blockBytes_, size_ - blockStart);
      const uint64_t n = std::min(length, blockLength - (position - blockStart));
      uint8_t* block = nullptr;
      {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = blocks_.find(index);
        if (it == blocks_.end()) it = blocks_.emplace(index, Block{nullptr, 0, 0, {}}).first;
        Block& b = it->second;
        if (data == nullptr) {
          b.holes.push_back({position, position + n});
        } else {
          if (b.data == nullptr) b.data = takeBlock();
          b.users++;
          block = b.data;
        }
      }
      if (data != nullptr) std::memcpy(block + (position - blockStart), data, static_cast<size_t>(n));
      Block done{nullptr, 0, 0, {}};
      bool full;
      {
        std::lock_guard<std::mutex> lock(mu_);
        Block& b = blocks_.at(index);
        if (data != nullptr) b.users--;
        b.filled += n;
        if (b.filled > blockLength)
          throw ArgumentError("shardWrite: overlapping writes in bytes [" + std::to_string(blockStart) + ", " +
                              std::to_string(blockStart + blockLength) + ")");
        full = b.filled == blockLength && b.users == 0;
        if (full) {
          done = std::move(b);
          blocks_.erase(index);
        }
      }
      if (full && done.data != nullptr) {
        try {
          writeBlock(blockStart, done.data, blockLength, done.holes);
        } catch (...) {
          giveBlock(done.data);
          throw;
        }
        giveBlock(done.data);
      }
      position += n;
      if (data != nullptr) data += n;
      length -= n;
    }
  }

  // Whole 4 KiB blocks straight from the caller's (aligned) buffer.
  void writeDirect(uint64_t position, const uint8_t* data, uint64_t length) {
    if (!writeAligned(position, data, length)) writeBuffered(position, data, length);
  }

  // One O_DIRECT write; false when the file system refused it (everything after goes buffered).
  bool writeAligned(uint64_t position, const uint8_t* bytes, uint64_t length) {
    const bool refused = refuse_.directWrite && !refusedOnce_.exchange(true);
    const WriteResult r = refused ? WriteResult{EINVAL, position} : pwriteAll(fd_, bytes, length, position);
    if (r.error == 0) return true;
    if (r.error != EINVAL) throw IoError(writeFailed(r));
    refuseDirect(r.error);
    return false;
  }

  // O_DIRECT refused although the flag was accepted (a file system whose alignment exceeds ours): the
  // rest goes through the page cache, with rolling writeback.
  void refuseDirect(int error) {
    downgrade(Mode::Rolling, "O_DIRECT write refused (" + errnoText(error) + ")");
    const int e = setDirect(false);
    if (e != 0) throw IoError("cannot clear O_DIRECT: " + errnoText(e));
  }

  // A staging block's bytes, less its holes: segments between holes start and end on 4 KiB boundaries
  // (holes do), except the file's last, which is padded.
  void writeBlock(uint64_t blockStart, uint8_t* block, uint64_t length, std::vector<Range> holes) {
    std::sort(holes.begin(), holes.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
    uint64_t at = blockStart;
    const uint64_t end = blockStart + length;
    for (size_t h = 0; h <= holes.size(); h++) {
      const uint64_t until = h < holes.size() ? holes[h].begin : end;
      if (until > at) writeSegment(at, block + (at - blockStart), until - at);
      if (h < holes.size()) at = std::max(at, holes[h].end);
    }
  }

  void writeSegment(uint64_t position, uint8_t* bytes, uint64_t length) {
    if (mode() == Mode::Direct) {
      const uint64_t padded = (length + kAlign - 1) / kAlign * kAlign;
      if (padded != length) {
        std::memset(bytes + length, 0, static_cast<size_t>(padded - length));
        padded_.store(true);
      }
      if (writeAligned(position, bytes, padded)) return;
    }
    writeBuffered(position, bytes, length);
  }

  void writeBuffered(uint64_t position, const uint8_t* data, uint64_t length) {
    for (uint64_t done = 0; done < length;) {
      const uint64_t n = std::min(kPiece, length - done);
      const WriteResult r = pwriteAll(fd_, data + done, n, position + done);
      if (r.error != 0) throw IoError(writeFailed(r));
      noteWritten(position + done, n);
      done += n;
    }
  }

  static std::string writeFailed(const WriteResult& r) {
    return "write failed at byte " + std::to_string(r.failedAt) + ": " + errnoText(r.error);
  }

  // Buffered bytes just written: every flushBytes, start their writeback and wait on the batch before.
  void noteWritten(uint64_t begin, uint64_t length) {
    std::vector<Range> batch;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!dirty_.empty() && dirty_.back().end == begin)
        dirty_.back().end += length;
      else
        dirty_.push_back({begin, begin + length});
      dirtyBytes_ += length;
      if (dirtyBytes_ < flushBytes_) return;
      batch.swap(dirty_);
      dirtyBytes_ = 0;
    }
    std::lock_guard<std::mutex> flushing(flushMu_);
    if (mode() == Mode::Rolling) {
      const int e = startWriteback(batch);
      if (e == 0) {
        inflight_batches_.push_back(std::move(batch));
        while (inflight_batches_.size() > 1) {
          waitAndDrop(inflight_batches_.front());
          inflight_batches_.pop_front();
        }
        return;
      }
      if (!isRefusal(e)) throw IoError("writeback failed: " + errnoText(e));
      downgrade(Mode::Plain, "sync_file_range refused (" + errnoText(e) + ")");
      inflight_batches_.clear();  // the fdatasync below covers them
    }
    const int e = datasync(fd_);
    // A file that cannot be synced at all (a special file): writes go on unbounded, as they must.
    if (e != 0 && !isRefusal(e)) throw IoError("fdatasync failed: " + errnoText(e));
    // Synced pages are dropped as rolling writeback drops them. Kept, the page cache grows into memory
    // the kernel has not used lately, and copying into such pages was 4× slower here (2.4 GB: 12.6 s,
    // 7.4 s of it system time in copy_folio_from_iter_atomic, against 2.7 s with the drop): this VM
    // hands freed memory back to its host (virtio-balloon free page reporting), so first touches fault
    // on the host. Dropped pages are reused at once instead.
    if (e == 0) dropPages(batch);
  }

  int startWriteback(const std::vector<Range>& ranges) {
#if defined(__linux__)
    if (refuse_.syncFileRange) return EINVAL;
    for (const Range& r : ranges) {
      if (::sync_file_range(fd_, static_cast<off_t>(r.begin), static_cast<off_t>(r.end - r.begin),
                            SYNC_FILE_RANGE_WRITE) != 0)
        return errno;
    }
    return 0;
#else
    (void)ranges;
    return ENOSYS;
#endif
  }

  void waitAndDrop(const std::vector<Range>& ranges) {
#if defined(__linux__)
    for (const Range& r : ranges) {
      if (::sync_file_range(fd_, static_cast<off_t>(r.begin), static_cast<off_t>(r.end - r.begin),
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) != 0)
        throw IoError("writeback failed in bytes [" + std::to_string(r.begin) + ", " + std::to_string(r.end) +
                      "): " + errnoText(errno));
    }
    dropPages(ranges);
#else
    (void)ranges;
#endif
  }

  // Our own output's clean pages only (never an input's: a second merge of the same inputs must find
  // them cached). Advice: a failure changes nothing but memory use.
  void dropPages(const std::vector<Range>& ranges) {
#if defined(POSIX_FADV_DONTNEED)
    for (const Range& r : ranges)
      ::posix_fadvise(fd_, static_cast<off_t>(r.begin), static_cast<off_t>(r.end - r.begin), POSIX_FADV_DONTNEED);
#else
    (void)ranges;
#endif
  }

  const std::string path_;
  const uint64_t size_;
  const uint64_t blockBytes_;
  const uint64_t flushBytes_;
  const Refusals refuse_;
  int fd_ = -1;
  std::atomic<int> mode_;
  bool staged_ = false;  // set in open(), before any write
  std::atomic<bool> padded_{false};
  std::atomic<bool> refusedOnce_{false};
  std::atomic<int> inflight_{0};

  std::mutex mu_;  // blocks_, spare_, dirty_, dirtyBytes_, fallback_
  std::map<uint64_t, Block> blocks_;
  std::vector<uint8_t*> spare_;
  std::vector<Range> dirty_;
  uint64_t dirtyBytes_ = 0;
  std::string fallback_;

  std::mutex flushMu_;  // inflight_batches_, and one flush or close at a time
  std::deque<std::vector<Range>> inflight_batches_;
};

using WriterRef = std::shared_ptr<ShardWriter>;

void releaseHandle(napi_env, void* data, void*) { delete static_cast<WriterRef*>(data); }

// The writer behind a handle from openShardWriter, or null.
WriterRef unwrapWriter(Napi::Env env, Napi::Value v) {
  void* data = nullptr;
  if (!v.IsObject() || napi_unwrap(env, v, &data) != napi_ok || data == nullptr) return nullptr;
  return *static_cast<WriterRef*>(data);
}

std::string notAWriter(const char* op) { return std::string(op) + ": expected a writer from openShardWriter"; }

class OpenWorker : public PromiseWorker {
 public:
  OpenWorker(Napi::Env env, WriterRef writer) : PromiseWorker(env, "model-stock:openShardWriter"), writer_(std::move(writer)) {}

 protected:
  void Run() override { writer_->open(); }

  Napi::Value Result() override {
    Napi::Env env = Env();
    Napi::Object handle = Napi::Object::New(env);
    handle.Set("path", writer_->path());
    handle.Set("size", Napi::Number::New(env, static_cast<double>(writer_->size())));
    auto* ref = new WriterRef(writer_);
    if (napi_wrap(env, handle, ref, releaseHandle, nullptr, nullptr) != napi_ok) {
      delete ref;  // the writer closes its file when the last reference goes
      return env.Undefined();
    }
    return handle;
  }

 private:
  WriterRef writer_;
};

class WriteWorker : public PromiseWorker {
 public:
  WriteWorker(Napi::Env env, WriterRef writer, uint64_t position, Napi::Uint8Array data)
      : PromiseWorker(env, "model-stock:shardWrite"),
        writer_(std::move(writer)),
        position_(position),
        data_(data.Data()),
        length_(data.ByteLength()) {
    Keep({data});
    writer_->inflight()++;
  }

 protected:
  void Run() override {
    struct Done {
      std::atomic<int>& n;
      ~Done() { n--; }
    } done{writer_->inflight()};
    writer_->write(position_, data_, length_);
  }

 private:
  WriterRef writer_;
  uint64_t position_;
  const uint8_t* data_;
  uint64_t length_;
};

class CloseWorker : public PromiseWorker {
 public:
  CloseWorker(Napi::Env env, WriterRef writer, bool fsync, bool abort)
      : PromiseWorker(env, "model-stock:closeShardWriter"), writer_(std::move(writer)), fsync_(fsync), abort_(abort) {}

 protected:
  void Run() override {
    if (abort_)
      writer_->abort();
    else
      seconds_ = writer_->close(fsync_);
  }
  Napi::Value Result() override { return abort_ ? Env().Undefined() : Napi::Number::New(Env(), seconds_); }

 private:
  WriterRef writer_;
  bool fsync_;
  bool abort_;
  double seconds_ = 0;
};

uint64_t optionalInteger(Napi::Object o, const char* key, uint64_t fallback, uint64_t min, uint64_t max, const char* op) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  uint64_t out;
  if (!safeInteger(v, static_cast<double>(min), &out) || out > max)
    throw codedError(v.Env(), std::string(op) + ": expected " + key + " to be an integer from " + std::to_string(min) +
                                  " to " + std::to_string(max),
                     "INVALID_ARGUMENT");
  return out;
}

#endif

}  // namespace

// openShardWriter(path, size, { mode, blockBytes, flushBytes, refuse }) → Promise<handle>
Napi::Value OpenShardWriter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) return rejected(env, "openShardWriter: expected a path string", "INVALID_ARGUMENT");
  uint64_t size;
  if (!safeInteger(info[1], 0, &size))
    return rejected(env, "openShardWriter: expected a safe integer ≥ 0 for size", "INVALID_ARGUMENT");
  if (!info[2].IsObject()) return rejected(env, "openShardWriter: expected an options object", "INVALID_ARGUMENT");
#if defined(_WIN32)
  return rejected(env, "openShardWriter: not available on Windows", "NATIVE_ERROR");
#else
  Napi::Object o = info[2].As<Napi::Object>();
  const std::string modeText = o.Get("mode").IsString() ? o.Get("mode").As<Napi::String>().Utf8Value() : "";
  Mode mode;
  if (modeText == "direct")
    mode = Mode::Direct;
  else if (modeText == "rolling")
    mode = Mode::Rolling;
  else if (modeText == "plain")
    mode = Mode::Plain;
  else
    return rejected(env, "openShardWriter: expected mode to be direct, rolling or plain", "INVALID_ARGUMENT");
  uint64_t blockBytes, flushBytes;
  try {
    blockBytes = optionalInteger(o, "blockBytes", 16u << 20, kAlign, 1u << 30, "openShardWriter");
    flushBytes = optionalInteger(o, "flushBytes", 32u << 20, 1, uint64_t{1} << 40, "openShardWriter");
  } catch (const Napi::Error& e) {
    return rejected(env, e.Message(), "INVALID_ARGUMENT");
  }
  if (blockBytes % kAlign != 0)
    return rejected(env, "openShardWriter: blockBytes must be a multiple of 4096", "INVALID_ARGUMENT");
  Refusals refuse;
  Napi::Value r = o.Get("refuse");
  if (r.IsArray()) {
    Napi::Array list = r.As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); i++) {
      const std::string what = list.Get(i).ToString().Utf8Value();
      if (what == "direct")
        refuse.direct = true;
      else if (what == "directWrite")
        refuse.directWrite = true;
      else if (what == "syncFileRange")
        refuse.syncFileRange = true;
      else
        return rejected(env, "openShardWriter: unknown refusal \"" + what + "\"", "INVALID_ARGUMENT");
    }
  }
  auto writer = std::make_shared<ShardWriter>(info[0].As<Napi::String>().Utf8Value(), size, mode, blockBytes,
                                              flushBytes, refuse);
  return queued<OpenWorker>(env, std::move(writer));
#endif
}

// shardWrite(handle, position, data) → Promise<void>
Napi::Value ShardWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if defined(_WIN32)
  return rejected(env, "shardWrite: not available on Windows", "NATIVE_ERROR");
#else
  WriterRef writer = unwrapWriter(env, info[0]);
  if (!writer) return rejected(env, notAWriter("shardWrite"), "INVALID_ARGUMENT");
  uint64_t position;
  if (!safeInteger(info[1], 0, &position))
    return rejected(env, "shardWrite: expected a safe integer ≥ 0 for position", "INVALID_ARGUMENT");
  if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    return rejected(env, "shardWrite: expected a Uint8Array for data", "INVALID_ARGUMENT");
  return queued<WriteWorker>(env, std::move(writer), position, info[2].As<Napi::Uint8Array>());
#endif
}

// shardWriterInfo(handle) → { mode, fallback? }: the mode in effect now (a refusal downgrades it).
Napi::Value ShardWriterInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if defined(_WIN32)
  throw codedError(env, "shardWriterInfo: not available on Windows", "NATIVE_ERROR");
#else
  WriterRef writer = unwrapWriter(env, info[0]);
  if (!writer) throw codedError(env, notAWriter("shardWriterInfo"), "INVALID_ARGUMENT");
  Napi::Object o = Napi::Object::New(env);
  o.Set("mode", modeName(writer->mode()));
  const std::string why = writer->fallback();
  if (!why.empty()) o.Set("fallback", why);
  return o;
#endif
}

// closeShardWriter(handle, fsync) → Promise<seconds in the final fdatasync>; abortShardWriter(handle)
// → Promise<void> closes without flushing (the caller removes the file).
Napi::Value CloseShardWriter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if defined(_WIN32)
  return rejected(env, "closeShardWriter: not available on Windows", "NATIVE_ERROR");
#else
  WriterRef writer = unwrapWriter(env, info[0]);
  if (!writer) return rejected(env, notAWriter("closeShardWriter"), "INVALID_ARGUMENT");
  if (!info[1].IsBoolean()) return rejected(env, "closeShardWriter: expected a boolean fsync", "INVALID_ARGUMENT");
  return queued<CloseWorker>(env, std::move(writer), info[1].As<Napi::Boolean>().Value(), false);
#endif
}

Napi::Value AbortShardWriter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if defined(_WIN32)
  return rejected(env, "abortShardWriter: not available on Windows", "NATIVE_ERROR");
#else
  WriterRef writer = unwrapWriter(env, info[0]);
  if (!writer) return rejected(env, notAWriter("abortShardWriter"), "INVALID_ARGUMENT");
  return queued<CloseWorker>(env, std::move(writer), false, true);
#endif
}

// shardWriterStats() → { openFiles, stagingBlocks }: shard files open and staging blocks allocated by
// every writer of this process (tests: a cancelled or failed merge leaves none).
Napi::Value ShardWriterStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#if !defined(_WIN32)
  o.Set("openFiles", Napi::Number::New(env, static_cast<double>(gOpenFiles.load())));
  o.Set("stagingBlocks", Napi::Number::New(env, static_cast<double>(gStagingBlocks.load())));
#else
  o.Set("openFiles", 0);
  o.Set("stagingBlocks", 0);
#endif
  return o;
}

}  // namespace ms
