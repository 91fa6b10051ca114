#include "pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace ms {
namespace {

struct Job {
  const std::function<void(size_t)>* fn;
  size_t tasks;
  std::atomic<size_t> next{0};
  std::atomic<size_t> done{0};
  std::mutex m;
  std::condition_variable finished;
  std::exception_ptr error;

  // Runs tasks until none is left to claim, or `stop` is raised (a pool thread being retired: the
  // job's caller finishes the rest, so setThreads never waits for a whole job).
  void work(const std::atomic<bool>* stop = nullptr) {
    for (size_t i; (stop == nullptr || !stop->load()) && (i = next.fetch_add(1)) < tasks;) {
      try {
        (*fn)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(m);
        if (!error) error = std::current_exception();
      }
      if (done.fetch_add(1) + 1 == tasks) {
        std::lock_guard<std::mutex> lock(m);
        finished.notify_all();
      }
    }
  }
};

class Pool {
 public:
  unsigned threads() {
    std::lock_guard<std::mutex> lock(m_);
    return threads_;
  }

  void resize(unsigned threads) {
    if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
    std::lock_guard<std::mutex> resizing(resize_);
    std::vector<std::thread> old;
    {
      std::lock_guard<std::mutex> lock(m_);
      if (threads == threads_ && started_) return;
      stopping_ = true;
      old.swap(workers_);
    }
    wake_.notify_all();
    // A job in flight loses its helpers for a moment; its caller keeps working on it.
    for (std::thread& t : old) t.join();
    std::lock_guard<std::mutex> lock(m_);
    stopping_ = false;
    started_ = true;
    threads_ = threads;
    for (unsigned i = 1; i < threads; ++i) workers_.emplace_back([this] { loop(); });
  }

  void run(size_t tasks, const std::function<void(size_t)>& fn) {
    if (tasks == 0) return;
    auto job = std::make_shared<Job>();
    job->fn = &fn;
    job->tasks = tasks;
    const bool helped = tasks > 1 && threads() > 1;
    if (helped) {
      std::lock_guard<std::mutex> lock(m_);
      queue_.push_back(job);
    }
    if (helped) wake_.notify_all();
    job->work();
    {
      std::unique_lock<std::mutex> lock(job->m);
      job->finished.wait(lock, [&] { return job->done.load() == tasks; });
    }
    if (helped) {
      std::lock_guard<std::mutex> lock(m_);
      for (auto it = queue_.begin(); it != queue_.end(); ++it)
        if (*it == job) {
          queue_.erase(it);
          break;
        }
    }
    if (job->error) std::rethrow_exception(job->error);
  }

 private:
  void loop() {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(m_);
        wake_.wait(lock, [&] {
          while (!queue_.empty() && queue_.front()->next.load() >= queue_.front()->tasks) queue_.pop_front();
          return stopping_ || !queue_.empty();
        });
        if (stopping_) return;
        job = queue_.front();
      }
      job->work(&stopping_);
    }
  }

  std::mutex resize_;
  std::mutex m_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::thread> workers_;
  unsigned threads_ = 1;
  bool started_ = false;
  std::atomic<bool> stopping_{false};
};

// Never destroyed: a pool thread may still be finishing a task while the process exits.
Pool& pool() {
  static Pool* p = [] {
    Pool* q = new Pool();
    q->resize(0);
    return q;
  }();
  return *p;
}

}  // namespace

unsigned poolThreads() { return pool().threads(); }
void setPoolThreads(unsigned threads) { pool().resize(threads); }
void parallelFor(size_t tasks, const std::function<void(size_t)>& fn) { pool().run(tasks, fn); }

}  // namespace ms
