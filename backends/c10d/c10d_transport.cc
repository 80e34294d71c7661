// The c10d transport: rendezvous, process groups and configuration checks
// (messages and collectives: c10d_messages.cc).
#include "backends/c10d/c10d_transport.h"

#ifdef TSPIPE_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <sstream>
#include <stdexcept>

#include "backends/c10d/c10d_transport_impl.h"

namespace tspipe {

std::string What(const std::exception& e) {
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

std::string FirstLine(const std::string& s) { return s.substr(0, s.find('\n')); }

C10dTransport::Impl::Impl(const C10dOptions& o) : o_(o) {
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(o.master_port);
  so.isServer = o.rank == 0;
  so.numWorkers = o.world_size;
  so.waitWorkers = true;
  so.timeout = o.timeout;
  const std::string where = o.master_addr + ":" + std::to_string(o.master_port);
  try {
    store_ = c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
  } catch (const std::exception& e) {
    const std::string what = What(e);
    if (o.rank == 0 && what.find("EADDRINUSE") != std::string::npos) {
      throw std::runtime_error("rank 0 cannot host the rendezvous: MASTER_PORT " +
                               std::to_string(o.master_port) +
                               " is already in use; pick another port");
    }
    throw std::runtime_error("rendezvous at " + where + " did not complete within " +
                             std::to_string(o.timeout.count() / 1000) + " s (rank " +
                             std::to_string(o.rank) + " of WORLD_SIZE " +
                             std::to_string(o.world_size) +
                             "; is every rank started, with the same MASTER_ADDR and "
                             "MASTER_PORT?): " +
                             FirstLine(what));
  }
  try {
    if (o.backend == "gloo") {
      pg_ = MakeGloo(store_);
    } else if (o.backend == "nccl") {
#ifdef TSPIPE_WITH_CUDA
      const int visible = static_cast<int>(c10::cuda::device_count());
      if (o.local_rank >= visible) {
        throw std::invalid_argument("LOCAL_RANK " + std::to_string(o.local_rank) +
                                    " has no GPU: " + std::to_string(visible) +
                                    " are visible (the nccl backend puts local rank i on "
                                    "cuda:i)");
      }
      device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(o.local_rank));
      c10::cuda::set_device(device_.index());
      // The few small headers (sizes and dtypes) travel over gloo, on the
      // CPU, tag-matched: a receiver learns a message's shape without a
      // device sync, and a peer that died is noticed by a CPU wait with a
      // timeout that names it, not by a stream that never finishes.
      meta_ = MakeGloo(c10::make_intrusive<c10d::PrefixStore>("meta", store_));
      // Tensors go over NCCL, on NCCL's own streams (they overlap the
      // rank's compute). NCCL runs a pair's messages on one stream in
      // posting order, and a large send waits for its receive: if the
      // two directions of a pair shared a stream, rank 0's "send a2,
      // receive g1" against rank 1's "send g1, receive a2" would deadlock.
      // So each direction has its own group (communicator and stream), in
      // which both sides post in the same order (CheckMessageOrder), and
      // collectives a third.
      pg_ = MakeNccl("nccl");
      up_ = MakeNccl("nccl_up");
      down_ = MakeNccl("nccl_down");
#else
      throw std::invalid_argument(
          "the nccl backend needs a CUDA build (./tools/bazel build --config=cuda)");
#endif
    } else {
      throw std::invalid_argument("unknown c10d backend '" + o.backend + "'; use gloo or nccl");
    }
  } catch (const std::invalid_argument&) {
    throw;
  } catch (const std::exception& e) {
    throw std::runtime_error("creating the " + o.backend + " process group failed on rank " +
                             std::to_string(o.rank) + ": " + FirstLine(What(e)));
  }
  if (!meta_) meta_ = pg_;
  if (!up_) up_ = down_ = pg_;
}

C10dTransport::Impl::~Impl() {
  // Sends whose peer died never complete; do not wait for them here. A
  // clean run (everything flushed) shuts NCCL down normally instead of
  // leaving it to the destructor's abort.
  const bool clean = pending_.empty();
  pending_.clear();
  if (clean && o_.backend == "nccl") {
    std::vector<c10::intrusive_ptr<c10d::Backend>> all = {pg_, up_, down_};
    for (auto& [group, pg] : groups_) all.push_back(pg);
    for (auto& pg : all) {
      try {
        pg->shutdown();
      } catch (const std::exception&) {
      }
    }
  }
}

void C10dTransport::Impl::CheckSameConfig(const std::string& name, const std::string& config) {
  const std::string prefix = "tspipe/config/" + name + "/";
  store_->set(prefix + std::to_string(o_.rank),
              std::vector<uint8_t>(config.begin(), config.end()));
  auto fetch = [&](int r) {
    try {
      std::vector<uint8_t> v = store_->get(prefix + std::to_string(r));
      return std::string(v.begin(), v.end());
    } catch (const std::exception& e) {
      throw std::runtime_error("rank " + std::to_string(r) +
                               " never published its configuration: " + FirstLine(What(e)));
    }
  };
  auto lines = [](const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  };
  // Rank 0 checks everyone; the others check rank 0: every rank of a
  // mismatched pair fails.
  std::vector<int> others;
  if (o_.rank == 0) {
    for (int r = 1; r < o_.world_size; ++r) others.push_back(r);
  } else {
    others.push_back(0);
  }
  const std::vector<std::string> mine = lines(config);
  for (int r : others) {
    const std::vector<std::string> theirs = lines(fetch(r));
    for (size_t i = 0; i < std::max(mine.size(), theirs.size()); ++i) {
      const std::string a = i < mine.size() ? mine[i] : "(nothing)";
      const std::string b = i < theirs.size() ? theirs[i] : "(nothing)";
      if (a != b) {
        throw std::invalid_argument("rank " + std::to_string(r) +
                                    " was started with a different configuration: it has " + b +
                                    ", rank " + std::to_string(o_.rank) + " has " + a);
      }
    }
  }
}

std::string C10dTransport::Impl::ShareFromRankZero(const std::string& name, const std::string& value) {
  const std::string key = "tspipe/share/" + name;
  if (o_.rank == 0) {
    store_->set(key, std::vector<uint8_t>(value.begin(), value.end()));
    return value;
  }
  std::vector<uint8_t> v = store_->get(key);
  return std::string(v.begin(), v.end());
}

// Position of `rank` in `group`; throws if it is not a member.
int C10dTransport::Impl::IndexIn(const std::vector<int>& group, int rank) {
  for (size_t i = 0; i < group.size(); ++i) {
    if (group[i] == rank) return static_cast<int>(i);
  }
  throw std::invalid_argument("rank " + std::to_string(rank) + " is not in the group");
}

// The process group of `group` (world ranks): the world's own, or one
// made on first use by the group's members only (a Pipe-BD group of
// replicas); members reach it in the same order, so its rendezvous
// through the store completes. Its rank i is group[i].
c10d::Backend& C10dTransport::Impl::GroupFor(const std::vector<int>& group) {
  if (static_cast<int>(group.size()) == o_.world_size) return *pg_;
  auto it = groups_.find(group);
  if (it != groups_.end()) return *it->second;
  const int index = IndexIn(group, o_.rank);
  std::string ranks;
  for (int r : group) ranks += (ranks.empty() ? "" : ",") + std::to_string(r);
  const std::string name = "group/" + ranks;
  c10::intrusive_ptr<c10d::Backend> pg;
  try {
#ifdef TSPIPE_WITH_CUDA
    if (o_.backend == "nccl") pg = MakeNccl(name, index, static_cast<int>(group.size()));
#endif
    if (!pg) {
      pg = MakeGloo(c10::make_intrusive<c10d::PrefixStore>(name, store_), index,
                    static_cast<int>(group.size()));
    }
  } catch (const std::exception& e) {
    throw std::runtime_error("creating the process group of ranks " + ranks +
                             " failed: " + FirstLine(What(e)));
  }
  return *groups_.emplace(group, pg).first->second;
}

c10::intrusive_ptr<c10d::Backend> C10dTransport::Impl::MakeGloo(const c10::intrusive_ptr<c10d::Store>& store) const {
  return MakeGloo(store, o_.rank, o_.world_size);
}

c10::intrusive_ptr<c10d::Backend> C10dTransport::Impl::MakeGloo(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                           int size) const {
  auto opts = c10d::ProcessGroupGloo::Options::create(o_.timeout);
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME")) {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  } else if (o_.master_addr == "127.0.0.1" || o_.master_addr == "localhost") {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  } else if (const std::string local = LocalAddressToward(o_.master_addr, o_.master_port);
             !local.empty()) {
    // Several nodes: listen on the interface that reaches rank 0's node
    // (GLOO_SOCKET_IFNAME overrides).
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(local));
  } else {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, opts);
}

#ifdef TSPIPE_WITH_CUDA
c10::intrusive_ptr<c10d::Backend> C10dTransport::Impl::MakeNccl(const std::string& prefix) const {
  return MakeNccl(prefix, o_.rank, o_.world_size);
}

c10::intrusive_ptr<c10d::Backend> C10dTransport::Impl::MakeNccl(const std::string& prefix, int rank, int size) const {
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = o_.timeout;  // The watchdog's limit for every operation.
  auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
      c10::make_intrusive<c10d::PrefixStore>(prefix, store_), rank, size, opts);
  nccl->setBoundDeviceId(device_);
  return nccl;
}
#endif

C10dTransport::C10dTransport(const C10dOptions& options)
    : impl_(std::make_unique<Impl>(options)) {}
C10dTransport::~C10dTransport() = default;

void C10dTransport::CheckSameConfig(const std::string& name, const std::string& config) {
  impl_->CheckSameConfig(name, config);
}
std::string C10dTransport::ShareFromRankZero(const std::string& name, const std::string& value) {
  return impl_->ShareFromRankZero(name, value);
}
int C10dTransport::rank() const { return impl_->rank(); }
torch::Device C10dTransport::device() const { return impl_->device(); }
const std::string& C10dTransport::backend() const { return impl_->backend(); }
int C10dTransport::world_size() const { return impl_->world_size(); }
void C10dTransport::Configure(int num_stages, int num_microbatches) {
  impl_->Configure(num_stages, num_microbatches);
}
void C10dTransport::Send(int from, int to, const MessageKey& key, Activation value) {
  impl_->Send(to, key, value);
}
Activation C10dTransport::Receive(int to, int from, const MessageKey& key,
                                  std::chrono::milliseconds timeout,
                                  const std::atomic<bool>& abort) {
  return impl_->Receive(from, key, timeout);
}
void C10dTransport::AllReduce(int rank, const std::vector<int>& group, const CollectiveId& id,
                              std::vector<torch::Tensor>* tensors,
                              std::chrono::milliseconds timeout, const std::atomic<bool>& abort) {
  impl_->AllReduce(group, id, tensors, timeout);
}
std::unique_ptr<PendingReduce> C10dTransport::StartAllReduce(
    int rank, const std::vector<int>& group, const CollectiveId& id,
    std::vector<torch::Tensor>* tensors, std::chrono::milliseconds timeout,
    const std::atomic<bool>& abort) {
  return impl_->StartAllReduce(group, id, tensors);
}
std::vector<std::vector<torch::Tensor>> C10dTransport::AllGather(
    int rank, const std::vector<int>& group, const CollectiveId& id,
    const std::vector<torch::Tensor>& tensors, std::chrono::milliseconds timeout,
    const std::atomic<bool>& abort) {
  return impl_->AllGather(group, id, tensors, timeout);
}
void C10dTransport::Broadcast(int rank, const std::vector<int>& group, int root,
                              std::vector<torch::Tensor>* tensors,
                              std::chrono::milliseconds timeout) {
  impl_->Broadcast(group, root, tensors, timeout);
}
void C10dTransport::Flush(int rank, std::chrono::milliseconds timeout) { impl_->Flush(timeout); }

}  // namespace tspipe
