#include "engine/optimizer.h"

#include <algorithm>
#include <stdexcept>

namespace tspipe {

std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<torch::Tensor>)>
MakeOptimizerFactory(const TrainConfig& c) {
  if (c.optimizer != "sgd" && c.optimizer != "adamw") {
    throw std::invalid_argument("unknown optimizer '" + c.optimizer + "'; use sgd or adamw");
  }
  return [c](std::vector<torch::Tensor> all) -> std::unique_ptr<torch::optim::Optimizer> {
    std::vector<torch::Tensor> params;
    for (const torch::Tensor& p : all) {
      if (p.requires_grad()) params.push_back(p);
    }
    if (params.empty()) return nullptr;  // A frozen stage: nothing to step.
    if (c.optimizer == "adamw") {
      return std::make_unique<torch::optim::AdamW>(
          params, torch::optim::AdamWOptions(c.learning_rate)
                      .betas({c.adam_beta1, c.adam_beta2})
                      .eps(c.adam_eps)
                      .weight_decay(c.weight_decay));
    }
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(c.learning_rate).momentum(c.momentum).weight_decay(c.weight_decay));
  };
}

std::function<void(torch::optim::Optimizer&, int)> MakeStepSchedule(const TrainConfig& c) {
  if (c.weight_decay_schedule.empty() && c.warmup_steps == 0 && !c.decay_learning_rate) return nullptr;
  if (c.decay_learning_rate && c.total_steps <= 0) {
    throw std::invalid_argument("a decaying learning rate needs the run's total steps");
  }
  return [c](torch::optim::Optimizer& optimizer, int step) {
    double wd = c.weight_decay;
    for (const auto& [from, decay] : c.weight_decay_schedule) {
      if (step >= from) wd = decay;
    }
    double lr = c.learning_rate;
    if (c.warmup_steps > 0 && step <= c.warmup_steps) {
      lr *= static_cast<double>(step) / c.warmup_steps;
    } else if (c.decay_learning_rate) {
      lr *= std::max(0.0, static_cast<double>(c.total_steps - step + 1) /
                              std::max(1, c.total_steps - c.warmup_steps));
    }
    for (auto& group : optimizer.param_groups()) {
      if (auto* adamw = dynamic_cast<torch::optim::AdamWOptions*>(&group.options())) {
        adamw->lr(lr).weight_decay(wd);
      } else {
        static_cast<torch::optim::SGDOptions&>(group.options()).lr(lr).weight_decay(wd);
      }
    }
  };
}

}  // namespace tspipe
