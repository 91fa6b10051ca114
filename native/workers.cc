// gram(job) and interpolate(job): parse on the JS thread, compute on a libuv worker over the pool.
#include <utility>

#include "exports.h"
#include "job.h"
#include "promise_worker.h"

namespace ms {
namespace {

class GramWorker : public PromiseWorker {
 public:
  GramWorker(Napi::Env env, GramTask&& task) : PromiseWorker(env, "model-stock:gram"), task_(std::move(task)) {
    task_.window.inputs = task_.inputs.data();
    Keep(task_.arrays);
  }

 protected:
  void Run() override { runGram(task_.window); }

 private:
  GramTask task_;
};

class InterpolateWorker : public PromiseWorker {
 public:
  InterpolateWorker(Napi::Env env, InterpolateTask&& task)
      : PromiseWorker(env, "model-stock:interpolate"), task_(std::move(task)) {
    task_.window.inputs = task_.inputs.data();
    Keep(task_.arrays);
  }

 protected:
  void Run() override { runInterpolate(task_.window); }

 private:
  InterpolateTask task_;
};

template <class Worker, class Task, void (*Parse)(Napi::Value, Task&)>
Napi::Value queue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Task task;
  try {
    Parse(info[0], task);
  } catch (const ArgumentError& e) {
    return rejected(env, e.what(), "INVALID_ARGUMENT");
  }
  return queued<Worker>(env, std::move(task));
}

}  // namespace

Napi::Value Gram(const Napi::CallbackInfo& info) { return queue<GramWorker, GramTask, parseGramJob>(info); }

Napi::Value Interpolate(const Napi::CallbackInfo& info) {
  return queue<InterpolateWorker, InterpolateTask, parseInterpolateJob>(info);
}

}  // namespace ms
