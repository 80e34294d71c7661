#ifndef TSPIPE_CLI_HOST_MALLOC_H_
#define TSPIPE_CLI_HOST_MALLOC_H_

namespace tspipe {

// Restarts this process (same argv) with glibc's malloc told to keep 256 MiB
// of freed memory at the top of each heap instead of handing it back to the
// kernel (GLIBC_TUNABLES=glibc.malloc.top_pad). LibTorch's CPU allocator is
// plain malloc with no cache of its own, so by default every step gives its
// activations' pages back and faults them in again, zeroed, on the next: on
// 2 CPU ranks in one process that was about 1.3 million page faults a minute
// and 10-15% of tspipe's throughput (ranks are threads of one address space,
// so each unmap also stalls the other core). This is the role the caching
// allocator plays for GPU runs. The cost: each heap keeps up to 256 MiB it
// does not use.
//
// Why a restart: the same setting made with mallopt() from main has no such
// effect (measured: 0.9-1.25 million faults instead of 70 thousand); glibc
// has to have it from the start, before LibTorch's static initialisers
// allocate. Returns without restarting when the setting is already there
// (the restarted process, or the user's own GLIBC_TUNABLES), when not on
// glibc, or when exec fails. Call first thing in main.
void RestartKeepingFreedHostMemory(char** argv);

}  // namespace tspipe

#endif  // TSPIPE_CLI_HOST_MALLOC_H_
