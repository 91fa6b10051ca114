// lowRankPack(job), lowRankGram(job), lowRankInterpolate(job): the low-rank steps (lowrank.h) as
// Promises. Parsed on the JS thread — re-checking cheaply what lib/engine/checked.ts validated —, run on
// a libuv worker over the pool. The packed factors live in Float64Arrays the JS session owns, so the
// addon holds nothing between jobs.
#include <memory>
#include <string>
#include <vector>

#include "exports.h"
#include "job.h"
#include "lowrank.h"
#include "promise_worker.h"

namespace ms {
namespace {

using namespace parse;

std::string str(uint64_t v) { return std::to_string(v); }

// Σ r_i over the fine-tunes of one tensor (LoRA ranks are ≤ 256 in practice).
constexpr int kMaxRank = 65536;

// v as an integer in [min, max], named `field` in the error.
int whole(const char* op, Napi::Value v, const std::string& field, int min, int max) {
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= min && d <= max) || d != static_cast<double>(static_cast<int>(d)))
    fail(op, field, "an integer from " + std::to_string(min) + " to " + std::to_string(max), v);
  return static_cast<int>(d);
}

bool flag(const char* op, Napi::Value v, const std::string& field) {
  if (!v.IsBoolean()) fail(op, field, "a boolean", v);
  return v.As<Napi::Boolean>().Value();
}

std::vector<int> ranksOf(const char* op, Napi::Object job) {
  Napi::Value v = job.Get("ranks");
  if (!v.IsArray()) fail(op, "job.ranks", "an array", v);
  Napi::Array a = v.As<Napi::Array>();
  if (a.Length() < 1 || a.Length() > 1024) fail(op, "job.ranks", "an array of 1 to 1024 ranks", v);
  std::vector<int> ranks;
  int total = 0;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    ranks.push_back(whole(op, a.Get(i), "job.ranks[" + std::to_string(i) + "]", 0, kMaxRank));
    total += ranks.back();
    if (total > kMaxRank) throw ArgumentError(std::string(op) + ": job.ranks add up to more than " + std::to_string(kMaxRank));
  }
  return ranks;
}

// Rows and columns: the addon's sizes are products of these, kept far from overflowing 64 bits.
uint64_t extent(const char* op, Napi::Object job, const char* key) {
  const uint64_t v = integer(op, job, key, 1);
  if (v > (uint64_t{1} << 40)) fail(op, std::string("job.") + key, "at most 2^40", job.Get(key));
  return v;
}

// A Float64Array of at least `need` elements.
double* doubles(const char* op, Napi::Object job, const char* key, uint64_t need, std::vector<Napi::Object>& keep) {
  const std::string field = std::string("job.") + key;
  Napi::TypedArray a = typedArray(op, job.Get(key), field, napi_float64_array, "a Float64Array");
  if (a.ElementLength() < need)
    throw ArgumentError(std::string(op) + ": " + field + " has " + str(a.ElementLength()) + " elements, needs " +
                        str(need));
  keep.push_back(a);
  return a.As<Napi::Float64Array>().Data();
}

// job.cols, job.uRows, job.ranks, job.u and job.v: packed factors as lowRankPack left them.
void parsePacked(const char* op, Napi::Object job, PackedFactors& f, std::vector<Napi::Object>& keep) {
  f.cols = extent(op, job, "cols");
  f.uRows = integer(op, job, "uRows", 0);
  setRanks(f, ranksOf(op, job));
  const uint64_t S = static_cast<uint64_t>(f.rank());
  f.u = doubles(op, job, "u", panelsOf(f.uRows) * S * kPanel, keep);
  f.v = doubles(op, job, "v", panelsOf(f.cols) * S * kPanel, keep);
}

struct PackJobTask {
  std::vector<Napi::Object> keep;
  std::vector<LowRankFactorInput> factors;
  uint64_t rows = 0;
  PackedFactors f;
  double* u = nullptr;
  double* v = nullptr;
  unsigned threads = 0;
  const int32_t* abort = nullptr;

  void parse(Napi::Value value) {
    const char* op = "lowRankPack";
    Napi::Object job = object(op, value, "job");
    rows = extent(op, job, "rows");
    f.cols = extent(op, job, "cols");
    f.uFirstRow = integer(op, job, "uFirstRow", 0);
    f.uRows = integer(op, job, "uRows", 0);
    if (f.uFirstRow + f.uRows > rows)
      throw ArgumentError(std::string(op) + ": job.uFirstRow + job.uRows exceeds job.rows (" + str(rows) + ")");
    const KernelTable* unused;
    runtime(op, job, unused, threads);
    abort = abortFlag(op, job, keep);
    Napi::Value list = job.Get("factors");
    if (!list.IsArray() || list.As<Napi::Array>().Length() < 1) fail(op, "job.factors", "a non-empty array", list);
    Napi::Array array = list.As<Napi::Array>();
    std::vector<int> ranks;
    for (uint32_t i = 0; i < array.Length(); ++i) {
      const std::string field = "job.factors[" + std::to_string(i) + "]";
      Napi::Value item = array.Get(i);
      LowRankFactorInput in{nullptr, DType::F32, nullptr, DType::F32, 0, false};
      if (!item.IsNull() && !item.IsUndefined()) {
        Napi::Object o = object(op, item, field);
        in.rank = whole(op, o.Get("rank"), field + ".rank", 1, kMaxRank);
        in.transposed = flag(op, o.Get("transposed"), field + ".transposed");
        const uint64_t r = static_cast<uint64_t>(in.rank);
        const Input a = bytesOf(op, o.Get("a"), field + ".a", r * (in.transposed ? rows : f.cols), keep);
        const Input b = bytesOf(op, o.Get("b"), field + ".b", r * (in.transposed ? f.cols : rows), keep);
        in.a = a.bytes;
        in.aDtype = a.dtype;
        in.b = b.bytes;
        in.bDtype = b.dtype;
      }
      factors.push_back(in);
      ranks.push_back(in.rank);
    }
    setRanks(f, ranks);
    const uint64_t S = static_cast<uint64_t>(f.rank());
    u = doubles(op, job, "u", panelsOf(f.uRows) * S * kPanel, keep);
    v = doubles(op, job, "v", panelsOf(f.cols) * S * kPanel, keep);
  }

  void run() { packFactors(factors, rows, f, u, v, threads, abort); }
};

// The fields every job on packed factors starts with: the factors, the ISA and threads, the abort flag.
template <class Job>
Napi::Object parsePackedJob(const char* op, Napi::Value value, PackedFactors& f, Job& job,
                            std::vector<Napi::Object>& keep) {
  Napi::Object o = object(op, value, "job");
  parsePacked(op, o, f, keep);
  runtime(op, o, job.kernels, job.threads);
  job.abort = abortFlag(op, o, keep);
  job.f = &f;
  return o;
}

struct GramJobTask {
  std::vector<Napi::Object> keep;
  PackedFactors f;
  LowRankGramJob job{};

  void parse(Napi::Value value) {
    const char* op = "lowRankGram";
    Napi::Object o = parsePackedJob(op, value, f, job, keep);
    job.scales = doubles(op, o, "scales", static_cast<uint64_t>(f.n), keep);
    job.filterWise = flag(op, o.Get("filterWise"), "job.filterWise");
    const uint64_t units = job.filterWise ? f.uRows : 1;
    job.gram = doubles(op, o, "gram", units * static_cast<uint64_t>(gramSize(f.n)), keep);
  }

  void run() { runLowRankGram(job); }
};

struct OutputJobTask {
  std::vector<Napi::Object> keep;
  PackedFactors f;
  LowRankOutputJob job{};
  std::atomic<int> nonFinite{0};

  void parse(Napi::Value value) {
    const char* op = "lowRankInterpolate";
    Napi::Object o = parsePackedJob(op, value, f, job, keep);
    job.firstRow = integer(op, o, "firstRow", 0);
    job.rows = integer(op, o, "rows", 0);
    if (job.firstRow + job.rows > f.uRows)
      throw ArgumentError(std::string(op) + ": job.firstRow + job.rows exceeds job.uRows (" + str(f.uRows) + ")");
    job.coef = doubles(op, o, "coef", job.rows * static_cast<uint64_t>(f.n), keep);
    job.base = bytesOf(op, o.Get("base"), "job.base", job.rows * f.cols, keep);
    job.outDtype = dtype(op, o.Get("outDtype"), "job.outDtype");
    Napi::Uint8Array out = typedArray(op, o.Get("out"), "job.out", napi_uint8_array, "a Uint8Array").As<Napi::Uint8Array>();
    const uint64_t want = job.rows * f.cols * dtypeSize(job.outDtype);
    if (out.ByteLength() != want)
      throw ArgumentError(std::string(op) + ": job.out has " + str(out.ByteLength()) + " bytes but rows × cols × size(" +
                          dtypeName(job.outDtype) + ") = " + str(want));
    keep.push_back(out);
    job.out = out.Data();
    job.nonFinite = &nonFinite;
  }

  void run() { runLowRankOutput(job); }
};

// Owns its task at a fixed address (the jobs point into it) and holds every typed array it reads.
template <class Task>
class TaskWorker : public PromiseWorker {
 public:
  TaskWorker(Napi::Env env, const char* name, std::unique_ptr<Task> task)
      : PromiseWorker(env, name), task_(std::move(task)) {
    Keep(task_->keep);
  }

 protected:
  void Run() override { task_->run(); }

 private:
  std::unique_ptr<Task> task_;
};

template <class Task>
Napi::Value queue(const Napi::CallbackInfo& info, const char* name) {
  Napi::Env env = info.Env();
  auto task = std::make_unique<Task>();
  try {
    task->parse(info[0]);
  } catch (const ArgumentError& e) {
    return rejected(env, e.what(), "INVALID_ARGUMENT");
  }
  return queued<TaskWorker<Task>>(env, name, std::move(task));
}

}  // namespace

Napi::Value LowRankPack(const Napi::CallbackInfo& info) { return queue<PackJobTask>(info, "model-stock:lowRankPack"); }
Napi::Value LowRankGram(const Napi::CallbackInfo& info) { return queue<GramJobTask>(info, "model-stock:lowRankGram"); }
Napi::Value LowRankInterpolate(const Napi::CallbackInfo& info) {
  return queue<OutputJobTask>(info, "model-stock:lowRankInterpolate");
}

}  // namespace ms
