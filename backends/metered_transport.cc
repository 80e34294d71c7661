// MeteredTransport (backends/transport.h): traffic counts and link
// emulation, once, around whichever transport carries the tensors.
#include <thread>

#include "backends/transport.h"

namespace tspipe {
namespace {

// Bytes a rank sends in a ring all-reduce of `bytes` over `members`.
int64_t RingBytes(int64_t bytes, size_t members) {
  const int64_t p = static_cast<int64_t>(members);
  return p > 0 ? 2 * (p - 1) * bytes / p : 0;
}

}  // namespace

MeteredTransport::MeteredTransport(std::shared_ptr<Transport> inner, double emulated_ms_per_mb)
    : inner_(std::move(inner)), emulated_ms_per_mb_(emulated_ms_per_mb) {}

void MeteredTransport::Configure(int num_stages, int num_microbatches) {
  inner_->Configure(num_stages, num_microbatches);
}

void MeteredTransport::Count(int rank, int64_t bytes) {
  std::lock_guard<std::mutex> lock(traffic_mu_);
  traffic_[rank] += bytes;
}

int64_t MeteredTransport::bytes_sent(int rank) const {
  std::lock_guard<std::mutex> lock(traffic_mu_);
  auto it = traffic_.find(rank);
  return it == traffic_.end() ? 0 : it->second;
}

void MeteredTransport::Emulate(int64_t bytes, std::chrono::steady_clock::time_point since) const {
  if (emulated_ms_per_mb_ <= 0 || bytes <= 0) return;
  std::this_thread::sleep_until(
      since + std::chrono::microseconds(static_cast<int64_t>(emulated_ms_per_mb_ * bytes / 1e3)));
}

void MeteredTransport::Send(int from, int to, const MessageKey& key, Activation value) {
  const int64_t bytes = PayloadBytes(value);
  Count(from, bytes);
  Emulate(bytes, std::chrono::steady_clock::now());
  inner_->Send(from, to, key, std::move(value));
}

Activation MeteredTransport::Receive(int to, int from, const MessageKey& key,
                                     std::chrono::milliseconds timeout,
                                     const std::atomic<bool>& abort) {
  return inner_->Receive(to, from, key, timeout, abort);
}

void MeteredTransport::AllReduce(int rank, const std::vector<int>& group, const CollectiveId& id,
                                 std::vector<torch::Tensor>* tensors,
                                 std::chrono::milliseconds timeout,
                                 const std::atomic<bool>& abort) {
  const int64_t bytes = RingBytes(PayloadBytes(*tensors), group.size());
  Count(rank, bytes);
  const auto start = std::chrono::steady_clock::now();
  inner_->AllReduce(rank, group, id, tensors, timeout, abort);
  Emulate(bytes, start);
}

std::unique_ptr<PendingReduce> MeteredTransport::StartAllReduce(
    int rank, const std::vector<int>& group, const CollectiveId& id,
    std::vector<torch::Tensor>* tensors, std::chrono::milliseconds timeout,
    const std::atomic<bool>& abort) {
  const int64_t bytes = RingBytes(PayloadBytes(*tensors), group.size());
  Count(rank, bytes);
  std::unique_ptr<PendingReduce> pending =
      inner_->StartAllReduce(rank, group, id, tensors, timeout, abort);
  if (emulated_ms_per_mb_ <= 0) return pending;
  // Done no sooner than the emulated link would have carried it.
  struct Slowed : PendingReduce {
    std::unique_ptr<PendingReduce> inner;
    const MeteredTransport* transport = nullptr;
    int64_t bytes = 0;
    std::chrono::steady_clock::time_point start;
    void Wait(std::chrono::milliseconds timeout) override {
      inner->Wait(timeout);
      transport->Emulate(bytes, start);
    }
  };
  auto slowed = std::make_unique<Slowed>();
  slowed->inner = std::move(pending);
  slowed->transport = this;
  slowed->bytes = bytes;
  slowed->start = std::chrono::steady_clock::now();
  return slowed;
}

void MeteredTransport::Broadcast(int rank, const std::vector<int>& group, int root,
                                 std::vector<torch::Tensor>* tensors,
                                 std::chrono::milliseconds timeout) {
  if (rank == root) Count(rank, PayloadBytes(*tensors));
  inner_->Broadcast(rank, group, root, tensors, timeout);
}

std::vector<std::vector<torch::Tensor>> MeteredTransport::AllGather(
    int rank, const std::vector<int>& group, const CollectiveId& id,
    const std::vector<torch::Tensor>& tensors, std::chrono::milliseconds timeout,
    const std::atomic<bool>& abort) {
  const int64_t bytes =
      static_cast<int64_t>(group.empty() ? 0 : group.size() - 1) * PayloadBytes(tensors);
  Count(rank, bytes);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::vector<torch::Tensor>> parts =
      inner_->AllGather(rank, group, id, tensors, timeout, abort);
  Emulate(bytes, start);
  return parts;
}

void MeteredTransport::Flush(int rank, std::chrono::milliseconds timeout) {
  inner_->Flush(rank, timeout);
}
void MeteredTransport::Wake() { inner_->Wake(); }
void MeteredTransport::Reset() { inner_->Reset(); }

}  // namespace tspipe
