// info(), setIsa(name), setThreads(n): what the addon runs on, and the overrides tests and
// `--threads` use. Both settings are process-wide.
#include <cmath>
#include <stdexcept>
#include <string>

#include "cpu.h"
#include "exports.h"
#include "js_errors.h"
#include "pool.h"

namespace ms {

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("isa", currentKernels()->isa);
  o.Set("threads", Napi::Number::New(env, poolThreads()));
#if defined(MODEL_STOCK_WITH_CUDA)
  o.Set("cudaCompiled", Napi::Boolean::New(env, true));
#else
  o.Set("cudaCompiled", Napi::Boolean::New(env, false));
#endif
  Napi::Array isas = Napi::Array::New(env);
  uint32_t i = 0;
  for (const KernelTable* t : availableKernels()) isas.Set(i++, t->isa);
  o.Set("availableIsas", isas);
#if defined(__x86_64__) || defined(_M_X64)
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

Napi::Value SetIsa(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw codedError(env, "setIsa: expected a string ('avx512', 'avx2' or 'scalar')", "NATIVE_ERROR");
  try {
    setIsa(info[0].As<Napi::String>().Utf8Value());
  } catch (const std::runtime_error& e) {
    throw codedError(env, e.what(), "NATIVE_ERROR");
  }
  return env.Undefined();
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const double n = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  if (!(n >= 0 && n <= 1024) || std::floor(n) != n)
    throw codedError(env, "setThreads: expected an integer from 1 to 1024 (0 = all cores)", "NATIVE_ERROR");
  setPoolThreads(static_cast<unsigned>(n));
  return env.Undefined();
}

}  // namespace ms
