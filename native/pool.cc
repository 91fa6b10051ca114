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

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace ms {
namespace {

// setPoolNice's value, and how many times it was set (a pool thread re-applies it when this moves).
std::atomic<int> gNice{0};
std::atomic<unsigned> gNiceGeneration{0};

// This thread at gNice, once per change of it.
void applyNice() {
#if defined(__linux__)
  thread_local unsigned applied = 0;
  const unsigned generation = gNiceGeneration.load();
  if (applied == generation) return;
  applied = generation;
  setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), gNice.load());  // best effort
#endif
}

struct Job {
  const std::function<void(size_t)>* fn;
  size_t tasks;
  // Pool threads that may still join (the job's `threads` less the caller).
  std::atomic<int> seats{0};
  std::atomic<size_t> next{0};
  std::atomic<size_t> done{0};
  std::mutex m;
  std::condition_variable finished;
  std::exception_ptr error;

  bool open() const { return next.load() < tasks && seats.load() > 0; }

  // Runs tasks until none is left to claim.
  void work() {
    for (size_t i; (i = next.fetch_add(1)) < tasks;) {
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
  void run(size_t tasks, unsigned threads, const std::function<void(size_t)>& fn) {
    if (tasks == 0) return;
    if (threads == 0) threads = defaultThreads();
    auto job = std::make_shared<Job>();
    job->fn = &fn;
    job->tasks = tasks;
    // At a raised nice the caller only waits: pool threads take every seat.
    const bool callerWorks = gNice.load() == 0;
    const int helpers = static_cast<int>(
        callerWorks ? std::min<size_t>(threads - 1, tasks - 1) : std::min<size_t>(threads, tasks));
    job->seats = helpers;
    if (helpers > 0) {
      std::lock_guard<std::mutex> lock(m_);
      grow(callerWorks ? threads : threads + 1);
      queue_.push_back(job);
    }
    if (helpers > 0) wake_.notify_all();
    if (callerWorks) job->work();
    {
      std::unique_lock<std::mutex> lock(job->m);
      job->finished.wait(lock, [&] { return job->done.load() == tasks; });
    }
    if (helpers > 0) {
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
  // Called with m_ held: enough pool threads for a job of `threads` (the caller is one of them).
  void grow(unsigned threads) {
    while (workers_.size() + 1 < threads) workers_.emplace_back([this] { loop(); });
  }

  // Takes a seat in the oldest job that has tasks left and room for another thread; m_ held.
  std::shared_ptr<Job> claim() {
    while (!queue_.empty() && queue_.front()->next.load() >= queue_.front()->tasks) queue_.pop_front();
    for (const auto& job : queue_) {
      if (!job->open()) continue;
      if (job->seats.fetch_sub(1) > 0) return job;
      job->seats.fetch_add(1);
    }
    return nullptr;
  }

  void loop() {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(m_);
        wake_.wait(lock, [&] { return (job = claim()) != nullptr; });
      }
      applyNice();
      job->work();
    }
  }

  std::mutex m_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::thread> workers_;
};

// Never destroyed: a pool thread may still be finishing a task while the process exits.
Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

unsigned defaultThreads() { return std::max(1u, std::thread::hardware_concurrency()); }

void parallelFor(size_t tasks, unsigned threads, const std::function<void(size_t)>& fn) {
  pool().run(tasks, threads, fn);
}

int setPoolNice(int nice) {
  const int before = gNice.exchange(std::clamp(nice, 0, 19));
  gNiceGeneration.fetch_add(1);
  return before;
}

}  // namespace ms
