// Faults on mapped input files become errors instead of ending the process. A file another program
// truncates (or whose storage fails) while we map it raises SIGBUS on the next access to a page past its
// end — on whichever thread touches it: a pool worker in a kernel, or the JS thread copying a view.
// Every mapping the addon makes is registered here; a SIGBUS inside one maps anonymous zero pages over
// the rest of that mapping (so the faulting access, when retried, reads zeros and the work runs to its
// end), and flags the mapping. The caller checks the flag after each use of the mapping's bytes and
// turns it into an IO_ERROR naming the file; the zeros are never used. Faults outside our mappings go to
// the handler that was there before (or the default action: the process dies as it would without us).
#pragma once
#include <cstddef>
#include <cstdint>

namespace ms {

struct GuardedRegion;

// Registers [addr, addr + size) (rounded up to whole pages), installing the SIGBUS handler on first use.
// Returns nullptr when the handler cannot be installed (Windows, or sigaction failed): the region is then
// unguarded, as every mapping was before.
GuardedRegion* guardRegion(void* addr, size_t size);

// Unregisters; call before munmap. A region is never freed: its slot is reused by a later registration.
void unguardRegion(GuardedRegion* region);

// Whether an access inside the region faulted since it was registered; `offset` receives the offset of
// the first faulting byte from the region's start.
bool regionFaulted(const GuardedRegion* region, uint64_t* offset);

}  // namespace ms
