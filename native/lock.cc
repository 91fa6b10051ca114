// lockFile: the lock huggingface_hub's `filelock` takes on .locks/models--org--name/<blob>.lock
// (flock(2), exclusive, non-blocking), so this library and Python tools writing one Hugging Face cache
// wait for each other's downloads instead of fetching the same blob twice. JS polls; nothing blocks.
#include <napi.h>

#include <climits>
#include <string>

#include "exports.h"
#include "js_errors.h"

#if !defined(_WIN32)
#include <sys/file.h>

#include <cerrno>
#include <cstring>
#endif

namespace ms {

// lockFile(fd) → true when the lock is now held (released by closing fd), false when another open file
// holds it. Throws IO_ERROR when the file system has no flock (callers go on unlocked, as Python's
// SoftFileLock fallback does not interoperate either).
Napi::Value LockFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throw codedError(env, "lockFile: expected a file descriptor", "INVALID_ARGUMENT");
  const double fd = info[0].As<Napi::Number>().DoubleValue();
  if (!(fd >= 0 && fd <= INT_MAX) || fd != static_cast<double>(static_cast<int>(fd)))
    throw codedError(env, "lockFile: expected a file descriptor", "INVALID_ARGUMENT");
#if defined(_WIN32)
  throw codedError(env, "lockFile: not available on Windows", "IO_ERROR");
#else
  for (;;) {
    if (flock(static_cast<int>(fd), LOCK_EX | LOCK_NB) == 0) return Napi::Boolean::New(env, true);
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
    throw codedError(env, std::string("lockFile: flock: ") + std::strerror(errno), "IO_ERROR");
  }
#endif
}

}  // namespace ms
