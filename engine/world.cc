#include "engine/world.h"

#include <chrono>
#include <stdexcept>
#include <utility>

#include "backends/c10d/c10d_transport.h"
#include "engine/devices.h"

namespace tspipe {

std::shared_ptr<World> World::Join(const std::string& device, int peer_timeout_seconds,
                                   double emulated_ms_per_mb) {
  if (device != "cpu" && device != "cuda") {
    throw std::invalid_argument("--backend=c10d takes --device=cpu or cuda (local rank i on "
                                "cuda:i), not " + device);
  }
  if (device == "cuda") RequireGpus(device, 1);
  C10dOptions o = C10dOptionsFromEnvironment();
  o.backend = device == "cuda" ? "nccl" : "gloo";
  o.timeout = std::chrono::seconds(peer_timeout_seconds);
  return std::shared_ptr<World>(
      new World(std::make_shared<C10dTransport>(o), emulated_ms_per_mb, device));
}

World::World(std::shared_ptr<C10dTransport> c10d, double emulated_ms_per_mb, std::string device)
    : c10d_(std::move(c10d)),
      transport_(std::make_shared<MeteredTransport>(c10d_, emulated_ms_per_mb)),
      device_(std::move(device)) {}

World::~World() = default;

int World::rank() const { return c10d_->rank(); }
int World::world_size() const { return c10d_->world_size(); }
const std::string& World::backend() const { return c10d_->backend(); }
const std::string& World::device() const { return device_; }
std::string World::tensor_device() const { return c10d_->device().str(); }

void World::CheckSameConfig(const std::string& what, const std::string& config) {
  c10d_->CheckSameConfig(what + std::to_string(checks_++), config);
}

std::string World::ShareFromRankZero(const std::string& what, const std::string& value) {
  return c10d_->ShareFromRankZero(what + std::to_string(checks_++), value);
}

std::shared_ptr<Transport> World::transport() const { return transport_; }

}  // namespace tspipe
