// What every rank of a c10d run, and a run resuming a checkpoint, must agree
// on: a TrainConfig's settings as "key=value" lines. Torch-free.
#ifndef TSPIPE_ENGINE_FINGERPRINT_H_
#define TSPIPE_ENGINE_FINGERPRINT_H_

#include <string>

#include "engine/trainer.h"

namespace tspipe {

// One setting per line, then the recipe's canonical options (`recipe_options`,
// "name=value" lines) each prefixed with the algorithm's name.
std::string Fingerprint(const TrainConfig& config, const std::string& recipe_options);

}  // namespace tspipe

#endif  // TSPIPE_ENGINE_FINGERPRINT_H_
