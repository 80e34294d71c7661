#include "engine/devices.h"

#include <torch/cuda.h>

#include <stdexcept>

namespace tspipe {

void RequireGpus(const std::string& spec, int needed) {
#ifndef TSPIPE_WITH_CUDA
  throw std::invalid_argument("--device=" + spec +
                              ": this binary was built without CUDA; rebuild with "
                              "./tools/bazel run --config=cuda ...");
#endif
  if (!torch::cuda::is_available()) {
    throw std::invalid_argument("--device=" + spec + ", but no CUDA device is visible");
  }
  const int n = static_cast<int>(torch::cuda::device_count());
  if (n < needed) {
    throw std::invalid_argument("--device=" + spec + " needs " + std::to_string(needed) +
                                " GPUs, but only " + std::to_string(n) + " are visible" +
                                (needed > 1 ? " (--device=cuda:0 puts every rank on one GPU)"
                                            : ""));
  }
}

std::vector<c10::Device> RankDevices(const std::string& spec, int ranks) {
  if (spec == "cpu") return {};
  if (spec == "cuda") {
    RequireGpus(spec, ranks);
    std::vector<c10::Device> devices;
    for (int r = 0; r < ranks; ++r) devices.emplace_back(c10::kCUDA, r);
    return devices;
  }
  if (spec.rfind("cuda:", 0) == 0) {
    int index = -1;
    try {
      size_t used = 0;
      index = std::stoi(spec.substr(5), &used);
      if (used != spec.size() - 5) index = -1;
    } catch (const std::exception&) {
    }
    if (index < 0) {
      throw std::invalid_argument("--device=" + spec + ": expected cuda:K with K a GPU index");
    }
    RequireGpus(spec, index + 1);
    return std::vector<c10::Device>(ranks, c10::Device(c10::kCUDA, index));
  }
  throw std::invalid_argument("--device=" + spec + ": use cpu, cuda or cuda:K");
}

c10::Device FirstDevice(const std::string& spec) {
  std::vector<c10::Device> d = RankDevices(spec, 1);
  return d.empty() ? c10::Device(c10::kCPU) : d[0];
}

}  // namespace tspipe
