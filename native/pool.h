// A persistent thread pool. The calling thread works too: `threads` is the total parallelism of one
// parallelFor (1 = the caller alone). Several parallelFor calls may run at once (one per libuv
// worker); pool threads help the oldest unfinished one.
#pragma once
#include <cstddef>
#include <functional>

namespace ms {

unsigned poolThreads();
// 0 means std::thread::hardware_concurrency().
void setPoolThreads(unsigned threads);
// Runs fn(0) … fn(tasks − 1), each once, in any order, and returns when all are done. The first
// exception thrown by a task is rethrown here after every task has finished.
void parallelFor(size_t tasks, const std::function<void(size_t)>& fn);

}  // namespace ms
