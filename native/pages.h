// Large buffers taken straight from the kernel and given straight back. From malloc, a block of a few
// MiB lands in one of malloc's arenas once glibc's dynamic mmap threshold has risen (to the largest
// block freed, up to 32 MiB) and stays resident there after free: a service merging again and again
// kept 30–100 MB more than it used, a different amount each run (bench/serve.ts, the soak). Mapped
// pages leave the process the moment they are freed.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#if !defined(_WIN32)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace ms {

// `bytes` (> 0) aligned to `alignment` (a power of two), zero-filled by the kernel; nullptr when refused.
inline void* mapPages(size_t bytes, size_t alignment) {
#if defined(_WIN32)
  void* p = nullptr;
  return posix_memalign(&p, alignment, bytes) == 0 ? p : nullptr;
#else
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t length = (bytes + page - 1) / page * page;
  // The kernel aligns to pages: a larger alignment maps that much more and unmaps the ends.
  const size_t slack = alignment > page ? alignment - page : 0;
  void* raw = ::mmap(nullptr, length + slack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = slack == 0 ? start : (start + alignment - 1) & ~static_cast<uintptr_t>(alignment - 1);
  if (aligned > start) ::munmap(raw, aligned - start);
  const uintptr_t end = aligned + length;
  if (start + length + slack > end) ::munmap(reinterpret_cast<void*>(end), start + length + slack - end);
  return reinterpret_cast<void*>(aligned);
#endif
}

// Gives back what mapPages(bytes, …) returned.
inline void unmapPages(void* p, size_t bytes) {
#if defined(_WIN32)
  (void)bytes;
  std::free(p);
#else
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  ::munmap(p, (bytes + page - 1) / page * page);
#endif
}

}  // namespace ms
