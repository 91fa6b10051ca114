// The CUDA exports: cudaInfo, cudaMemoryInfo, cudaAllocHost / cudaFreeHost, cudaOpenTensor (a
// per-tensor session object). Compiled into every build; without MODEL_STOCK_WITH_CUDA they say
// "not compiled in" (cudaInfo) or throw BACKEND_UNAVAILABLE. Types: lib/engine/cuda-addon-types.ts.
#include <cmath>
#include <memory>
#include <string>

#include "../exports.h"
#include "../job.h"
#include "../js_errors.h"
#include "../promise_worker.h"

#if defined(MODEL_STOCK_WITH_CUDA)
#include <cuda_runtime_api.h>

#include "device.h"
#include "session.h"
#endif

namespace ms {
namespace {

constexpr double kMaxSafeInteger = 9007199254740991.0;

const char* const kNotCompiled =
    "CUDA is not compiled into this build of model_stock.node (built without nvcc, with "
    "MODEL_STOCK_CUDA=off, or by node-gyp); rebuild with nvcc on PATH: MODEL_STOCK_CUDA=on npm run build:native";

[[maybe_unused]] Napi::Error unavailable(Napi::Env env, const std::string& why) {
  return codedError(env, why, "BACKEND_UNAVAILABLE");
}

// An integer argument in [min, max], else a NATIVE_ERROR naming it.
double integerArg(Napi::Env env, Napi::Value v, const char* what, double min, double max) {
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!(d >= min && d <= max) || std::floor(d) != d)
    throw codedError(env, std::string(what) + ": expected an integer from " + std::to_string(static_cast<int64_t>(min)) +
                              " to " + std::to_string(static_cast<int64_t>(max)),
                     "INVALID_ARGUMENT");
  return d;
}

#if defined(MODEL_STOCK_WITH_CUDA)

std::string version(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }

Napi::Value cudaInfo(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("compiled", true);
  int runtime = 0, driver = 0;
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess) o.Set("runtimeVersion", version(runtime));
  if (cudaDriverGetVersion(&driver) == cudaSuccess && driver > 0) o.Set("driverVersion", version(driver));
  cudaGetLastError();
  Napi::Array devices = Napi::Array::New(env);
  const std::string why = cuda::unavailableReason(0);
  if (!why.empty()) o.Set("reason", why);
  int count = 0;
  if (why.empty() && cudaGetDeviceCount(&count) == cudaSuccess) {
    for (int i = 0; i < count; ++i) {
      cudaDeviceProp p{};
      if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
      Napi::Object d = Napi::Object::New(env);
      d.Set("index", i);
      d.Set("name", p.name);
      d.Set("totalMemory", static_cast<double>(p.totalGlobalMem));
      d.Set("computeCapability", std::to_string(p.major) + "." + std::to_string(p.minor));
      d.Set("multiprocessors", p.multiProcessorCount);
      char bus[32];
      std::snprintf(bus, sizeof bus, "%04x:%02x:%02x.0", p.pciDomainID, p.pciBusID, p.pciDeviceID);
      d.Set("pciBusId", bus);
      devices.Set(devices.Length(), d);
    }
  }
  cudaGetLastError();
  o.Set("devices", devices);
  return o;
}

// Resolves with { available, total } of one device, creating its context off the event loop.
class MemoryInfoWorker : public Napi::AsyncWorker {
 public:
  MemoryInfoWorker(Napi::Env env, int device)
      : Napi::AsyncWorker(env, "model-stock:cudaMemoryInfo"), deferred_(Napi::Promise::Deferred::New(env)),
        device_(device) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      cuda::Device& d = cuda::Device::get(device_);
      d.makeCurrent();
      available_ = d.available();
      total_ = d.total();
    } catch (const CodedError& e) {
      code_ = e.code;
      SetError(e.what());
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Object o = Napi::Object::New(Env());
    o.Set("available", static_cast<double>(available_));
    o.Set("total", static_cast<double>(total_));
    deferred_.Resolve(o);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(codedError(Env(), e.Message(), code_).Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  int device_;
  uint64_t available_ = 0, total_ = 0;
  const char* code_ = "CUDA_ERROR";
};

// Runs one call of a session on a libuv thread. The shared_ptr keeps the session alive even if
// JavaScript drops the session object while the call runs; Keep() holds the job's typed arrays.
template <class Task>
class SessionWorker : public PromiseWorker {
 public:
  using Fn = void (*)(cuda::Session&, Task&);
  SessionWorker(Napi::Env env, const char* name, std::shared_ptr<cuda::Session> s, std::unique_ptr<Task> task, Fn fn)
      : PromiseWorker(env, name), session_(std::move(s)), task_(std::move(task)), fn_(fn) {
    Keep(task_->arrays);
    // Pinned buffers the call reads or writes are held from now (the JS thread) until the worker is
    // destroyed (the JS thread again, after the Promise settles): cudaFreeHost in between throws.
    for (const Napi::Object& a : task_->arrays) {
      if (!a.IsTypedArray()) continue;
      Napi::TypedArray view = a.As<Napi::TypedArray>();
      const uint8_t* p = static_cast<const uint8_t*>(view.ArrayBuffer().Data()) + view.ByteOffset();
      if (view.ByteLength() > 0 && cuda::pinned::use(p, view.ByteLength())) held_.push_back(p);
    }
  }
  ~SessionWorker() override {
    for (const void* p : held_) cuda::pinned::unuse(p);
  }

 protected:
  void Run() override { fn_(*session_, *task_); }

 private:
  std::shared_ptr<cuda::Session> session_;
  std::unique_ptr<Task> task_;
  Fn fn_;
  std::vector<const void*> held_;
};

struct NoTask {
  std::vector<Napi::Object> arrays;
};

using Handle = std::shared_ptr<cuda::Session>;

Handle& handleOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value self = info.This();
  Napi::Value h = self.IsObject() ? self.As<Napi::Object>().Get("handle") : env.Undefined();
  if (!h.IsExternal()) throw codedError(env, "CUDA session method called without its session object", "INVALID_ARGUMENT");
  return *h.As<Napi::External<Handle>>().Data();
}

template <class Task, void (*Parse)(Napi::Value, Task&), void (*Call)(cuda::Session&, Task&)>
Napi::Value sessionPass(const Napi::CallbackInfo& info, const char* name) {
  Napi::Env env = info.Env();
  Handle& h = handleOf(info);
  auto task = std::make_unique<Task>();
  try {
    Parse(info[0], *task);
  } catch (const ArgumentError& e) {
    return rejected(env, e.what(), "INVALID_ARGUMENT");
  }
  return queued<SessionWorker<Task>>(env, name, h, std::move(task), Call);
}

void callGram(cuda::Session& s, GramTask& t) { s.gram(t.window); }
void callInterpolate(cuda::Session& s, InterpolateTask& t) { s.interpolate(t.window); }
void callClose(cuda::Session& s, NoTask&) { s.close(); }

Napi::Value SessionGram(const Napi::CallbackInfo& info) {
  return sessionPass<GramTask, parseGramJob, callGram>(info, "model-stock:cudaGram");
}
DType dtypeArg(Napi::Env env, Napi::Value v, const std::string& field);

// An interpolation job without inputs ({ count, firstElement, unitLength, t, out, outDtype }): the
// session's resident copy from the Gram pass must hold the window (the seam's `holds`).
void parseHeldInterpolateJob(Napi::Env env, Napi::Object job, const cuda::SessionSpec& spec, InterpolateTask& task) {
  const char* op = "interpolate";
  auto integer = [&](const char* key, double min) {
    return static_cast<uint64_t>(integerArg(env, job.Get(key), (std::string(op) + ": job." + key).c_str(), min, kMaxSafeInteger));
  };
  InterpolateWindow& w = task.window;
  w.count = integer("count", 0);
  w.firstElement = integer("firstElement", 0);
  w.unitLength = integer("unitLength", 1);
  w.n = spec.n;
  for (DType d : spec.dtypes) task.inputs.push_back(Input{nullptr, d});
  w.inputs = task.inputs.data();
  Napi::Value t = job.Get("t");
  Napi::Value out = job.Get("out");
  if (!t.IsTypedArray() || t.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    throw codedError(env, "interpolate: expected job.t to be a Float64Array", "INVALID_ARGUMENT");
  if (!out.IsTypedArray() || out.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    throw codedError(env, "interpolate: expected job.out to be a Uint8Array", "INVALID_ARGUMENT");
  w.outDtype = dtypeArg(env, job.Get("outDtype"), "job.outDtype");
  const uint64_t units = w.count == 0 ? 0 : (w.firstElement + w.count - 1) / w.unitLength + 1;
  Napi::Float64Array ratios = t.As<Napi::Float64Array>();
  Napi::Uint8Array bytes = out.As<Napi::Uint8Array>();
  if (ratios.ElementLength() < units)
    throw codedError(env, "interpolate: job.t has too few ratios for the window", "INVALID_ARGUMENT");
  if (bytes.ByteLength() != w.count * dtypeSize(w.outDtype))
    throw codedError(env, "interpolate: job.out is not count × size(outDtype) bytes", "INVALID_ARGUMENT");
  w.t = ratios.Data();
  w.out = bytes.Data();
  task.arrays.push_back(ratios);
  task.arrays.push_back(bytes);
}

Napi::Value SessionInterpolate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info[0].IsObject() && info[0].As<Napi::Object>().Get("base").IsUndefined()) {
    Handle& h = handleOf(info);
    auto task = std::make_unique<InterpolateTask>();
    parseHeldInterpolateJob(env, info[0].As<Napi::Object>(), h->spec(), *task);
    return queued<SessionWorker<InterpolateTask>>(env, "model-stock:cudaInterpolate", h, std::move(task),
                                                  callInterpolate);
  }
  return sessionPass<InterpolateTask, parseInterpolateJob, callInterpolate>(info, "model-stock:cudaInterpolate");
}
Napi::Value SessionClose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return queued<SessionWorker<NoTask>>(env, "model-stock:cudaClose", handleOf(info), std::make_unique<NoTask>(),
                                       callClose);
}
Napi::Value SessionStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const cuda::SessionStats s = handleOf(info)->stats();
  Napi::Object o = Napi::Object::New(env);
  o.Set("decided", s.decided);
  o.Set("resident", s.resident);
  o.Set("residentBytes", static_cast<double>(s.residentBytes));
  o.Set("uploadedInputBytes", static_cast<double>(s.uploadedInputBytes));
  o.Set("uploadedBytes", static_cast<double>(s.uploadedBytes));
  o.Set("downloadedBytes", static_cast<double>(s.downloadedBytes));
  o.Set("gramKernelMs", s.gramKernelMs);
  o.Set("interpolateKernelMs", s.interpolateKernelMs);
  return o;
}

DType dtypeArg(Napi::Env env, Napi::Value v, const std::string& field) {
  if (v.IsString()) {
    const std::string s = v.As<Napi::String>().Utf8Value();
    DType d;
    if (parseDType(s.data(), s.size(), &d)) return d;
  }
  throw codedError(env, "cudaOpenTensor: expected " + field + " to be one of 'F64', 'F32', 'F16', 'BF16'",
                   "INVALID_ARGUMENT");
}

cuda::SessionSpec parseSpec(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) throw codedError(env, "cudaOpenTensor: expected a spec object", "INVALID_ARGUMENT");
  Napi::Object o = v.As<Napi::Object>();
  cuda::SessionSpec spec;
  Napi::Value name = o.Get("name");
  spec.tensor = name.IsString() ? name.As<Napi::String>().Utf8Value() : "?";
  spec.count = static_cast<uint64_t>(integerArg(env, o.Get("count"), "cudaOpenTensor: spec.count", 0, kMaxSafeInteger));
  spec.unitLength =
      static_cast<uint64_t>(integerArg(env, o.Get("unitLength"), "cudaOpenTensor: spec.unitLength", 1, kMaxSafeInteger));
  if (!o.Get("device").IsUndefined())
    spec.device = static_cast<int>(integerArg(env, o.Get("device"), "cudaOpenTensor: spec.device", 0, 1023));
  if (!o.Get("budgetBytes").IsUndefined())
    spec.budget =
        static_cast<uint64_t>(integerArg(env, o.Get("budgetBytes"), "cudaOpenTensor: spec.budgetBytes", 1, kMaxSafeInteger));
  spec.dtypes.push_back(dtypeArg(env, o.Get("base"), "spec.base"));
  Napi::Value models = o.Get("models");
  if (!models.IsArray() || models.As<Napi::Array>().Length() < 2 ||
      models.As<Napi::Array>().Length() > static_cast<uint32_t>(cuda::kMaxModels))
    throw codedError(env,
                     "cudaOpenTensor: expected spec.models to be an array of 2 to " + std::to_string(cuda::kMaxModels) +
                         " dtypes (the CUDA backend's limit on fine-tunes)",
                     "INVALID_ARGUMENT");
  Napi::Array list = models.As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); ++i)
    spec.dtypes.push_back(dtypeArg(env, list.Get(i), "spec.models[" + std::to_string(i) + "]"));
  spec.n = static_cast<int>(list.Length());
  spec.outDtype = dtypeArg(env, o.Get("outDtype"), "spec.outDtype");
  return spec;
}

#endif  // MODEL_STOCK_WITH_CUDA

}  // namespace

Napi::Value CudaInfo(const Napi::CallbackInfo& info) {
#if defined(MODEL_STOCK_WITH_CUDA)
  return cudaInfo(info.Env());
#else
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("compiled", false);
  o.Set("reason", kNotCompiled);
  o.Set("devices", Napi::Array::New(info.Env()));
  return o;
#endif
}

Napi::Value CudaMemoryInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if defined(MODEL_STOCK_WITH_CUDA)
  const int device = info[0].IsUndefined() ? 0 : static_cast<int>(integerArg(env, info[0], "cudaMemoryInfo", 0, 1023));
  return queued<MemoryInfoWorker>(env, device);
#else
  throw unavailable(env, kNotCompiled);
#endif
}

Napi::Value CudaAllocHost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // Below 4 GiB: Node 20 aborts on larger external buffers (see mapView).
  const double bytes = integerArg(env, info[0], "cudaAllocHost", 1, 4294967295.0);
#if defined(MODEL_STOCK_WITH_CUDA)
  void* p;
  uint64_t generation;
  try {
    p = cuda::pinned::allocate(static_cast<size_t>(bytes), &generation);
  } catch (const CodedError& e) {
    throw codedError(env, e.what(), e.code);
  }
  // The finalizer frees what cudaFreeHost has not; the generation tells a later allocation at the
  // same address from this one.
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
      env, p, static_cast<size_t>(bytes),
      [](Napi::Env, void* data, uint64_t* gen) {
        cuda::pinned::finalize(data, *gen);
        delete gen;
      },
      new uint64_t(generation));
  return Napi::Uint8Array::New(env, static_cast<size_t>(bytes), ab, 0);
#else
  (void)bytes;
  throw unavailable(env, kNotCompiled);
#endif
}

Napi::Value CudaFreeHost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if defined(MODEL_STOCK_WITH_CUDA)
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    throw codedError(env, "cudaFreeHost: expected the Uint8Array cudaAllocHost returned", "INVALID_ARGUMENT");
  Napi::Uint8Array view = info[0].As<Napi::Uint8Array>();
  Napi::ArrayBuffer ab = view.ArrayBuffer();
  if (ab.IsDetached()) throw codedError(env, "cudaFreeHost: the buffer was freed already", "INVALID_ARGUMENT");
  try {
    cuda::pinned::free(ab.Data());
  } catch (const CodedError& e) {
    throw codedError(env, e.what(), e.code);
  }
  // Every view of the buffer now has length 0: JavaScript cannot touch the freed memory.
  ab.Detach();
  return env.Undefined();
#else
  throw unavailable(env, kNotCompiled);
#endif
}

Napi::Value CudaOpenTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#if defined(MODEL_STOCK_WITH_CUDA)
  cuda::SessionSpec spec = parseSpec(env, info[0]);
  auto* handle = new Handle(std::make_shared<cuda::Session>(std::move(spec)));
  Napi::External<Handle> external =
      Napi::External<Handle>::New(env, handle, [](Napi::Env, Handle* h) { delete h; });
  Napi::Object o = Napi::Object::New(env);
  o.DefineProperties({
      Napi::PropertyDescriptor::Value("handle", external, napi_default),
      Napi::PropertyDescriptor::Function(env, o, "gram", SessionGram),
      Napi::PropertyDescriptor::Function(env, o, "interpolate", SessionInterpolate),
      Napi::PropertyDescriptor::Function(env, o, "close", SessionClose),
      Napi::PropertyDescriptor::Function(env, o, "stats", SessionStats),
  });
  return o;
#else
  throw unavailable(env, kNotCompiled);
#endif
}

}  // namespace ms
