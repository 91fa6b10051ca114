// An AsyncWorker that settles a Promise. Execute never lets a C++ exception escape: the message
// becomes the library's error (js_errors.h) with a `code`. Every typed array the work reads or writes is held by a
// persistent reference until the Promise settles, so the GC cannot free it mid-work.
#pragma once
#include <napi.h>

#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "js_errors.h"
#include "kernels.h"

namespace ms {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env, const char* name)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Keep(const std::vector<Napi::Object>& objects) {
    for (const Napi::Object& o : objects) kept_.push_back(Napi::Persistent(o));
  }

 protected:
  virtual void Run() = 0;

  void Execute() final {
    try {
      Run();
    } catch (const IoError& e) {
      code_ = "IO_ERROR";
      SetError(e.what());
    } catch (const Cancelled& e) {
      code_ = "CANCELLED";
      SetError(e.what());
    } catch (const NonFinite& e) {
      code_ = "NON_FINITE";
      SetError(e.what());
    } catch (const ArgumentError& e) {
      code_ = "INVALID_ARGUMENT";
      SetError(e.what());
    } catch (const CodedError& e) {
      code_ = e.code;
      SetError(e.what());
    } catch (const std::exception& e) {
      SetError(e.what());
    } catch (...) {
      SetError("unknown native error");
    }
  }

  // What the Promise resolves with, made on the JS thread once Run() succeeded.
  virtual Napi::Value Result() { return Env().Undefined(); }

  void OnOK() override {
    kept_.clear();
    deferred_.Resolve(Result());
  }

  void OnError(const Napi::Error& e) override {
    kept_.clear();
    deferred_.Reject(codedError(Env(), e.Message(), code_).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> kept_;
  const char* code_ = "NATIVE_ERROR";
};

// Starts a worker W built from (env, args...) and returns its Promise, taken before Queue() since the
// worker deletes itself once it settles. W: a PromiseWorker, or any AsyncWorker with a Promise().
template <class W, class... A>
Napi::Promise queued(Napi::Env env, A&&... args) {
  auto* worker = new W(env, std::forward<A>(args)...);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace ms
