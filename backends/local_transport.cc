// The in-process transport (ranks are threads of one process) and the
// bucket helpers every transport uses.
#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "backends/transport.h"
#include "core/microbatch.h"

namespace tspipe {
namespace {

// One rank's incoming messages. Take() waits with a deadline and gives up
// early when another rank has failed, so a step never hangs.
class Mailbox {
 public:
  void Put(const MessageKey& key, Activation value) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      messages_[key] = std::move(value);
    }
    cv_.notify_all();
  }

  // Returns false on timeout or abort.
  bool Take(const MessageKey& key, std::chrono::milliseconds timeout,
            const std::atomic<bool>& abort, Activation* out) {
    std::unique_lock<std::mutex> lock(mu_);
    bool ready = cv_.wait_for(lock, timeout, [&] {
      return abort.load() || messages_.count(key) > 0;
    });
    if (!ready || abort.load()) return false;
    auto it = messages_.find(key);
    *out = std::move(it->second);
    messages_.erase(it);
    return true;
  }

  // Taking the lock orders the notification after any waiter's check of
  // the abort flag, so no waiter misses it and sleeps its full timeout.
  void Wake() {
    { std::lock_guard<std::mutex> lock(mu_); }
    cv_.notify_all();
  }

  void Clear() {
    std::lock_guard<std::mutex> lock(mu_);
    messages_.clear();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<MessageKey, Activation> messages_;
};

// Members of a group deposit their tensors under (kind, collective, group)
// and each waits until the whole group has arrived; each then gets every
// deposit, in member order (so an all-reduce sums bitwise alike
// everywhere). Deposits are shared, not copied: callers write results into
// new tensors, as the others may still be reading.
class Collector {
 public:
  enum class Kind { kAllReduce, kAllGather };

  std::vector<std::vector<torch::Tensor>> Collect(Kind kind, const std::vector<int>& group,
                                                  int member, const CollectiveId& id,
                                                  const std::vector<torch::Tensor>& tensors,
                                                  std::chrono::milliseconds timeout,
                                                  const std::atomic<bool>& abort) {
    const int group_size = static_cast<int>(group.size());
    const Key key{kind, id, group};
    std::unique_lock<std::mutex> lock(mu_);
    Entry& e = entries_[key];
    if (e.parts.empty()) e.parts.resize(group_size);
    e.parts[member] = tensors;
    ++e.arrived;
    cv_.notify_all();
    bool ready = cv_.wait_for(lock, timeout, [&] { return abort.load() || e.arrived == group_size; });
    if (abort.load()) throw AbortedError();
    if (!ready) {
      throw std::runtime_error("timed out after " + std::to_string(timeout.count()) + " ms in " +
                               Describe(id) + " with " + std::to_string(e.arrived) + " of " +
                               std::to_string(group_size) + " members arrived");
    }
    std::vector<std::vector<torch::Tensor>> out = e.parts;
    if (++e.left == group_size) entries_.erase(key);
    return out;
  }

  // Taking the lock orders the notification after any waiter's check of
  // the abort flag, so no waiter misses it and sleeps its full timeout.
  void Wake() {
    { std::lock_guard<std::mutex> lock(mu_); }
    cv_.notify_all();
  }

  void Clear() {
    std::lock_guard<std::mutex> lock(mu_);
    entries_.clear();
  }

 private:
  struct Entry {
    std::vector<std::vector<torch::Tensor>> parts;
    int arrived = 0;
    int left = 0;
  };
  std::mutex mu_;
  std::condition_variable cv_;
  using Key = std::tuple<Kind, CollectiveId, std::vector<int>>;
  // std::map: references to entries stay valid while others are inserted.
  std::map<Key, Entry> entries_;
};

int IndexIn(const std::vector<int>& group, int rank) {
  return static_cast<int>(std::find(group.begin(), group.end(), rank) - group.begin());
}

class LocalTransport : public Transport {
 public:
  LocalTransport(int num_ranks, std::vector<torch::Device> devices)
      : devices_(std::move(devices)) {
    for (int r = 0; r < num_ranks; ++r) boxes_.push_back(std::make_unique<Mailbox>());
    if (devices_.empty()) devices_.assign(num_ranks, torch::Device(torch::kCPU));
  }

  Activation Receive(int to, int from, const MessageKey& key, std::chrono::milliseconds timeout,
                     const std::atomic<bool>& abort) override {
    Activation out;
    if (!boxes_.at(to)->Take(key, timeout, abort, &out)) {
      if (abort.load()) throw AbortedError();
      throw std::runtime_error("timed out after " + std::to_string(timeout.count()) +
                               " ms waiting for the " + Describe(key) + " from rank " +
                               std::to_string(from));
    }
    return out;
  }

  void Send(int from, int to, const MessageKey& key, Activation value) override {
    boxes_.at(to)->Put(key, ToDevice(value, devices_.at(to)));
  }

  void AllReduce(int rank, const std::vector<int>& group, const CollectiveId& id,
                 std::vector<torch::Tensor>* tensors, std::chrono::milliseconds timeout,
                 const std::atomic<bool>& abort) override {
    std::vector<std::vector<torch::Tensor>> parts = collector_.Collect(
        Collector::Kind::kAllReduce, group, IndexIn(group, rank), id, *tensors, timeout, abort);
    for (size_t i = 0; i < tensors->size(); ++i) {
      torch::Tensor sum;
      for (const auto& part : parts) {
        torch::Tensor t = part[i].to((*tensors)[i].device());
        sum = sum.defined() ? sum + t : t.clone();
      }
      (*tensors)[i] = sum;
    }
  }

  std::vector<std::vector<torch::Tensor>> AllGather(int rank, const std::vector<int>& group,
                                                    const CollectiveId& id,
                                                    const std::vector<torch::Tensor>& tensors,
                                                    std::chrono::milliseconds timeout,
                                                    const std::atomic<bool>& abort) override {
    // Deposit copies: the tensors are a stage's live parameters, which the
    // depositing rank may step again before a slower member has read them.
    std::vector<torch::Tensor> mine;
    for (const torch::Tensor& t : tensors) mine.push_back(t.detach().clone());
    std::vector<std::vector<torch::Tensor>> parts = collector_.Collect(
        Collector::Kind::kAllGather, group, IndexIn(group, rank), id, mine, timeout, abort);
    for (auto& part : parts) {
      for (torch::Tensor& t : part) t = t.to(devices_.at(rank), /*non_blocking=*/false, /*copy=*/true);
    }
    return parts;
  }

  void Wake() override {
    for (auto& box : boxes_) box->Wake();
    collector_.Wake();
  }

  void Reset() override {
    for (auto& box : boxes_) box->Clear();
    collector_.Clear();
  }

 private:
  std::vector<torch::Device> devices_;
  std::vector<std::unique_ptr<Mailbox>> boxes_;
  Collector collector_;
};

}  // namespace

int64_t PayloadBytes(const std::vector<torch::Tensor>& tensors) {
  int64_t bytes = 0;
  for (const torch::Tensor& t : tensors) {
    if (t.defined()) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  }
  return bytes;
}

torch::Tensor Flatten(const std::vector<torch::Tensor>& tensors, torch::Dtype dtype,
                      const torch::Device& device) {
  if (tensors.empty()) return torch::empty({0}, torch::TensorOptions().dtype(dtype).device(device));
  std::vector<torch::Tensor> flat;
  flat.reserve(tensors.size());
  for (const torch::Tensor& t : tensors) flat.push_back(t.detach().reshape({-1}).to(device, dtype));
  return torch::cat(flat);
}

std::vector<torch::Tensor> Unflatten(const torch::Tensor& bucket,
                                     const std::vector<torch::Tensor>& like) {
  std::vector<torch::Tensor> out;
  out.reserve(like.size());
  int64_t offset = 0;
  for (const torch::Tensor& t : like) {
    out.push_back(bucket.slice(0, offset, offset + t.numel())
                      .view(t.sizes())
                      .to(t.scalar_type(), /*non_blocking=*/false, /*copy=*/true));
    offset += t.numel();
  }
  return out;
}

std::shared_ptr<Transport> MakeLocalTransport(int num_ranks, std::vector<torch::Device> devices) {
  return std::make_shared<MeteredTransport>(
      std::make_shared<LocalTransport>(num_ranks, std::move(devices)));
}

}  // namespace tspipe
