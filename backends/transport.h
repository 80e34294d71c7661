// How ranks exchange tensors: the only thing that differs between the
// single-process backend (ranks are threads, messages are in-memory) and the
// multi-process one (ranks are processes, messages go through torch c10d).
// The executor (backends/executor.h) runs the same actions over
// either.
#ifndef TSPIPE_BACKENDS_TRANSPORT_H_
#define TSPIPE_BACKENDS_TRANSPORT_H_

#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "core/message.h"
#include "core/partition.h"

namespace tspipe {

// Messages are named by MessageKey and collectives by CollectiveId
// (core/message.h), the identities the schedule's actions map to
// (MessageOf, CollectiveOf).

// Raised when waiting ended because another rank of this process failed
// (the executor reports that rank's error instead).
class AbortedError : public std::runtime_error {
 public:
  AbortedError() : std::runtime_error("aborted: another rank failed") {}
};

// An all-reduce in flight (Transport::StartAllReduce).
class PendingReduce {
 public:
  virtual ~PendingReduce() = default;
  // Blocks until the sums are in the tensors given to StartAllReduce.
  // Throws like Transport::AllReduce.
  virtual void Wait(std::chrono::milliseconds timeout) = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;

  // Point-to-point messages may match in posting order rather than by key
  // (NCCL): every valid schedule posts both sides of a rank pair in one
  // order (core/validator.h's CheckMessageOrder), so any transport runs it.
  // Tells the transport the run's shape, before any message.
  virtual void Configure(int num_stages, int num_microbatches) {}
  // Sends `value` from rank `from` to rank `to`. May return before the data
  // has left; Flush waits for that.
  virtual void Send(int from, int to, const MessageKey& key, Activation value) = 0;
  // Waits for message `key` from rank `from` to rank `to`. Throws
  // std::runtime_error naming the peer on timeout or a lost peer, and
  // AbortedError once `abort` is set.
  virtual Activation Receive(int to, int from, const MessageKey& key,
                             std::chrono::milliseconds timeout,
                             const std::atomic<bool>& abort) = 0;
  // Sums `tensors` over the ranks of `group` (which holds `rank`), in place;
  // every member gets bitwise the same result. `id` names the collective
  // (in errors, and to tell apart collectives of one group in flight).
  // Throws like Receive, naming the collective.
  virtual void AllReduce(int rank, const std::vector<int>& group, const CollectiveId& id,
                         std::vector<torch::Tensor>* tensors, std::chrono::milliseconds timeout,
                         const std::atomic<bool>& abort) = 0;
  // AllReduce split in two, so that the caller can go on computing while the
  // sums travel: `tensors` must stay alive and untouched until Wait. The
  // default reduces at once and returns a finished handle.
  virtual std::unique_ptr<PendingReduce> StartAllReduce(int rank, const std::vector<int>& group,
                                                        const CollectiveId& id,
                                                        std::vector<torch::Tensor>* tensors,
                                                        std::chrono::milliseconds timeout,
                                                        const std::atomic<bool>& abort) {
    AllReduce(rank, group, id, tensors, timeout, abort);
    struct Done : PendingReduce {
      void Wait(std::chrono::milliseconds) override {}
    };
    return std::make_unique<Done>();
  }
  // Copies `root`'s `tensors` into every other member of `group` (which
  // holds `rank`), in place: replicas start from the same parameters even if
  // their processes initialised them differently. The in-process transport
  // does nothing (its replicas are copies of one model already).
  virtual void Broadcast(int rank, const std::vector<int>& group, int root,
                         std::vector<torch::Tensor>* tensors,
                         std::chrono::milliseconds timeout) {}
  // Every member's `tensors` (the same count, shapes and dtypes on every
  // member of `group`, which holds `rank`) on every member: parts[i] =
  // group[i]'s, on this rank's device (parts[own index] = copies of its own).
  // `id` names the collective. Throws like AllReduce; when a member is lost
  // the message names the group's other ranks.
  virtual std::vector<std::vector<torch::Tensor>> AllGather(
      int rank, const std::vector<int>& group, const CollectiveId& id,
      const std::vector<torch::Tensor>& tensors, std::chrono::milliseconds timeout,
      const std::atomic<bool>& abort) = 0;
  // Waits until this rank's sends have left (end of a run).
  virtual void Flush(int rank, std::chrono::milliseconds timeout) {}
  // Wakes every waiter after an abort.
  virtual void Wake() {}
  // Drops undelivered messages (between runs, and after a failed one).
  virtual void Reset() {}

  // Payload bytes `rank` has sent since the transport was made, as
  // MeteredTransport counts them; 0 for a transport that does not count.
  virtual int64_t bytes_sent(int rank) const { return 0; }
};

// A decorator for any transport: counts each rank's payload bytes the same
// way whatever carries them (a message's tensors; for an all-reduce of B
// bytes over p ranks 2 (p - 1) / p B, a ring; for an all-gather of B bytes
// per member (p - 1) B; for a broadcast B from the root), and, when
// `emulated_ms_per_mb` > 0, makes every send and collective take at least
// that many ms per MB (10^6 bytes) it sends, to measure what a slower link
// costs: an all-reduce's time runs from its start, so computation still
// overlaps it; a send delays its sender. Everything else passes through.
class MeteredTransport : public Transport {
 public:
  explicit MeteredTransport(std::shared_ptr<Transport> inner, double emulated_ms_per_mb = 0);

  void Configure(int num_stages, int num_microbatches) override;
  void Send(int from, int to, const MessageKey& key, Activation value) override;
  Activation Receive(int to, int from, const MessageKey& key, std::chrono::milliseconds timeout,
                     const std::atomic<bool>& abort) override;
  void AllReduce(int rank, const std::vector<int>& group, const CollectiveId& id,
                 std::vector<torch::Tensor>* tensors, std::chrono::milliseconds timeout,
                 const std::atomic<bool>& abort) override;
  std::unique_ptr<PendingReduce> StartAllReduce(int rank, const std::vector<int>& group,
                                                const CollectiveId& id,
                                                std::vector<torch::Tensor>* tensors,
                                                std::chrono::milliseconds timeout,
                                                const std::atomic<bool>& abort) override;
  void Broadcast(int rank, const std::vector<int>& group, int root,
                 std::vector<torch::Tensor>* tensors, std::chrono::milliseconds timeout) override;
  std::vector<std::vector<torch::Tensor>> AllGather(int rank, const std::vector<int>& group,
                                                    const CollectiveId& id,
                                                    const std::vector<torch::Tensor>& tensors,
                                                    std::chrono::milliseconds timeout,
                                                    const std::atomic<bool>& abort) override;
  void Flush(int rank, std::chrono::milliseconds timeout) override;
  void Wake() override;
  void Reset() override;
  int64_t bytes_sent(int rank) const override;

 private:
  void Count(int rank, int64_t bytes);
  // Sleeps until `since` plus what `bytes` cost on the emulated link.
  void Emulate(int64_t bytes, std::chrono::steady_clock::time_point since) const;

  std::shared_ptr<Transport> inner_;
  double emulated_ms_per_mb_;
  mutable std::mutex traffic_mu_;
  std::map<int, int64_t> traffic_;
};

// Bytes of the tensors' data.
int64_t PayloadBytes(const std::vector<torch::Tensor>& tensors);

// `tensors` (all defined) as one flat bucket of `dtype` on `device`: one
// collective instead of one per tensor. Every transport and the executor's
// gradient all-reduce flatten through this.
torch::Tensor Flatten(const std::vector<torch::Tensor>& tensors, torch::Dtype dtype,
                      const torch::Device& device);
// The pieces of `bucket` shaped and typed like `like`, as new tensors
// (not views: callers may detach or resize them in place).
std::vector<torch::Tensor> Unflatten(const torch::Tensor& bucket,
                                     const std::vector<torch::Tensor>& like);

// Ranks as threads of one process: per-rank mailboxes and an in-memory
// all-reduce, metered (MeteredTransport). Tensors move to the receiver's
// device on Send.
std::shared_ptr<Transport> MakeLocalTransport(int num_ranks, std::vector<torch::Device> devices);

}  // namespace tspipe

#endif  // TSPIPE_BACKENDS_TRANSPORT_H_
