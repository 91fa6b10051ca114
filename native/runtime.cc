// info(): what the addon can run on. setErrorConstructor(ctor): the class native errors are made of.
// Nothing here is a process-wide setting: every job carries its own ISA and thread count.
#include <string>

#include "cpu.h"
#include "exports.h"
#include "js_errors.h"
#include "pool.h"

namespace ms {

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("isa", bestKernels()->isa);
  o.Set("threads", Napi::Number::New(env, defaultThreads()));
  Napi::Array isas = Napi::Array::New(env);
  uint32_t i = 0;
  for (const KernelTable* t : availableKernels()) isas.Set(i++, t->isa);
  o.Set("availableIsas", isas);
#if defined(__x86_64__)
  o.Set("arch", "x64");
#elif defined(__aarch64__)
  o.Set("arch", "arm64");
#else
  o.Set("arch", "other");
#endif
  const CpuFeatures& f = cpuFeatures();
  Napi::Object features = Napi::Object::New(env);
  const std::pair<const char*, bool> list[] = {
      {"avx", f.avx},           {"avx2", f.avx2},         {"fma", f.fma},           {"f16c", f.f16c},
      {"avx512f", f.avx512f},   {"avx512bw", f.avx512bw}, {"avx512vl", f.avx512vl}, {"avx512dq", f.avx512dq},
      {"osAvx", f.osAvx},       {"osAvx512", f.osAvx512},
  };
  for (const auto& [name, on] : list) features.Set(name, Napi::Boolean::New(env, on));
  o.Set("features", features);
  return o;
}

Napi::Value SetPoolNice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throw codedError(env, "setPoolNice: expected a number", "INVALID_ARGUMENT");
  return Napi::Number::New(env, setPoolNice(info[0].As<Napi::Number>().Int32Value()));
}

Napi::Value SetErrorConstructor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsFunction())
    throw codedError(env, "setErrorConstructor: expected a constructor function", "INVALID_ARGUMENT");
  env.GetInstanceData<AddonData>()->errorConstructor = Napi::Persistent(info[0].As<Napi::Function>());
  return env.Undefined();
}

}  // namespace ms
