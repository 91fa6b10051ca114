// The CUDA kernels' arithmetic on the CPU, for tests (compiled into every build, CUDA or not):
//   cudaEmulateGram(job), cudaEmulateInterpolate(job)  the device passes over a GramJob /
//       InterpolateJob, element by element and lane by lane in the kernels' order, through the same
//       passes.h / codec.h code nvcc compiles. The GPU must match these bit for bit; they must match
//       the native backend (interpolation: bit for bit; Gram: within rounding).
//   cudaCodecSelfTest()  codec.h against native/convert.h: every BF16 and F16 value, F32 values on
//       every rounding boundary plus random ones, random and boundary F64 values.
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "../convert.h"
#include "../exports.h"
#include "../job.h"
#include "../promise_worker.h"
#include "passes.h"

namespace ms {
namespace {

void gramStepOf(cuda::GramShape shape, const cuda::GramOperands& op, uint64_t k, double* acc) {
  using cuda::GramShapeOf;
  switch (shape) {
    case cuda::GramShape::Tri2: cuda::gramStep<GramShapeOf<2, 2, true>>(op, k, acc); return;
    case cuda::GramShape::Tri3: cuda::gramStep<GramShapeOf<3, 3, true>>(op, k, acc); return;
    case cuda::GramShape::Tri4: cuda::gramStep<GramShapeOf<4, 4, true>>(op, k, acc); return;
    case cuda::GramShape::Rect4x4: cuda::gramStep<GramShapeOf<4, 4, false>>(op, k, acc); return;
  }
}

void checkModels(int n, const char* op) {
  if (n > cuda::kMaxModels)
    throw ArgumentError(std::string(op) + ": the CUDA kernels take at most " + std::to_string(cuda::kMaxModels) +
                        " fine-tunes");
}

void emulateGram(const GramWindow& w) {
  checkModels(w.n, "cudaEmulateGram");
  if (w.count == 0) return;
  const void* p[cuda::kMaxModels + 1];
  DType dt[cuda::kMaxModels + 1];
  for (int m = 0; m <= w.n; ++m) {
    p[m] = w.inputs[m].bytes;
    dt[m] = w.inputs[m].dtype;
  }
  const cuda::ChunkGeometry g = cuda::chunkGeometry(w.firstElement, w.count, w.unitLength);
  const uint64_t chunks = cuda::chunkCount(g);
  for (const cuda::GramLaunch& l : cuda::planGram(w.n)) {
    const cuda::GramOperands op = cuda::gramOperands(l, p, dt);
    std::vector<double> partials(chunks * l.q);
    double lanes[cuda::kWarp][16];
    for (uint64_t c = 0; c < chunks; ++c) {
      uint64_t begin, end, unit;
      cuda::chunkRange(g, c, &begin, &end, &unit);
      for (auto& lane : lanes)
        for (double& a : lane) a = 0.0;
      for (uint32_t lane = 0; lane < cuda::kWarp; ++lane)
        for (uint64_t k = begin + lane; k < end; k += cuda::kWarp) gramStepOf(l.shape, op, k, lanes[lane]);
      // __shfl_down_sync: lane l adds lane l + off; only lanes below off feed lane 0.
      for (uint32_t off = cuda::kWarp / 2; off > 0; off /= 2)
        for (uint32_t lane = 0; lane < off; ++lane)
          for (int q = 0; q < l.q; ++q) lanes[lane][q] = cuda::addF64(lanes[lane][q], lanes[lane + off][q]);
      for (int q = 0; q < l.q; ++q) partials[c * l.q + q] = lanes[0][q];
    }
    cuda::addPartials(l, g, partials.data(), w.n, w.gram);
  }
}

void emulateInterpolate(const InterpolateWindow& w) {
  checkModels(w.n, "cudaEmulateInterpolate");
  if (w.count == 0) return;
  cuda::InputTable in{};
  for (int m = 0; m <= w.n; ++m) {
    in.p[m] = w.inputs[m].bytes;
    in.dt[m] = w.inputs[m].dtype;
  }
  const uint64_t firstUnit = w.firstElement / w.unitLength;
  const uint64_t units = (w.firstElement + w.count - 1) / w.unitLength - firstUnit + 1;
  std::vector<double> ab(2 * units);
  cuda::unitCoefficients(w.t, firstUnit, units, w.n, ab.data());
  const bool wide = cuda::wideInterpolation(in.dt, w.n, w.outDtype);
  for (uint64_t k = 0; k < w.count; ++k) {
    const uint64_t u = (w.firstElement + k) / w.unitLength - firstUnit;
    cuda::interpolateElement(in, w.n, k, ab[2 * u], ab[2 * u + 1], wide, w.out, w.outDtype);
  }
}

// Runs one emulated pass on a libuv thread, holding the job's typed arrays until it settles.
template <class Task, class Window, void (*Pass)(const Window&)>
class EmulateWorker : public PromiseWorker {
 public:
  EmulateWorker(Napi::Env env, std::unique_ptr<Task> t) : PromiseWorker(env, "model-stock:cudaEmulate"), task_(std::move(t)) {
    Keep(task_->arrays);
  }

 protected:
  void Run() override { Pass(task_->window); }

 private:
  std::unique_ptr<Task> task_;
};

template <class Worker, class Task, void (*Parse)(Napi::Value, Task&)>
Napi::Value queue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto task = std::make_unique<Task>();  // parsed in place: window.inputs points into it
  try {
    Parse(info[0], *task);
  } catch (const ArgumentError& e) {
    return rejected(env, e.what(), "INVALID_ARGUMENT");
  }
  return queued<Worker>(env, std::move(task));
}

// ---------------------------------------------------------------------------------------------------
// Codec self-test

struct SelfTest {
  uint64_t checked = 0;
  std::vector<std::string> mismatches;

  template <class A, class B>
  void same(A got, B want, const char* what, double input) {
    ++checked;
    if (got == want || mismatches.size() >= 20) return;
    char line[160];
    std::snprintf(line, sizeof line, "%s(%.17g): codec.h gives 0x%llx, convert.h 0x%llx", what, input,
                  static_cast<unsigned long long>(got), static_cast<unsigned long long>(want));
    mismatches.emplace_back(line);
  }
};

// xorshift64*: reproducible random bit patterns.
struct Bits {
  uint64_t s = 0x9E3779B97F4A7C15ull;
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
};

void checkF32(SelfTest& t, float f) {
  t.same(cuda::f32ToBf16(f), f32ToBf16(f), "f32ToBf16", f);
  t.same(cuda::f32ToF16(f), f32ToF16(f), "f32ToF16", f);
}

void checkF64(SelfTest& t, double d) {
  t.same(cuda::bitsOfF32(cuda::f64ToF32Odd(d)), bitsOf(f64ToF32Odd(d)), "f64ToF32Odd", d);
  t.same(cuda::f64ToBf16(d), f64ToBf16(d), "f64ToBf16", d);
  t.same(cuda::f64ToF16(d), f64ToF16(d), "f64ToF16", d);
  uint8_t a[8], b[8];
  cuda::storeFromF64(a, DType::F32, 0, d);
  storeF32(b, static_cast<float>(d));
  t.same(loadU16(a) | (static_cast<uint32_t>(loadU16(a + 2)) << 16), loadU16(b) | (static_cast<uint32_t>(loadU16(b + 2)) << 16),
         "storeFromF64(F32)", d);
}

SelfTest runSelfTest() {
  SelfTest t;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t v = static_cast<uint16_t>(h);
    t.same(cuda::bitsOfF32(cuda::bf16ToF32(v)), bitsOf(bf16ToF32(v)), "bf16ToF32", h);
    t.same(cuda::bitsOfF32(cuda::f16ToF32(v)), bitsOf(f16ToF32(v)), "f16ToF32", h);
    uint8_t raw[2];
    storeU16(raw, v);
    t.same(cuda::bitsOfF32(cuda::loadF32(raw, DType::F16, 0)), bitsOf(f16ToF32(v)), "loadF32(F16)", h);
    t.same(bitsOf(cuda::loadF64(raw, DType::BF16, 0)), bitsOf(static_cast<double>(bf16ToF32(v))), "loadF64(BF16)", h);
  }
  // Every BF16 and F16 rounding boundary: each upper half with low halves on and beside the ties.
  const uint32_t lows[] = {0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x1FFF, 0x2000, 0x3000,
                           0x7FFF, 0x8000, 0x8001, 0xBFFF, 0xC000, 0xE000, 0xF000, 0xFFFF};
  for (uint32_t hi = 0; hi < 0x10000; ++hi)
    for (uint32_t lo : lows) checkF32(t, floatOf(hi << 16 | lo));
  Bits rng;
  for (int i = 0; i < 1000000; ++i) checkF32(t, floatOf(static_cast<uint32_t>(rng.next() >> 32)));
  // float64: random patterns in and around float32's range, and each float32 boundary ± a little.
  for (int i = 0; i < 500000; ++i) {
    const uint64_t r = rng.next();
    const uint64_t exponent = 1023 - 160 + (r >> 52) % 330;  // 2^-160 … 2^170: subnormals to overflow
    checkF64(t, doubleOf((r & 0x800FFFFFFFFFFFFFull) | exponent << 52));
  }
  for (uint32_t hi = 0; hi < 0x10000; hi += 7)
    for (uint32_t lo : lows) {
      const double v = floatOf(hi << 16 | lo);
      checkF64(t, v);
      checkF64(t, std::nextafter(v, INFINITY));
      checkF64(t, std::nextafter(v, -INFINITY));
    }
  const double specials[] = {0.0, -0.0, INFINITY, -INFINITY, NAN, -NAN, 65520.0, 65519.99999999999,
                             std::ldexp(1.0, -1074), std::ldexp(1.0, -25), std::ldexp(1.0, -133), 1e300, -1e300};
  for (double d : specials) checkF64(t, d);
  return t;
}

}  // namespace

Napi::Value CudaEmulateGram(const Napi::CallbackInfo& info) {
  return queue<EmulateWorker<GramTask, GramWindow, emulateGram>, GramTask, parseGramJob>(info);
}

Napi::Value CudaEmulateInterpolate(const Napi::CallbackInfo& info) {
  return queue<EmulateWorker<InterpolateTask, InterpolateWindow, emulateInterpolate>, InterpolateTask,
               parseInterpolateJob>(info);
}

// Synchronous (~0.2 s): a test hook, not for use inside a service.
Napi::Value CudaCodecSelfTest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const SelfTest t = runSelfTest();
  Napi::Object o = Napi::Object::New(env);
  o.Set("checked", static_cast<double>(t.checked));
  Napi::Array list = Napi::Array::New(env);
  for (const std::string& m : t.mismatches) list.Set(list.Length(), m);
  o.Set("mismatches", list);
  return o;
}

}  // namespace ms
