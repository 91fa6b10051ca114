// The SIGBUS guard of fault_guard.h. The handler runs on whatever thread faulted, at any point of its
// work, so it may only read lock-free atomics and make async-signal-safe calls: it never takes a lock,
// allocates or touches the registry's structure other than by atomic loads. Registrations (made on JS
// threads, possibly several Node workers at once) take a mutex among themselves and publish each slot
// with a sequence counter, odd while the slot is being written, so the handler skips a slot it would see
// half-written (a seqlock). A slot cannot be written while its own mapping is in use: a mapping is only
// unregistered when its last view is gone, and registered before its address is handed out.
//
// The zero pages come from mmap(MAP_FIXED | MAP_ANONYMOUS) over the faulting page up to the end of the
// mapping. POSIX does not list mmap as async-signal-safe, but on Linux (and the BSDs) it is a plain system
// call with no user-space state, the same thing the JVM's and Go's fault handling rely on.
#include "fault_guard.h"

#include <atomic>
#include <mutex>

#if !defined(_WIN32)
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#endif

namespace ms {

#if defined(_WIN32)

GuardedRegion* guardRegion(void*, size_t) { return nullptr; }
void unguardRegion(GuardedRegion*) {}
bool regionFaulted(const GuardedRegion*, uint64_t*) { return false; }

#else

#if !defined(MAP_ANONYMOUS)
#define MAP_ANONYMOUS MAP_ANON
#endif

static_assert(std::atomic<uintptr_t>::is_always_lock_free, "the signal handler reads these without locks");
static_assert(std::atomic<uint64_t>::is_always_lock_free, "the signal handler reads these without locks");

struct GuardedRegion {
  // Odd while the slot is being written (registration, unregistration); even when stable.
  std::atomic<uint64_t> sequence{0};
  std::atomic<uintptr_t> start{0};
  std::atomic<uintptr_t> end{0};  // exclusive; start == end: a free slot
  // 1 + address of the first faulting byte; 0: no fault.
  std::atomic<uintptr_t> fault{0};
  bool used = false;  // registrations only (under the mutex)
};

namespace {

constexpr size_t kSlotsPerChunk = 64;

// Chunks are appended and never freed, so the handler can walk the list while a registration grows it.
struct Chunk {
  GuardedRegion slots[kSlotsPerChunk];
  std::atomic<Chunk*> next{nullptr};
};

std::atomic<Chunk*> chunks{nullptr};
std::mutex registrations;
bool installed = false;  // under the mutex
uintptr_t pageSize = 4096;
// The handler that was installed before ours: faults that are not on our mappings go to it.
struct sigaction previous;

void chain(int sig, siginfo_t* info, void* context) {
  if ((previous.sa_flags & SA_SIGINFO) != 0 && previous.sa_sigaction != nullptr) {
    previous.sa_sigaction(sig, info, context);
    return;
  }
  const bool sent = info == nullptr || info->si_code <= 0;  // kill(), sigqueue(): not a fault
  if (previous.sa_handler == SIG_IGN && sent) return;
  if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
    previous.sa_handler(sig);
    return;
  }
  // The default action, as if we had never been installed: a fault recurs when the instruction is retried
  // on return and now ends the process (the kernel does the same for an ignored fault); a sent signal is
  // raised again, delivered once this handler returns.
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
  if (sent) raise(sig);
}

// Zero pages over [page of `address`, end of the region holding it); false when no region holds it.
bool absorb(uintptr_t address) {
  for (Chunk* c = chunks.load(); c != nullptr; c = c->next.load()) {
    for (GuardedRegion& r : c->slots) {
      const uint64_t before = r.sequence.load();
      if ((before & 1) != 0) continue;
      const uintptr_t start = r.start.load();
      const uintptr_t end = r.end.load();
      if (r.sequence.load() != before || address < start || address >= end) continue;
      const uintptr_t page = address & ~(pageSize - 1);
      void* zeros = mmap(reinterpret_cast<void*>(page), end - page, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      if (zeros == MAP_FAILED) return false;
      uintptr_t none = 0;
      r.fault.compare_exchange_strong(none, address + 1);
      return true;
    }
  }
  return false;
}

void onSigbus(int sig, siginfo_t* info, void* context) {
  const int savedErrno = errno;
  const bool fault = info != nullptr && info->si_code > 0;
  if (fault && absorb(reinterpret_cast<uintptr_t>(info->si_addr))) {
    errno = savedErrno;
    return;  // the access is retried and reads zeros
  }
  errno = savedErrno;
  chain(sig, info, context);
}

// Under the mutex.
bool install() {
  if (installed) return true;
  const long page = sysconf(_SC_PAGESIZE);
  if (page > 0) pageSize = static_cast<uintptr_t>(page);
  struct sigaction ours;
  std::memset(&ours, 0, sizeof ours);
  ours.sa_sigaction = onSigbus;
  // SA_ONSTACK: a thread with an alternate signal stack (Node's main thread may have one) uses it.
  ours.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigemptyset(&ours.sa_mask);
  // Read the previous action first, so a fault between the two calls chains to it, not to zeros.
  if (sigaction(SIGBUS, nullptr, &previous) != 0) return false;
  if (sigaction(SIGBUS, &ours, nullptr) != 0) return false;
  installed = true;
  return true;
}

}  // namespace

GuardedRegion* guardRegion(void* addr, size_t size) {
  std::lock_guard<std::mutex> lock(registrations);
  if (!install()) return nullptr;
  GuardedRegion* slot = nullptr;
  Chunk* last = nullptr;
  for (Chunk* c = chunks.load(); c != nullptr && slot == nullptr; c = c->next.load()) {
    last = c;
    for (GuardedRegion& r : c->slots) {
      if (!r.used) {
        slot = &r;
        break;
      }
    }
  }
  if (slot == nullptr) {
    Chunk* grown = new Chunk();
    if (last == nullptr)
      chunks.store(grown);
    else
      last->next.store(grown);
    slot = &grown->slots[0];
  }
  const uintptr_t start = reinterpret_cast<uintptr_t>(addr);
  slot->used = true;
  slot->sequence.fetch_add(1);
  slot->start.store(start);
  slot->end.store(start + ((static_cast<uintptr_t>(size) + pageSize - 1) & ~(pageSize - 1)));
  slot->fault.store(0);
  slot->sequence.fetch_add(1);
  return slot;
}

void unguardRegion(GuardedRegion* region) {
  if (region == nullptr) return;
  std::lock_guard<std::mutex> lock(registrations);
  region->sequence.fetch_add(1);
  region->start.store(0);
  region->end.store(0);
  region->sequence.fetch_add(1);
  region->used = false;
}

bool regionFaulted(const GuardedRegion* region, uint64_t* offset) {
  if (region == nullptr) return false;
  const uintptr_t fault = region->fault.load();
  if (fault == 0) return false;
  *offset = static_cast<uint64_t>(fault - 1 - region->start.load());
  return true;
}

#endif

}  // namespace ms
