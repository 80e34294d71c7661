// --device strings to torch devices, with errors that say what is missing.
#ifndef TSPIPE_ENGINE_DEVICES_H_
#define TSPIPE_ENGINE_DEVICES_H_

#include <c10/core/Device.h>

#include <string>
#include <vector>

namespace tspipe {

// Fails (std::invalid_argument) unless this binary can run on CUDA and sees
// `needed` GPUs; `spec` is the --device value, for the message.
void RequireGpus(const std::string& spec, int needed);

// The device of each of `ranks` ranks: "cpu" (empty: CPU for every rank),
// "cuda" (rank r on cuda:r) or "cuda:K" (every rank on cuda:K, to run a
// pipeline on one GPU). Throws std::invalid_argument naming a bad spec.
std::vector<c10::Device> RankDevices(const std::string& spec, int ranks);

// The device rank 0 would get.
c10::Device FirstDevice(const std::string& spec);

}  // namespace tspipe

#endif  // TSPIPE_ENGINE_DEVICES_H_
