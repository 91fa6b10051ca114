// Errors that reach JavaScript carry a `code`: 'NATIVE_ERROR' for misuse and kernel failures,
// 'IO_ERROR' for file reads, or the code a CodedError names. C++ code throws these types; the JS-facing layer turns them into Errors.
#pragma once
#include <napi.h>

#include <stdexcept>
#include <string>

namespace ms {

// A job or argument that fails the native re-check (JS validates thoroughly first).
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

inline Napi::Error codedError(Napi::Env env, const std::string& message, const char* code) {
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
