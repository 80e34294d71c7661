// The student's optimizer per stage, and its schedule over training
// (learning-rate warm-up and decay, weight decay by phase), from a
// TrainConfig.
#ifndef TSPIPE_ENGINE_OPTIMIZER_H_
#define TSPIPE_ENGINE_OPTIMIZER_H_

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <vector>

#include "engine/trainer.h"

namespace tspipe {

// One optimizer per stage over its trainable parameters (null for a stage
// with none): SGD with momentum or AdamW. Throws std::invalid_argument for
// an unknown optimizer name.
std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<torch::Tensor>)>
MakeOptimizerFactory(const TrainConfig& config);

// The learning rate and weight decay of step `step` (1-based), set before
// it; null when both are constant. Throws std::invalid_argument when a
// decaying rate has no total step count.
std::function<void(torch::optim::Optimizer&, int)> MakeStepSchedule(const TrainConfig& config);

}  // namespace tspipe

#endif  // TSPIPE_ENGINE_OPTIMIZER_H_
