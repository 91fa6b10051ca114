// Errors reach JavaScript as the library's own error class: the loader hands the addon the
// ModelStockError constructor (setErrorConstructor, as better-sqlite3 does), so a native failure is a
// `new ModelStockError(code, message)` — the same class and codes as every other backend. Codes:
// 'INVALID_ARGUMENT' for a call that breaks the addon's contract (JS validates thoroughly first; the
// addon re-checks cheaply), 'IO_ERROR' for file I/O, a CodedError's own code (CUDA), 'NATIVE_ERROR'
// for anything else.
#pragma once
#include <napi.h>

#include <stdexcept>
#include <string>

namespace ms {

// A job or argument that fails the native re-check.
struct ArgumentError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct IoError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A failure that names its own code (the CUDA backend's 'CUDA_OUT_OF_MEMORY', 'CUDA_ERROR',
// 'BACKEND_UNAVAILABLE'); PromiseWorker rejects with that code.
struct CodedError : std::runtime_error {
  CodedError(const char* code, const std::string& message) : std::runtime_error(message), code(code) {}
  const char* code;  // a string literal
};

// Per-environment state (one per Node worker thread that loads the addon).
struct AddonData {
  Napi::FunctionReference errorConstructor;
};

inline Napi::Error codedError(Napi::Env env, const std::string& message, const char* code) {
  AddonData* data = env.GetInstanceData<AddonData>();
  if (data != nullptr && !data->errorConstructor.IsEmpty()) {
    Napi::Value e = data->errorConstructor.New({Napi::String::New(env, code), Napi::String::New(env, message)});
    return Napi::Error(env, e);
  }
  // Before the loader registered the class (or when a test loads the addon bare).
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

inline Napi::Promise rejected(Napi::Env env, const std::string& message, const char* code) {
  Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
  d.Reject(codedError(env, message, code).Value());
  return d.Promise();
}

}  // namespace ms
