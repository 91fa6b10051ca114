// allocHost(bytes, alignment) / freeHost(view): aligned host memory for the buffers the engine fills
// (the backend seam lets a backend own them: aligned here, pinned for a device). The memory is
// reported to V8 as external, so the GC sees its weight; freeHost detaches the buffer and frees the
// bytes at once instead of at some later GC (a long-running service merges again and again).
#include <cstdlib>
#include <unordered_map>
#include <string>

#include "exports.h"
#include "js_errors.h"
#include "pages.h"

namespace ms {
namespace {

constexpr double kMaxHost = 4294967295.0;  // Node 20 aborts on an external ArrayBuffer over 4 GiB − 1

struct HostBlock {
  void* data;
  int64_t bytes;
  // Returns the memory; idempotent (freeHost, then the finalizer when the JS object is collected).
  void release(Napi::Env env) {
    if (data == nullptr) return;
    unmapPages(data, static_cast<size_t>(bytes));
    data = nullptr;
    Napi::MemoryManagement::AdjustExternalMemory(env, -bytes);
  }
};

// Blocks not yet collected, by address: freeHost finds a buffer's block here. JS thread only.
std::unordered_map<void*, HostBlock*>& live() {
  static auto* blocks = new std::unordered_map<void*, HostBlock*>();
  return *blocks;
}

void finalizeBlock(Napi::Env env, void* data, HostBlock* block) {
  // freeHost already forgot it, and malloc may have handed the address to a newer block since.
  const auto found = live().find(data);
  if (found != live().end() && found->second == block) live().erase(found);
  block->release(env);
  delete block;
}

}  // namespace

Napi::Value AllocHost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const double bytes = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  const double align = info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1;
  if (!(bytes >= 1 && bytes <= kMaxHost) || static_cast<double>(static_cast<uint64_t>(bytes)) != bytes)
    throw codedError(env, "allocHost: expected a byte count from 1 to 2^32 − 1", "INVALID_ARGUMENT");
  const uint64_t a = align >= 1 && align <= 1 << 21 ? static_cast<uint64_t>(align) : 0;
  if (a == 0 || (a & (a - 1)) != 0 || static_cast<double>(a) != align)
    throw codedError(env, "allocHost: expected a power-of-two alignment up to 2 MiB", "INVALID_ARGUMENT");
  const size_t size = static_cast<size_t>(bytes);
  void* data = nullptr;
  const size_t alignment = a < sizeof(void*) ? sizeof(void*) : static_cast<size_t>(a);
  if ((data = mapPages(size, alignment)) == nullptr)
    throw codedError(env, "allocHost: out of memory allocating " + std::to_string(size) + " bytes", "NATIVE_ERROR");
  auto* block = new HostBlock{data, static_cast<int64_t>(size)};
  Napi::MemoryManagement::AdjustExternalMemory(env, block->bytes);
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, data, size, finalizeBlock, block);
  live()[data] = block;
  return Napi::Uint8Array::New(env, size, buffer, 0);
}

Napi::Value FreeHost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray())
    throw codedError(env, "freeHost: expected a Uint8Array from allocHost", "INVALID_ARGUMENT");
  Napi::ArrayBuffer buffer = info[0].As<Napi::TypedArray>().ArrayBuffer();
  if (buffer.IsDetached()) return env.Undefined();
  const auto found = live().find(buffer.Data());
  if (found == live().end())
    throw codedError(env, "freeHost: expected a Uint8Array from allocHost", "INVALID_ARGUMENT");
  // Detached first, so no JS view can reach the bytes once they are freed.
  buffer.Detach();
  found->second->release(env);
  live().erase(found);
  return env.Undefined();
}

}  // namespace ms
