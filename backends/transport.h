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

#include "core/partition.h"

namespace tspipe {

enum class Channel { kActivation = 0, kTeacherActivation = 1, kGradient = 2 };

// (channel, receiving stage, micro-batch, absolute index of the mini-batch
// the data belongs to): unique over a whole run, so iterations may overlap.
struct MessageKey {
  Channel channel;
  int stage;
  int microbatch;
  int64_t batch;

  bool operator<(const MessageKey& o) const {
    return std::tie(channel, stage, microbatch, batch) <
           std::tie(o.channel, o.stage, o.microbatch, o.batch);
  }
};

// "activation of stage 1, micro-batch 2, mini-batch 5", for error messages.
std::string Describe(const MessageKey& key);

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

  // True when point-to-point messages match in posting order rather than by
  // key (NCCL): the executor then refuses schedules whose two sides of a
  // pair post in different orders (CheckMessageOrder).
  virtual bool MatchesInPostingOrder() const { return false; }
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
  // every member gets bitwise the same result. `stage` and `batch` identify
  // the collective. Throws like Receive.
  virtual void AllReduce(int rank, const std::vector<int>& group, int stage, int64_t batch,
                         std::vector<torch::Tensor>* tensors, std::chrono::milliseconds timeout,
                         const std::atomic<bool>& abort) = 0;
  // AllReduce split in two, so that the caller can go on computing while the
  // sums travel: `tensors` must stay alive and untouched until Wait. The
  // default reduces at once and returns a finished handle.
  virtual std::unique_ptr<PendingReduce> StartAllReduce(int rank, const std::vector<int>& group,
                                                        int stage, int64_t batch,
                                                        std::vector<torch::Tensor>* tensors,
                                                        std::chrono::milliseconds timeout,
                                                        const std::atomic<bool>& abort) {
    AllReduce(rank, group, stage, batch, tensors, timeout, abort);
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
  // `stage` and `batch` identify the collective. Throws like AllReduce;
  // when a member is lost the message names the group's other ranks.
  virtual std::vector<std::vector<torch::Tensor>> AllGather(
      int rank, const std::vector<int>& group, int stage, int64_t batch,
      const std::vector<torch::Tensor>& tensors, std::chrono::milliseconds timeout,
      const std::atomic<bool>& abort) = 0;
  // Waits until this rank's sends have left (end of a run).
  virtual void Flush(int rank, std::chrono::milliseconds timeout) {}
  // Wakes every waiter after an abort.
  virtual void Wake() {}
  // Drops undelivered messages (between runs, and after a failed one).
  virtual void Reset() {}

  // Payload bytes `rank` has sent since the transport was made, counted the
  // same way by every transport: a message's tensors; for an all-reduce of
  // B bytes over p ranks 2 (p - 1) / p B (a ring); for an all-gather of B
  // bytes per member (p - 1) B; for a broadcast B from the root. Thread-safe.
  int64_t bytes_sent(int rank) const;

 protected:
  // Implementations call this as they send.
  void CountSent(int rank, int64_t bytes);

 private:
  mutable std::mutex traffic_mu_;
  std::map<int, int64_t> traffic_;
};

// Bytes of the tensors' data.
int64_t PayloadBytes(const std::vector<torch::Tensor>& tensors);

// Ranks as threads of one process: per-rank mailboxes and an in-memory
// all-reduce. Tensors move to the receiver's device on Send.
std::shared_ptr<Transport> MakeLocalTransport(int num_ranks, std::vector<torch::Device> devices);

}  // namespace tspipe

#endif  // TSPIPE_BACKENDS_TRANSPORT_H_
