// The in-process transport: ranks are threads of one process.
#include <condition_variable>
#include <map>
#include <mutex>

#include "backends/transport.h"
#include "core/microbatch.h"

namespace tspipe {
std::string Describe(const MessageKey& k) {
  static const char* kNames[] = {"activation", "teacher activation", "gradient"};
  return std::string(kNames[static_cast<int>(k.channel)]) + " of stage " +
         std::to_string(k.stage) + ", micro-batch " + std::to_string(k.microbatch) +
         ", mini-batch " + std::to_string(k.batch + 1);
}

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

// Replicas of a stage deposit their tensors under (stage, mini-batch) and
// each waits until the whole group has arrived; each then sums all deposits
// in replica order (so every replica gets bitwise the same sum) into new
// tensors: the others may still be reading what it deposited.
class Reducer {
 public:
  void AllReduce(int replica, int group_size, int stage, int64_t batch,
                 std::vector<torch::Tensor>* tensors, std::chrono::milliseconds timeout,
                 const std::atomic<bool>& abort) {
    const std::pair<int, int64_t> key{stage, batch};
    std::unique_lock<std::mutex> lock(mu_);
    Entry& e = entries_[key];
    if (e.parts.empty()) e.parts.resize(group_size);
    e.parts[replica] = *tensors;
    ++e.arrived;
    cv_.notify_all();
    bool ready = cv_.wait_for(lock, timeout, [&] { return abort.load() || e.arrived == group_size; });
    if (abort.load()) throw AbortedError();
    if (!ready) {
      throw std::runtime_error("timed out after " + std::to_string(timeout.count()) +
                               " ms in the gradient all-reduce of stage " + std::to_string(stage) +
                               " with " + std::to_string(e.arrived) + " of " +
                               std::to_string(group_size) + " replicas arrived");
    }
    lock.unlock();
    for (size_t i = 0; i < tensors->size(); ++i) {
      torch::Tensor sum;
      for (const auto& part : e.parts) {
        torch::Tensor t = part[i].to((*tensors)[i].device());
        sum = sum.defined() ? sum + t : t.clone();
      }
      (*tensors)[i] = sum;
    }
    lock.lock();
    if (++e.left == group_size) entries_.erase(key);
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
  // std::map: references to entries stay valid while others are inserted.
  std::map<std::pair<int, int64_t>, Entry> entries_;
};

class LocalTransport : public Transport {
 public:
  LocalTransport(int num_ranks, std::vector<torch::Device> devices)
      : devices_(std::move(devices)) {
    for (int r = 0; r < num_ranks; ++r) boxes_.push_back(std::make_unique<Mailbox>());
    if (devices_.empty()) devices_.assign(num_ranks, torch::Device(torch::kCPU));
  }

  void Send(int from, int to, const MessageKey& key, Activation value) override {
    boxes_.at(to)->Put(key, ToDevice(value, devices_.at(to)));
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

  void AllReduce(int rank, const std::vector<int>& group, int stage, int64_t batch,
                 std::vector<torch::Tensor>* tensors, std::chrono::milliseconds timeout,
                 const std::atomic<bool>& abort) override {
    const int replica =
        static_cast<int>(std::find(group.begin(), group.end(), rank) - group.begin());
    reducer_.AllReduce(replica, static_cast<int>(group.size()), stage, batch, tensors, timeout,
                       abort);
  }

  void Wake() override {
    for (auto& box : boxes_) box->Wake();
    reducer_.Wake();
  }

  void Reset() override {
    for (auto& box : boxes_) box->Clear();
    reducer_.Clear();
  }

 private:
  std::vector<torch::Device> devices_;
  std::vector<std::unique_ptr<Mailbox>> boxes_;
  Reducer reducer_;
};

}  // namespace

std::shared_ptr<Transport> MakeLocalTransport(int num_ranks, std::vector<torch::Device> devices) {
  return std::make_shared<LocalTransport>(num_ranks, std::move(devices));
}

}  // namespace tspipe
