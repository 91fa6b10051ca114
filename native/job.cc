#include "job.h"

#include <cmath>
#include <string>

#include "cpu.h"
#include "js_errors.h"

namespace ms {
namespace parse {

constexpr double kMaxSafeInteger = 9007199254740991.0;

std::string describe(Napi::Value v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsTypedArray()) {
    switch (v.As<Napi::TypedArray>().TypedArrayType()) {
      case napi_uint8_array: return "Uint8Array";
      case napi_float64_array: return "Float64Array";
      case napi_float32_array: return "Float32Array";
      default: return "another typed array";
    }
  }
  if (v.IsArrayBuffer()) return "ArrayBuffer";
  if (v.IsArray()) return "array";
  if (v.IsString()) {
    const std::string s = v.As<Napi::String>().Utf8Value();
    return "string '" + (s.size() > 40 ? s.substr(0, 40) + "…" : s) + "'";
  }
  if (v.IsNumber()) {
    const double d = v.As<Napi::Number>().DoubleValue();
    return "number " + (std::isfinite(d) ? std::to_string(d) : std::string(std::isnan(d) ? "NaN" : "Infinity"));
  }
  if (v.IsBoolean()) return "boolean";
  if (v.IsFunction()) return "function";
  return "object";
}

[[noreturn]] void fail(const char* op, const std::string& field, const std::string& expected, Napi::Value got) {
  throw ArgumentError(std::string(op) + ": expected " + field + " to be " + expected + " but received " + describe(got));
}

Napi::Object object(const char* op, Napi::Value v, const std::string& field) {
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray()) fail(op, field, "an object", v);
  return v.As<Napi::Object>();
}

uint64_t integer(const char* op, Napi::Object o, const char* key, double min) {
  Napi::Value v = o.Get(key);
  const std::string field = std::string("job.") + key;
  if (!v.IsNumber()) fail(op, field, "an integer", v);
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= min && d <= kMaxSafeInteger) || std::floor(d) != d)
    fail(op, field, "a safe integer ≥ " + std::to_string(static_cast<int>(min)), v);
  return static_cast<uint64_t>(d);
}

DType dtype(const char* op, Napi::Value v, const std::string& field) {
  if (v.IsString()) {
    const std::string s = v.As<Napi::String>().Utf8Value();
    DType d;
    if (parseDType(s.data(), s.size(), &d)) return d;
  }
  fail(op, field, "one of 'F64', 'F32', 'F16', 'BF16'", v);
}

Napi::TypedArray typedArray(const char* op, Napi::Value v, const std::string& field, napi_typedarray_type type,
                            const char* name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) fail(op, field, name, v);
  return v.As<Napi::TypedArray>();
}

Input bytesOf(const char* op, Napi::Value v, const std::string& field, uint64_t count,
              std::vector<Napi::Object>& keep) {
  Napi::Object o = object(op, v, field);
  const DType d = dtype(op, o.Get("dtype"), field + ".dtype");
  Napi::Value b = o.Get("bytes");
  Napi::Uint8Array bytes = typedArray(op, b, field + ".bytes", napi_uint8_array, "a Uint8Array").As<Napi::Uint8Array>();
  const uint64_t want = count * dtypeSize(d);
  if (bytes.ByteLength() != want)
    throw ArgumentError(std::string(op) + ": " + field + ".bytes has " + std::to_string(bytes.ByteLength()) +
                        " bytes but count × size(" + dtypeName(d) + ") = " + std::to_string(want));
  keep.push_back(bytes);
  return Input{bytes.Data(), d};
}

void runtime(const char* op, Napi::Object job, const KernelTable*& kernels, unsigned& threadCount) {
  Napi::Value isa = job.Get("isa");
  if (isa.IsUndefined()) {
    kernels = bestKernels();
  } else {
    if (!isa.IsString()) fail(op, "job.isa", "'avx512', 'avx2' or 'scalar'", isa);
    try {
      kernels = kernelsFor(isa.As<Napi::String>().Utf8Value());
    } catch (const std::runtime_error& e) {
      throw ArgumentError(std::string(op) + ": job." + e.what());
    }
  }
  threadCount = 0;
  if (!job.Get("threads").IsUndefined()) {
    const uint64_t threads = integer(op, job, "threads", 0);
    if (threads > 1024) fail(op, "job.threads", "an integer from 0 to 1024", job.Get("threads"));
    threadCount = static_cast<unsigned>(threads);
  }
}

const int32_t* abortFlag(const char* op, Napi::Object job, std::vector<Napi::Object>& keep) {
  Napi::Value v = job.Get("abort");
  if (v.IsUndefined()) return nullptr;
  Napi::TypedArray flag = typedArray(op, v, "job.abort", napi_int32_array, "an Int32Array");
  if (flag.ElementLength() < 1) fail(op, "job.abort", "an Int32Array of at least one element", v);
  keep.push_back(flag);
  return flag.As<Napi::Int32Array>().Data();
}

}  // namespace parse

namespace {

using namespace parse;

Input input(const char* op, Napi::Value v, const std::string& field, uint64_t count, ParsedWindow& task) {
  return bytesOf(op, v, field, count, task.arrays);
}

// The job's ISA (default: the best this CPU runs) and parallelism (default 0: all cores).
void parseRuntime(const char* op, Napi::Object job, WindowGeometry& g) { runtime(op, job, g.kernels, g.threads); }

// Fills inputs and geometry; returns the number of units the window touches' last index + 1.
uint64_t parseWindow(const char* op, Napi::Value jobValue, ParsedWindow& task, WindowGeometry& g, Napi::Object& job) {
  job = object(op, jobValue, "job");
  g.count = integer(op, job, "count", 0);
  g.firstElement = integer(op, job, "firstElement", 0);
  g.unitLength = integer(op, job, "unitLength", 1);
  parseRuntime(op, job, g);
  g.abort = abortFlag(op, job, task.arrays);
  if (static_cast<double>(g.firstElement) + static_cast<double>(g.count) > kMaxSafeInteger)
    throw ArgumentError(std::string(op) + ": job.firstElement + job.count exceeds 2^53 − 1");
  Napi::Value modelsValue = job.Get("models");
  if (!modelsValue.IsArray()) fail(op, "job.models", "an array", modelsValue);
  Napi::Array models = modelsValue.As<Napi::Array>();
  if (models.Length() < 2)
    throw ArgumentError(std::string(op) + ": job.models must hold N ≥ 2 fine-tunes but has " +
                        std::to_string(models.Length()));
  task.inputs.push_back(input(op, job.Get("base"), "job.base", g.count, task));
  for (uint32_t i = 0; i < models.Length(); ++i)
    task.inputs.push_back(input(op, models.Get(i), "job.models[" + std::to_string(i) + "]", g.count, task));
  g.inputs = task.inputs.data();
  g.n = static_cast<int>(models.Length());
  return g.count == 0 ? 0 : (g.firstElement + g.count - 1) / g.unitLength + 1;
}

}  // namespace

void parseGramJob(Napi::Value jobValue, GramTask& task) {
  const char* op = "gram";
  Napi::Object job;
  const uint64_t units = parseWindow(op, jobValue, task, task.window, job);
  Napi::TypedArray gram = typedArray(op, job.Get("gram"), "job.gram", napi_float64_array, "a Float64Array");
  const uint64_t want = units * static_cast<uint64_t>(gramSize(task.window.n));
  if (gram.ElementLength() < want)
    throw ArgumentError(std::string(op) + ": job.gram has " + std::to_string(gram.ElementLength()) +
                        " entries but the window reaches unit " + std::to_string(units - 1) + ", needing " +
                        std::to_string(want));
  task.arrays.push_back(gram);
  task.window.gram = gram.As<Napi::Float64Array>().Data();
}

void parseInterpolateJob(Napi::Value jobValue, InterpolateTask& task) {
  const char* op = "interpolate";
  Napi::Object job;
  const uint64_t units = parseWindow(op, jobValue, task, task.window, job);
  Napi::TypedArray t = typedArray(op, job.Get("t"), "job.t", napi_float64_array, "a Float64Array");
  if (t.ElementLength() < units)
    throw ArgumentError(std::string(op) + ": job.t has " + std::to_string(t.ElementLength()) +
                        " entries but the window reaches unit " + std::to_string(units - 1));
  const DType outDtype = dtype(op, job.Get("outDtype"), "job.outDtype");
  Napi::Uint8Array out =
      typedArray(op, job.Get("out"), "job.out", napi_uint8_array, "a Uint8Array").As<Napi::Uint8Array>();
  const uint64_t want = task.window.count * dtypeSize(outDtype);
  if (out.ByteLength() != want)
    throw ArgumentError(std::string(op) + ": job.out has " + std::to_string(out.ByteLength()) +
                        " bytes but count × size(" + dtypeName(outDtype) + ") = " + std::to_string(want));
  task.arrays.push_back(t);
  task.arrays.push_back(out);
  task.window.t = t.As<Napi::Float64Array>().Data();
  task.window.out = out.Data();
  task.window.outDtype = outDtype;
}

}  // namespace ms
