// renamePaths(from, to, mode): renameat2(2) with RENAME_NOREPLACE (fail with EEXIST instead of replacing
// whatever `to` is by then) or RENAME_EXCHANGE (swap two existing paths atomically), which Node's fs does
// not offer. The output's commit is built on them (lib/output/place.ts): it never replaces what it did not
// check, and a replaced OUT is never absent. Runs on the libuv pool (a rename on a network file system can
// take a while); resolves with 0 or the errno, which JS names (EEXIST, EINVAL where the file system refuses
// the flags, ENOSYS before Linux 3.15 or off Linux, …).
#include <napi.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "exports.h"
#include "js_errors.h"
#include "promise_worker.h"

#if defined(__linux__)
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace ms {
namespace {

// linux/fs.h; spelled out so the build does not depend on kernel headers or glibc ≥ 2.28.
constexpr unsigned kRenameNoReplace = 1u << 0;
constexpr unsigned kRenameExchange = 1u << 1;

int renameWithFlags(const std::string& from, const std::string& to, unsigned flags) {
#if defined(__linux__) && defined(SYS_renameat2)
  for (;;) {
    if (::syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags) == 0) return 0;
    if (errno != EINTR) return errno;
  }
#else
  (void)from;
  (void)to;
  (void)flags;
  return ENOSYS;
#endif
}

class RenameWorker : public Napi::AsyncWorker {
 public:
  RenameWorker(Napi::Env env, std::string from, std::string to, unsigned flags)
      : Napi::AsyncWorker(env, "model-stock:renamePaths"),
        deferred_(Napi::Promise::Deferred::New(env)),
        from_(std::move(from)),
        to_(std::move(to)),
        flags_(flags) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override { errno_ = renameWithFlags(from_, to_, flags_); }
  void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), errno_)); }
  void OnError(const Napi::Error& e) override {
    deferred_.Reject(codedError(Env(), e.Message(), "NATIVE_ERROR").Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::string from_;
  std::string to_;
  unsigned flags_;
  int errno_ = 0;
};

}  // namespace

Napi::Value RenamePaths(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsString())
    return rejected(env, "renamePaths: expected two path strings", "INVALID_ARGUMENT");
  const std::string mode = info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "";
  unsigned flags;
  if (mode == "noreplace")
    flags = kRenameNoReplace;
  else if (mode == "exchange")
    flags = kRenameExchange;
  else
    return rejected(env, "renamePaths: expected mode \"noreplace\" or \"exchange\"", "INVALID_ARGUMENT");
  std::string from = info[0].As<Napi::String>().Utf8Value();
  std::string to = info[1].As<Napi::String>().Utf8Value();
  if (from.find('\0') != std::string::npos || to.find('\0') != std::string::npos)
    return rejected(env, "renamePaths: a path holds a NUL character", "INVALID_ARGUMENT");
  return queued<RenameWorker>(env, std::move(from), std::move(to), flags);
}

}  // namespace ms
