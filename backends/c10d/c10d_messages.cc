// The c10d transport's messages (a header over gloo, tag-matched, then the
// tensors) and collectives over process groups (backends/c10d/
// c10d_transport_impl.h).
#include <stdexcept>

#include "backends/c10d/c10d_transport_impl.h"

namespace tspipe {

void C10dTransport::Impl::Configure(int num_stages, int num_microbatches) {
  num_stages_ = num_stages;
  num_microbatches_ = num_microbatches;
}

int C10dTransport::Impl::Tag(const MessageKey& k, int part) const {
  const int64_t batch = k.batch % 256;  // No two in flight 256 batches apart.
  const int64_t slot =
      ((batch * 3 + static_cast<int>(k.channel)) * num_stages_ + k.stage) * num_microbatches_ +
      k.microbatch;
  return static_cast<int>(slot * kParts + part);
}

void C10dTransport::Impl::Send(int to, const MessageKey& key, const Activation& value) {
  if (static_cast<int>(value.size()) + 2 > kParts) {
    throw std::invalid_argument("an activation of " + std::to_string(value.size()) +
                                " tensors exceeds the c10d transport's " +
                                std::to_string(kParts - 2));
  }
  // Header: count, then per tensor: defined, dtype, rank, sizes.
  std::vector<int64_t> header{static_cast<int64_t>(value.size())};
  std::vector<torch::Tensor> data;
  for (const torch::Tensor& t : value) {
    header.push_back(t.defined() ? 1 : 0);
    if (!t.defined()) continue;
    header.push_back(static_cast<int64_t>(t.scalar_type()));
    header.push_back(t.dim());
    for (int64_t d : t.sizes()) header.push_back(d);
    data.push_back(t.detach().contiguous());
  }
  torch::Tensor h = torch::tensor(header, torch::kInt64);
  Post(*meta_, to, torch::tensor({h.numel()}, torch::kInt64), Tag(key, 0));
  Post(*meta_, to, h, Tag(key, 1));
  for (size_t i = 0; i < data.size(); ++i) {
    // NCCL sends from the rank's own GPU; gloo from host memory.
    torch::Tensor t = data[i].to(device_);
    Post(P2p(to, /*sending=*/true), to, t, Tag(key, 2 + static_cast<int>(i)));
  }
}

Activation C10dTransport::Impl::Receive(int from, const MessageKey& key, std::chrono::milliseconds timeout) {
  torch::Tensor len = torch::empty({1}, torch::kInt64);
  Wait(*meta_, from, len, Tag(key, 0), timeout, key);
  torch::Tensor h = torch::empty({len.item<int64_t>()}, torch::kInt64);
  Wait(*meta_, from, h, Tag(key, 1), timeout, key);
  const int64_t* p = h.data_ptr<int64_t>();
  const int64_t n = *p++;
  Activation out;
  int part = 2;
  for (int64_t i = 0; i < n; ++i) {
    if (*p++ == 0) {
      out.push_back(torch::Tensor());
      continue;
    }
    auto dtype = static_cast<c10::ScalarType>(*p++);
    const int64_t dim = *p++;
    std::vector<int64_t> sizes(p, p + dim);
    p += dim;
    torch::Tensor t = torch::empty(sizes, torch::TensorOptions().dtype(dtype).device(device_));
    // NCCL: the wait only orders this rank's stream after the transfer
    // (no host sync); the header above already proved the peer alive.
    Wait(P2p(from, /*sending=*/false), from, t, Tag(key, part++),
         o_.backend == "nccl" ? ::kNoTimeout : timeout, key);
    out.push_back(t);
  }
  return out;
}

std::unique_ptr<PendingReduce> C10dTransport::Impl::StartAllReduce(const std::vector<int>& group,
                                              const CollectiveId& id,
                                              std::vector<torch::Tensor>* tensors) {
  // A one-member group sums nothing. A one-rank world still goes through
  // the process group, so that a world-size-1 run exercises it (the NCCL
  // check in c10d_cuda_test).
  if (group.size() == 1 && o_.world_size > 1) return std::make_unique<Reduce>(nullptr, id);
  try {
    return std::make_unique<Reduce>(GroupFor(group).allreduce(*tensors), id);
  } catch (const std::invalid_argument&) {
    throw;
  } catch (const std::exception& e) {
    throw std::runtime_error(Describe(id) + " failed to start: " + FirstLine(What(e)));
  }
}

void C10dTransport::Impl::AllReduce(const std::vector<int>& group, const CollectiveId& id,
               std::vector<torch::Tensor>* tensors, std::chrono::milliseconds timeout) {
  StartAllReduce(group, id, tensors)->Wait(timeout);
}

void C10dTransport::Impl::Broadcast(const std::vector<int>& group, int root, std::vector<torch::Tensor>* tensors,
               std::chrono::milliseconds timeout) {
  if ((group.size() == 1 && o_.world_size > 1) || tensors->empty()) return;
  c10d::Backend& pg = GroupFor(group);
  // One flat float64 bucket per call, which holds integer buffers exactly.
  std::vector<torch::Tensor> bucket{Flatten(*tensors, torch::kFloat64, device_)};
  try {
    c10d::BroadcastOptions opts;
    opts.rootRank = IndexIn(group, root);
    pg.broadcast(bucket, opts)->wait(timeout);
  } catch (const std::exception& e) {
    throw std::runtime_error(Describe(CollectiveId{CollectiveId::Kind::kBroadcast}) +
                             " from rank " + std::to_string(root) + " failed: " +
                             FirstLine(What(e)));
  }
  torch::NoGradGuard no_grad;
  const std::vector<torch::Tensor> pieces = Unflatten(bucket[0], *tensors);
  for (size_t i = 0; i < tensors->size(); ++i) (*tensors)[i].copy_(pieces[i]);
}

std::vector<std::vector<torch::Tensor>> C10dTransport::Impl::AllGather(const std::vector<int>& group,
                                                  const CollectiveId& id,
                                                  const std::vector<torch::Tensor>& tensors,
                                                  std::chrono::milliseconds timeout) {
  const int members = static_cast<int>(group.size());
  // One flat bucket per member, in the tensors' own dtype when they share
  // one (parameters), else float64, which holds integer buffers exactly.
  torch::Dtype dtype = tensors.empty() ? torch::kFloat32 : tensors[0].scalar_type();
  for (const torch::Tensor& t : tensors) {
    if (t.scalar_type() != dtype) dtype = torch::kFloat64;
  }
  const torch::Tensor bucket = Flatten(tensors, dtype, device_);
  std::vector<torch::Tensor> gathered;
  if (members == 1 && o_.world_size > 1) {
    gathered.push_back(bucket.clone());
  } else {
    std::vector<std::vector<torch::Tensor>> out(1);
    for (int i = 0; i < members; ++i) out[0].push_back(torch::empty_like(bucket));
    std::vector<torch::Tensor> in{bucket};
    try {
      GroupFor(group).allgather(out, in)->wait(timeout);
    } catch (const std::exception& e) {
      std::string others;
      for (int r : group) {
        if (r != o_.rank) others += (others.empty() ? "" : ", ") + std::to_string(r);
      }
      throw std::runtime_error("lost rank " + others + " (or it timed out after " +
                               std::to_string(timeout.count() / 1000) + " s) during " +
                               Describe(id) + ": " + FirstLine(What(e)));
    }
    gathered = out[0];
  }
  std::vector<std::vector<torch::Tensor>> parts;
  for (int i = 0; i < members; ++i) parts.push_back(Unflatten(gathered[i], tensors));
  return parts;
}

void C10dTransport::Impl::Flush(std::chrono::milliseconds timeout) {
  for (Pending& p : pending_) {
    try {
      p.work->wait(timeout);
    } catch (const std::exception& e) {
      throw std::runtime_error("lost rank " + std::to_string(p.to) +
                               ": a send to it did not complete: " + FirstLine(What(e)));
    }
  }
  pending_.clear();
}

// The group carrying tensors between this rank and `peer` in one
// direction (see the constructor); gloo has one group for everything.
c10d::Backend& C10dTransport::Impl::P2p(int peer, bool sending) {
  const bool upward = sending ? peer > o_.rank : peer < o_.rank;
  return upward ? *up_ : *down_;
}

// Sends `t` over `pg` (the headers' group or a tensors' group).
void C10dTransport::Impl::Post(c10d::Backend& pg, int to, torch::Tensor t, int tag) {
  std::vector<torch::Tensor> v{t};
  pending_.push_back({to, t, pg.send(v, to, tag)});
  // Forget finished sends so a long run does not pile them up. A failed
  // send also counts as completed: report it rather than drop it.
  while (!pending_.empty() && pending_.front().work->isCompleted()) {
    if (std::exception_ptr e = pending_.front().work->exception()) {
      const int peer = pending_.front().to;
      pending_.clear();
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        throw std::runtime_error("lost rank " + std::to_string(peer) +
                                 ": a send to it failed: " + FirstLine(What(x)));
      }
    }
    pending_.pop_front();
  }
}

// Receives into `t` over `pg`, waiting at most `timeout` for the data.
// With NCCL and kNoTimeout it returns once the rank's current stream
// is ordered after the transfer, before the data has arrived.
void C10dTransport::Impl::Wait(c10d::Backend& pg, int from, torch::Tensor& t, int tag,
          std::chrono::milliseconds timeout, const MessageKey& key) {
  std::vector<torch::Tensor> v{t};
  try {
    auto work = pg.recv(v, from, tag);
    work->wait(timeout);
  } catch (const std::exception& e) {
    const std::string what = What(e);
    const bool timed_out = what.find("imed out") != std::string::npos ||
                           what.find("timeout") != std::string::npos;
    throw std::runtime_error(
        "lost rank " + std::to_string(from) + " while waiting for the " + Describe(key) +
        (timed_out ? " (no data for " + std::to_string(timeout.count() / 1000) + " s)"
                   : " (connection closed)") +
        ": " + FirstLine(what));
  }
}

}  // namespace tspipe
