// A c10d world: this process is one rank of it, the other ranks are
// processes too (started by tools/launch or torchrun, which set RANK,
// WORLD_SIZE, MASTER_ADDR, MASTER_PORT). A main makes one and hands it to
// every Trainer it builds (they run one after another over the same
// process groups); nothing in the library keeps one of its own.
#ifndef TSPIPE_ENGINE_WORLD_H_
#define TSPIPE_ENGINE_WORLD_H_

#include <memory>
#include <string>

namespace tspipe {

class C10dTransport;
class Transport;

class World {
 public:
  // Rendezvous from the torchrun variables. `device`: "cpu" (gloo) or
  // "cuda" (NCCL, local rank i on cuda:i; needs a --config=cuda build and a
  // GPU). `peer_timeout_seconds` bounds the rendezvous and every wait for a
  // peer. Throws std::invalid_argument for a bad device or variable and
  // std::runtime_error when the rendezvous fails (busy port, missing rank).
  // `emulated_ms_per_mb` > 0 slows every transfer to that many ms per MB
  // (MeteredTransport), to measure what a slower link costs.
  static std::shared_ptr<World> Join(const std::string& device, int peer_timeout_seconds,
                                     double emulated_ms_per_mb = 0);

  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  int rank() const;
  int world_size() const;
  // "gloo" or "nccl".
  const std::string& backend() const;
  // The --device this world was joined with ("cpu" or "cuda").
  const std::string& device() const;
  // Where this rank's tensors live: "cpu" under gloo, "cuda:LOCAL_RANK"
  // under nccl.
  std::string tensor_device() const;

  // Every rank publishes `config` ("key=value" lines) and compares with rank
  // 0's; throws std::invalid_argument naming the first setting that
  // differs. A fresh name per check, so several checks may run in one
  // process.
  void CheckSameConfig(const std::string& what, const std::string& config);
  // Rank 0's `value` on every rank (a choice rank 0 makes for all, such as
  // measured block costs).
  std::string ShareFromRankZero(const std::string& what, const std::string& value);

  // The transport under it, metered (traffic counts, link emulation), for
  // the engine's executors and its process-level collectives.
  std::shared_ptr<Transport> transport() const;

 private:
  World(std::shared_ptr<C10dTransport> c10d, double emulated_ms_per_mb, std::string device);
  std::shared_ptr<C10dTransport> c10d_;
  std::shared_ptr<Transport> transport_;
  std::string device_;
  int checks_ = 0;
};

}  // namespace tspipe

#endif  // TSPIPE_ENGINE_WORLD_H_
