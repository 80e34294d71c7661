// The multi-process transport: one process per rank, tensors through torch's
// c10d process groups (ProcessGroupGloo on CPU; NCCL is compiled in under
// --config=cuda), rendezvous through a TCPStore hosted by rank 0, configured
// from the environment exactly like torchrun (MASTER_ADDR, MASTER_PORT, RANK,
// WORLD_SIZE, LOCAL_RANK), so the same binary runs on one or several nodes.
#ifndef TSPIPE_BACKENDS_C10D_C10D_TRANSPORT_H_
#define TSPIPE_BACKENDS_C10D_C10D_TRANSPORT_H_

#include <chrono>
#include <memory>
#include <string>

#include "backends/transport.h"

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
  // Emulates a slower link: every send and collective takes at least this
  // many ms per MB (10^6 bytes) it sends (Transport::bytes_sent's count).
  // An all-reduce's time runs from its start, so computation still
  // overlaps it; a send's delays its sender. 0 = the real link only.
  double emulated_ms_per_mb = 0;
};

// Reads the torchrun variables. Throws std::invalid_argument naming a missing
// or malformed variable; LOCAL_RANK defaults to RANK, MASTER_ADDR to
// 127.0.0.1.
C10dOptions C10dOptionsFromEnvironment();

class C10dTransport : public Transport {
 public:
  // Rendezvous and process-group creation. Throws std::runtime_error saying
  // what failed: the port is taken, or not every rank arrived in time.
  explicit C10dTransport(const C10dOptions& options);
  ~C10dTransport() override;

  // Every rank publishes `config` ("key=value" lines); each compares with
  // rank 0's and throws std::invalid_argument naming the first setting that
  // differs, so a misconfigured rank fails at start-up instead of hanging.
  // `name` separates several checks in one process.
  void CheckSameConfig(const std::string& name, const std::string& config);

  // Rank 0's `value` on every rank (through the store): for choices that
  // one rank makes for all, such as a measured balance.
  std::string ShareFromRankZero(const std::string& name, const std::string& value);

  int rank() const;
  // Where this rank's tensors live: CPU under gloo; cuda:LOCAL_RANK under
  // nccl (the constructor makes it the process's current device).
  torch::Device device() const;
  const std::string& backend() const;
  // NCCL matches send/recv pairs in posting order; gloo by tag.
  bool MatchesInPostingOrder() const override;
  int world_size() const;

  // Sets the message tag layout. The transport is shared by the trainers of
  // a process, which run one after another; each executor configures it
  // with its own shape at the start of every Run.
  void Configure(int num_stages, int num_microbatches) override;
  void Send(int from, int to, const MessageKey& key, Activation value) override;
  Activation Receive(int to, int from, const MessageKey& key, std::chrono::milliseconds timeout,
                     const std::atomic<bool>& abort) override;
  void AllReduce(int rank, const std::vector<int>& group, int stage, int64_t batch,
                 std::vector<torch::Tensor>* tensors, std::chrono::milliseconds timeout,
                 const std::atomic<bool>& abort) override;
  // Starts gloo's (or NCCL's) all-reduce and returns; the backward of
  // earlier stages overlaps it.
  std::unique_ptr<PendingReduce> StartAllReduce(int rank, const std::vector<int>& group, int stage,
                                                int64_t batch, std::vector<torch::Tensor>* tensors,
                                                std::chrono::milliseconds timeout,
                                                const std::atomic<bool>& abort) override;
  void Broadcast(int rank, const std::vector<int>& group, int root,
                 std::vector<torch::Tensor>* tensors, std::chrono::milliseconds timeout) override;
  // One flat bucket per member through the group's allgather.
  std::vector<std::vector<torch::Tensor>> AllGather(int rank, const std::vector<int>& group,
                                                    int stage, int64_t batch,
                                                    const std::vector<torch::Tensor>& tensors,
                                                    std::chrono::milliseconds timeout,
                                                    const std::atomic<bool>& abort) override;
  void Flush(int rank, std::chrono::milliseconds timeout) override;

 private:
  // Sleeps what `bytes` cost on the emulated link, from `since`.
  void Emulate(int64_t bytes, std::chrono::steady_clock::time_point since) const;

  class Impl;
  std::unique_ptr<Impl> impl_;
  double emulated_ms_per_mb_ = 0;
};

}  // namespace tspipe

#endif  // TSPIPE_BACKENDS_C10D_C10D_TRANSPORT_H_
