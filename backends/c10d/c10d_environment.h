// Where a c10d rank finds its world: the torchrun variables read into
// options for backends/c10d/c10d_transport.h. Torch-free.
#ifndef TSPIPE_BACKENDS_C10D_C10D_ENVIRONMENT_H_
#define TSPIPE_BACKENDS_C10D_C10D_ENVIRONMENT_H_

#include <chrono>
#include <string>

namespace tspipe {

struct C10dOptions {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // "gloo" (CPU tensors) or "nccl" (CUDA tensors on cuda:LOCAL_RANK,
  // --config=cuda builds; message headers then travel over a gloo group
  // beside it).
  std::string backend = "gloo";
  // Rendezvous deadline, and the longest any receive or collective may wait
  // for a peer before the rank gives up naming it.
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
};

// Reads the torchrun variables. Throws std::invalid_argument naming a missing
// or malformed variable; LOCAL_RANK defaults to RANK, MASTER_ADDR to
// 127.0.0.1.
C10dOptions C10dOptionsFromEnvironment();

// This host's address on the route to `master` (a UDP "connect" sends
// nothing; it only picks the route), or "" if there is none. gloo's default
// binds to what the hostname resolves to, often 127.0.0.1 (Debian's
// /etc/hosts), which no other node can reach.
std::string LocalAddressToward(const std::string& master, int port);

}  // namespace tspipe

#endif  // TSPIPE_BACKENDS_C10D_C10D_ENVIRONMENT_H_
