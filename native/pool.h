// A persistent thread pool shared by every job in the process. Each parallelFor says how many threads
// may work on it (the calling thread included), so two merges in one process each run with their own
// `threads` setting; the pool grows to the largest request and never shrinks. Several parallelFor
// calls may run at once (one per libuv worker); idle pool threads help the oldest job with room.
#pragma once
#include <cstddef>
#include <functional>

namespace ms {

// std::thread::hardware_concurrency(), at least 1: what `threads = 0` means.
unsigned defaultThreads();
// Runs fn(0) … fn(tasks − 1), each once, in any order, on at most `threads` threads (0 = all cores;
// 1 = the caller alone), and returns when all are done. The first exception thrown by a task is
// rethrown here after every task has finished.
void parallelFor(size_t tasks, unsigned threads, const std::function<void(size_t)>& fn);

// Runs every later task at this nice value (0–19; Linux threads have their own). Above 0 the calling
// thread (a libuv worker, shared with fs and DNS work) no longer takes tasks: the pool's own threads
// do all of them, each at that nice, so a service's event loop is scheduled before the merge's kernels
// when they compete for the cores. Going back down needs CAP_SYS_NICE: without it the threads keep the
// higher value (what setpriority allows). Returns the value in force before.
int setPoolNice(int nice);

}  // namespace ms
