#include "backends/c10d/c10d_transport.h"

#include <thread>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef TSPIPE_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <deque>
#include <map>
#include <sstream>
#include <stdexcept>

namespace tspipe {
namespace {

int EnvInt(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) {
    throw std::invalid_argument(std::string("environment variable ") + name +
                                " is not set (set it like torchrun does, or start the ranks "
                                "with tools/launch)");
  }
  try {
    size_t used = 0;
    int x = std::stoi(v, &used);
    if (used != std::string(v).size()) throw std::invalid_argument(v);
    return x;
  } catch (const std::exception&) {
    throw std::invalid_argument(std::string("environment variable ") + name + "='" + v +
                                "' is not an integer");
  }
}

std::string What(const std::exception& e) {
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

// First line of a possibly long c10 message.
std::string FirstLine(const std::string& s) { return s.substr(0, s.find('\n')); }

// This host's address on the route to `master` (a UDP "connect" sends
// nothing; it only picks the route), or "" if there is none. gloo's default
// binds to what the hostname resolves to, often 127.0.0.1 (Debian's
// /etc/hosts), which no other node can reach.
std::string LocalAddressToward(const std::string& master, int port) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(master.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return "";
  std::string out;
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) == 0) {
    sockaddr_in local{};
    socklen_t len = sizeof(local);
    char text[INET_ADDRSTRLEN] = {};
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0 &&
        inet_ntop(AF_INET, &local.sin_addr, text, sizeof(text)) != nullptr) {
      out = text;
    }
  }
  if (fd >= 0) close(fd);
  freeaddrinfo(found);
  return out;
}

}  // namespace

C10dOptions C10dOptionsFromEnvironment() {
  C10dOptions o;
  o.rank = EnvInt("RANK");
  o.world_size = EnvInt("WORLD_SIZE");
  o.local_rank = std::getenv("LOCAL_RANK") ? EnvInt("LOCAL_RANK") : o.rank;
  o.master_port = EnvInt("MASTER_PORT");
  if (const char* addr = std::getenv("MASTER_ADDR")) o.master_addr = addr;
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    throw std::invalid_argument("RANK=" + std::to_string(o.rank) + " is not in [0, WORLD_SIZE=" +
                                std::to_string(o.world_size) + ")");
  }
  return o;
}

class C10dTransport::Impl {
 public:
  explicit Impl(const C10dOptions& o) : o_(o) {
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

  ~Impl() {
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

  void CheckSameConfig(const std::string& name, const std::string& config) {
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

  std::string ShareFromRankZero(const std::string& name, const std::string& value) {
    const std::string key = "tspipe/share/" + name;
    if (o_.rank == 0) {
      store_->set(key, std::vector<uint8_t>(value.begin(), value.end()));
      return value;
    }
    std::vector<uint8_t> v = store_->get(key);
    return std::string(v.begin(), v.end());
  }

  void Configure(int num_stages, int num_microbatches) {
    num_stages_ = num_stages;
    num_microbatches_ = num_microbatches;
  }

  // Up to kParts messages per activation: its length, its header, and one
  // per tensor; each with its own tag so that gloo can match messages that
  // the two sides post in different orders.
  static constexpr int kParts = 16;

  int Tag(const MessageKey& k, int part) const {
    const int64_t batch = k.batch % 256;  // No two in flight 256 batches apart.
    const int64_t slot =
        ((batch * 3 + static_cast<int>(k.channel)) * num_stages_ + k.stage) * num_microbatches_ +
        k.microbatch;
    return static_cast<int>(slot * kParts + part);
  }

  void Send(int to, const MessageKey& key, const Activation& value) {
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

  Activation Receive(int from, const MessageKey& key, std::chrono::milliseconds timeout) {
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

  class Reduce : public PendingReduce {
   public:
    Reduce(c10::intrusive_ptr<c10d::Work> work, int stage) : work_(std::move(work)), stage_(stage) {}
    void Wait(std::chrono::milliseconds timeout) override {
      if (!work_) return;
      try {
        work_->wait(timeout);
      } catch (const std::exception& e) {
        throw std::runtime_error(Name(stage_) + " failed (a peer exited or timed out after " +
                                 std::to_string(timeout.count() / 1000) + " s): " +
                                 FirstLine(What(e)));
      }
      work_.reset();
    }

    // Stage -1: the loss the benchmark reports; below: tied gradients and
    // the clipping norm (backends/grad_sync.cc).
    static std::string Name(int stage) {
      if (stage < -1) return "the all-reduce of tied gradients or the clipping norm";
      return stage < 0 ? "the loss all-reduce"
                       : "the gradient all-reduce of stage " + std::to_string(stage);
    }

   private:
    c10::intrusive_ptr<c10d::Work> work_;
    int stage_;
  };

  std::unique_ptr<PendingReduce> StartAllReduce(const std::vector<int>& group, int stage,
                                                std::vector<torch::Tensor>* tensors) {
    // A one-member group sums nothing. A one-rank world still goes through
    // the process group, so that a world-size-1 run exercises it (the NCCL
    // check in c10d_cuda_test).
    if (group.size() == 1 && o_.world_size > 1) return std::make_unique<Reduce>(nullptr, stage);
    try {
      return std::make_unique<Reduce>(GroupFor(group).allreduce(*tensors), stage);
    } catch (const std::invalid_argument&) {
      throw;
    } catch (const std::exception& e) {
      throw std::runtime_error(Reduce::Name(stage) + " failed to start: " + FirstLine(What(e)));
    }
  }

  void AllReduce(const std::vector<int>& group, int stage, std::vector<torch::Tensor>* tensors,
                 std::chrono::milliseconds timeout) {
    StartAllReduce(group, stage, tensors)->Wait(timeout);
  }

  void Broadcast(const std::vector<int>& group, int root, std::vector<torch::Tensor>* tensors,
                 std::chrono::milliseconds timeout) {
    if ((group.size() == 1 && o_.world_size > 1) || tensors->empty()) return;
    c10d::Backend& pg = GroupFor(group);
    // One flat bucket per call: one collective instead of one per tensor.
    std::vector<torch::Tensor> flat;
    for (const torch::Tensor& t : *tensors) {
      flat.push_back(t.detach().reshape({-1}).to(device_, torch::kFloat64));
    }
    std::vector<torch::Tensor> bucket{torch::cat(flat)};
    try {
      c10d::BroadcastOptions opts;
      opts.rootRank = IndexIn(group, root);
      pg.broadcast(bucket, opts)->wait(timeout);
    } catch (const std::exception& e) {
      throw std::runtime_error("the parameter broadcast from rank " + std::to_string(root) +
                               " failed: " + FirstLine(What(e)));
    }
    torch::NoGradGuard no_grad;
    int64_t offset = 0;
    for (torch::Tensor& t : *tensors) {
      t.copy_(bucket[0].slice(0, offset, offset + t.numel()).view_as(t));
      offset += t.numel();
    }
  }

  std::vector<std::vector<torch::Tensor>> AllGather(const std::vector<int>& group, int stage,
                                                    const std::vector<torch::Tensor>& tensors,
                                                    std::chrono::milliseconds timeout) {
    const int members = static_cast<int>(group.size());
    // One flat bucket per member, in the tensors' own dtype when they share
    // one (parameters), else float64, which holds integer buffers exactly.
    torch::Dtype dtype = tensors.empty() ? torch::kFloat32 : tensors[0].scalar_type();
    for (const torch::Tensor& t : tensors) {
      if (t.scalar_type() != dtype) dtype = torch::kFloat64;
    }
    std::vector<torch::Tensor> flat;
    for (const torch::Tensor& t : tensors) flat.push_back(t.detach().reshape({-1}).to(device_, dtype));
    torch::Tensor bucket = flat.empty() ? torch::empty({0}, torch::TensorOptions().dtype(dtype).device(device_))
                                        : torch::cat(flat);
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
                                 std::to_string(timeout.count() / 1000) +
                                 " s) during the parameter exchange of stage " +
                                 std::to_string(stage) + ": " + FirstLine(What(e)));
      }
      gathered = out[0];
    }
    std::vector<std::vector<torch::Tensor>> parts(members);
    for (int i = 0; i < members; ++i) {
      int64_t offset = 0;
      for (const torch::Tensor& t : tensors) {
        parts[i].push_back(
            gathered[i].slice(0, offset, offset + t.numel()).view(t.sizes()).to(t.scalar_type()).clone());
        offset += t.numel();
      }
    }
    return parts;
  }

  void Flush(std::chrono::milliseconds timeout) {
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
  static int IndexIn(const std::vector<int>& group, int rank) {
    for (size_t i = 0; i < group.size(); ++i) {
      if (group[i] == rank) return static_cast<int>(i);
    }
    throw std::invalid_argument("rank " + std::to_string(rank) + " is not in the group");
  }

  // The process group of `group` (world ranks): the world's own, or one
  // made on first use by the group's members only (a Pipe-BD group of
  // replicas); members reach it in the same order, so its rendezvous
  // through the store completes. Its rank i is group[i].
  c10d::Backend& GroupFor(const std::vector<int>& group) {
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

  c10::intrusive_ptr<c10d::Backend> MakeGloo(const c10::intrusive_ptr<c10d::Store>& store) const {
    return MakeGloo(store, o_.rank, o_.world_size);
  }
  c10::intrusive_ptr<c10d::Backend> MakeGloo(const c10::intrusive_ptr<c10d::Store>& store, int rank,
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
  c10::intrusive_ptr<c10d::Backend> MakeNccl(const std::string& prefix) const {
    return MakeNccl(prefix, o_.rank, o_.world_size);
  }
  c10::intrusive_ptr<c10d::Backend> MakeNccl(const std::string& prefix, int rank, int size) const {
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = o_.timeout;  // The watchdog's limit for every operation.
    auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
        c10::make_intrusive<c10d::PrefixStore>(prefix, store_), rank, size, opts);
    nccl->setBoundDeviceId(device_);
    return nccl;
  }
#endif

  // The group carrying tensors between this rank and `peer` in one
  // direction (see the constructor); gloo has one group for everything.
  c10d::Backend& P2p(int peer, bool sending) {
    const bool upward = sending ? peer > o_.rank : peer < o_.rank;
    return upward ? *up_ : *down_;
  }

  // Sends `t` over `pg` (the headers' group or a tensors' group).
  void Post(c10d::Backend& pg, int to, torch::Tensor t, int tag) {
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
  void Wait(c10d::Backend& pg, int from, torch::Tensor& t, int tag,
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

C10dTransport::C10dTransport(const C10dOptions& options)
    : impl_(std::make_unique<Impl>(options)), emulated_ms_per_mb_(options.emulated_ms_per_mb) {}
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
bool C10dTransport::MatchesInPostingOrder() const { return impl_->backend() == "nccl"; }
int C10dTransport::world_size() const { return impl_->world_size(); }
void C10dTransport::Configure(int num_stages, int num_microbatches) {
  impl_->Configure(num_stages, num_microbatches);
}
void C10dTransport::Emulate(int64_t bytes, std::chrono::steady_clock::time_point since) const {
  if (emulated_ms_per_mb_ <= 0 || bytes <= 0) return;
  std::this_thread::sleep_until(
      since + std::chrono::microseconds(static_cast<int64_t>(emulated_ms_per_mb_ * bytes / 1e3)));
}

void C10dTransport::Send(int from, int to, const MessageKey& key, Activation value) {
  const int64_t bytes = PayloadBytes(value);
  CountSent(from, bytes);
  Emulate(bytes, std::chrono::steady_clock::now());
  impl_->Send(to, key, value);
}
Activation C10dTransport::Receive(int to, int from, const MessageKey& key,
                                  std::chrono::milliseconds timeout,
                                  const std::atomic<bool>& abort) {
  return impl_->Receive(from, key, timeout);
}
void C10dTransport::AllReduce(int rank, const std::vector<int>& group, int stage, int64_t batch,
                              std::vector<torch::Tensor>* tensors,
                              std::chrono::milliseconds timeout, const std::atomic<bool>& abort) {
  const int64_t p = static_cast<int64_t>(group.size());
  const int64_t bytes = 2 * (p - 1) * PayloadBytes(*tensors) / p;
  CountSent(rank, bytes);
  const auto start = std::chrono::steady_clock::now();
  impl_->AllReduce(group, stage, tensors, timeout);
  Emulate(bytes, start);
}
std::unique_ptr<PendingReduce> C10dTransport::StartAllReduce(
    int rank, const std::vector<int>& group, int stage, int64_t batch,
    std::vector<torch::Tensor>* tensors, std::chrono::milliseconds timeout,
    const std::atomic<bool>& abort) {
  const int64_t p = static_cast<int64_t>(group.size());
  const int64_t bytes = 2 * (p - 1) * PayloadBytes(*tensors) / p;
  CountSent(rank, bytes);
  std::unique_ptr<PendingReduce> pending = impl_->StartAllReduce(group, stage, tensors);
  if (emulated_ms_per_mb_ <= 0) return pending;
  // Done no sooner than the emulated link would have carried it.
  struct Slowed : PendingReduce {
    std::unique_ptr<PendingReduce> inner;
    const C10dTransport* transport;
    int64_t bytes;
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
std::vector<std::vector<torch::Tensor>> C10dTransport::AllGather(
    int rank, const std::vector<int>& group, int stage, int64_t batch,
    const std::vector<torch::Tensor>& tensors, std::chrono::milliseconds timeout,
    const std::atomic<bool>& abort) {
  const int64_t bytes = static_cast<int64_t>(group.size() - 1) * PayloadBytes(tensors);
  CountSent(rank, bytes);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::vector<torch::Tensor>> parts = impl_->AllGather(group, stage, tensors, timeout);
  Emulate(bytes, start);
  return parts;
}
void C10dTransport::Broadcast(int rank, const std::vector<int>& group, int root,
                              std::vector<torch::Tensor>* tensors,
                              std::chrono::milliseconds timeout) {
  if (rank == root) CountSent(rank, PayloadBytes(*tensors));
  impl_->Broadcast(group, root, tensors, timeout);
}
void C10dTransport::Flush(int rank, std::chrono::milliseconds timeout) { impl_->Flush(timeout); }

}  // namespace tspipe
