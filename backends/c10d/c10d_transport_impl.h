// The c10d transport's internals, shared by c10d_transport.cc (rendezvous,
// process groups, configuration checks) and c10d_messages.cc (messages and
// collectives). Not part of its interface: include c10d_transport.h.
#ifndef TSPIPE_BACKENDS_C10D_C10D_TRANSPORT_IMPL_H_
#define TSPIPE_BACKENDS_C10D_C10D_TRANSPORT_IMPL_H_

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backends/c10d/c10d_transport.h"

namespace tspipe {

// The message of a c10 error without its backtrace.
std::string What(const std::exception& e);
// First line of a possibly long c10 message.
std::string FirstLine(const std::string& s);

class C10dTransport::Impl {
 public:
  explicit Impl(const C10dOptions& o);

  ~Impl();

  void CheckSameConfig(const std::string& name, const std::string& config);

  std::string ShareFromRankZero(const std::string& name, const std::string& value);

  void Configure(int num_stages, int num_microbatches);

  // Up to kParts messages per activation: its length, its header, and one
  // per tensor; each with its own tag so that gloo can match messages that
  // the two sides post in different orders.
  static constexpr int kParts = 16;

  int Tag(const MessageKey& k, int part) const;

  void Send(int to, const MessageKey& key, const Activation& value);

  Activation Receive(int from, const MessageKey& key, std::chrono::milliseconds timeout);

  std::unique_ptr<PendingReduce> StartAllReduce(const std::vector<int>& group,
                                                const CollectiveId& id,
                                                std::vector<torch::Tensor>* tensors);

  void AllReduce(const std::vector<int>& group, const CollectiveId& id,
                 std::vector<torch::Tensor>* tensors, std::chrono::milliseconds timeout);

  void Broadcast(const std::vector<int>& group, int root, std::vector<torch::Tensor>* tensors,
                 std::chrono::milliseconds timeout);

  std::vector<std::vector<torch::Tensor>> AllGather(const std::vector<int>& group,
                                                    const CollectiveId& id,
                                                    const std::vector<torch::Tensor>& tensors,
                                                    std::chrono::milliseconds timeout);

  void Flush(std::chrono::milliseconds timeout);

  class Reduce : public PendingReduce {
   public:
    Reduce(c10::intrusive_ptr<c10d::Work> work, const CollectiveId& id)
        : work_(std::move(work)), id_(id) {}
    void Wait(std::chrono::milliseconds timeout) override {
      if (!work_) return;
      try {
        work_->wait(timeout);
      } catch (const std::exception& e) {
        throw std::runtime_error(Describe(id_) + " failed (a peer exited or timed out after " +
                                 std::to_string(timeout.count() / 1000) + " s): " +
                                 FirstLine(What(e)));
      }
      work_.reset();
    }

   private:
    c10::intrusive_ptr<c10d::Work> work_;
    CollectiveId id_;
  };

  int rank() const { return o_.rank; }
  torch::Device device() const { return device_; }
  const std::string& backend() const { return o_.backend; }
  int world_size() const { return o_.world_size; }

 private:
  struct Pending {
    int to;
    torch::Tensor tensor;  // Kept alive until sent.
    c10::intrusive_ptr<c10d::Work> work;
  };

  // Position of `rank` in `group`; throws if it is not a member.
  static int IndexIn(const std::vector<int>& group, int rank);

  // The process group of `group` (world ranks): the world's own, or one
  // made on first use by the group's members only (a Pipe-BD group of
  // replicas); members reach it in the same order, so its rendezvous
  // through the store completes. Its rank i is group[i].
  c10d::Backend& GroupFor(const std::vector<int>& group);

  c10::intrusive_ptr<c10d::Backend> MakeGloo(const c10::intrusive_ptr<c10d::Store>& store) const;

  c10::intrusive_ptr<c10d::Backend> MakeGloo(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                             int size) const;

#ifdef TSPIPE_WITH_CUDA
  c10::intrusive_ptr<c10d::Backend> MakeNccl(const std::string& prefix) const;

  c10::intrusive_ptr<c10d::Backend> MakeNccl(const std::string& prefix, int rank, int size) const;
#endif

  // The group carrying tensors between this rank and `peer` in one
  // direction (see the constructor); gloo has one group for everything.
  c10d::Backend& P2p(int peer, bool sending);

  // Sends `t` over `pg` (the headers' group or a tensors' group).
  void Post(c10d::Backend& pg, int to, torch::Tensor t, int tag);

  // Receives into `t` over `pg`, waiting at most `timeout` for the data.
  // With NCCL and kNoTimeout it returns once the rank's current stream
  // is ordered after the transfer, before the data has arrived.
  void Wait(c10d::Backend& pg, int from, torch::Tensor& t, int tag,
            std::chrono::milliseconds timeout, const MessageKey& key);

  C10dOptions o_;
  // CPU for gloo; cuda:LOCAL_RANK for NCCL.
  torch::Device device_{torch::kCPU};
  c10::intrusive_ptr<c10d::Store> store_;
  // Collectives (and, for gloo, everything).
  c10::intrusive_ptr<c10d::Backend> pg_;
  // NCCL: tensors to higher ranks (and from lower ones), and the reverse.
  c10::intrusive_ptr<c10d::Backend> up_;
  c10::intrusive_ptr<c10d::Backend> down_;
  // Process groups of replica groups smaller than the world (GroupFor).
  std::map<std::vector<int>, c10::intrusive_ptr<c10d::Backend>> groups_;
  // Message headers: pg_ itself for gloo, a gloo group beside NCCL.
  c10::intrusive_ptr<c10d::Backend> meta_;
  std::deque<Pending> pending_;
  int num_stages_ = 1;
  int num_microbatches_ = 1;
};

}  // namespace tspipe

#endif  // TSPIPE_BACKENDS_C10D_C10D_TRANSPORT_IMPL_H_
