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

#include "backends/c10d/c10d_environment.h"
#include "backends/transport.h"

namespace tspipe {

// Counts no traffic and emulates no link itself: wrap it in a
// MeteredTransport (engine/world.cc does).
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
  int world_size() const;

  // Sets the message tag layout. The transport is shared by the trainers of
  // a process, which run one after another; each executor configures it
  // with its own shape at the start of every Run.
  void Configure(int num_stages, int num_microbatches) override;
  void Send(int from, int to, const MessageKey& key, Activation value) override;
  Activation Receive(int to, int from, const MessageKey& key, std::chrono::milliseconds timeout,
                     const std::atomic<bool>& abort) override;
  void AllReduce(int rank, const std::vector<int>& group, const CollectiveId& id,
                 std::vector<torch::Tensor>* tensors, std::chrono::milliseconds timeout,
                 const std::atomic<bool>& abort) override;
  // Starts gloo's (or NCCL's) all-reduce and returns; the backward of
  // earlier stages overlaps it.
  std::unique_ptr<PendingReduce> StartAllReduce(int rank, const std::vector<int>& group,
                                                const CollectiveId& id,
                                                std::vector<torch::Tensor>* tensors,
                                                std::chrono::milliseconds timeout,
                                                const std::atomic<bool>& abort) override;
  void Broadcast(int rank, const std::vector<int>& group, int root,
                 std::vector<torch::Tensor>* tensors, std::chrono::milliseconds timeout) override;
  // One flat bucket per member through the group's allgather.
  std::vector<std::vector<torch::Tensor>> AllGather(int rank, const std::vector<int>& group,
                                                    const CollectiveId& id,
                                                    const std::vector<torch::Tensor>& tensors,
                                                    std::chrono::milliseconds timeout,
                                                    const std::atomic<bool>& abort) override;
  void Flush(int rank, std::chrono::milliseconds timeout) override;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tspipe

#endif  // TSPIPE_BACKENDS_C10D_C10D_TRANSPORT_H_
