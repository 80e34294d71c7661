#include "algorithms/momentum.h"

#include <cmath>
#include <stdexcept>

namespace tspipe {

double CosineMomentum(double base, int step, int total_steps) {
  if (total_steps <= 0) return base;
  const double progress = std::min(1.0, static_cast<double>(step) / total_steps);
  return 1.0 - (1.0 - base) * (std::cos(M_PI * progress) + 1.0) / 2.0;
}

void EmaUpdate(torch::nn::Module& online, torch::nn::Module& target, double momentum) {
  torch::NoGradGuard no_grad;
  auto source = online.named_parameters();
  for (auto& p : target.named_parameters()) {
    const torch::Tensor* s = source.find(p.key());
    if (s == nullptr || !s->sizes().equals(p.value().sizes())) {
      throw std::invalid_argument("target parameter " + p.key() +
                                  " has no online parameter of the same name and shape");
    }
    p.value().mul_(momentum).add_(s->to(p.value().device()), 1.0 - momentum);
  }
}

torch::nn::Sequential MakeMomentumTarget(const torch::nn::Sequential& online) {
  torch::nn::Sequential target;
  size_t i = 0;
  for (const torch::nn::AnyModule& child : *online) {
    if (++i == online->size()) break;  // The predictor stays online-only.
    target->push_back(child.clone());
  }
  return target;
}

void MomentumTeacherAlgorithm::UpdateTeacher(int stage, StageImpl& student, StageImpl& teacher,
                                             int step) {
  EmaUpdate(student, teacher, Momentum(step));
}

}  // namespace tspipe
