// Momentum teachers, shared by BYOL and MoCo v3: the target network is an
// exponential moving average of the online network,
//   target_k = m_k * target_{k-1} + (1 - m_k) * online_k,
// with m_k ramped from a base value towards 1 on a cosine. Which target
// version a batch sees is the update policy's business (core/update_policy.h);
// the recursion is the same.
#ifndef TSPIPE_ALGORITHMS_MOMENTUM_H_
#define TSPIPE_ALGORITHMS_MOMENTUM_H_

#include <torch/torch.h>

#include "core/algorithm.h"

namespace tspipe {

// 1 - (1 - base) * (cos(pi * step / total_steps) + 1) / 2, clamped at
// step = total_steps; `base` when total_steps <= 0.
double CosineMomentum(double base, int step, int total_steps);

// target <- m * target + (1 - m) * online for every parameter of `target`,
// matched by name in `online`. Throws std::invalid_argument naming a target
// parameter that online lacks or whose shape differs. Buffers are not
// averaged: the target keeps the batch-norm statistics of its own forwards.
void EmaUpdate(torch::nn::Module& online, torch::nn::Module& target, double momentum);

// The target network: a deep copy of the online network's blocks without
// the last one, the predictor (so it starts equal, as both BYOL and MoCo v3
// initialise it), layer for layer.
torch::nn::Sequential MakeMomentumTarget(const torch::nn::Sequential& online);

// An algorithm whose teacher is such a target: the EMA teacher update (the
// online and target stages match layer for layer; the online stage may hold
// extra blocks, the predictor), the target in train mode (batch statistics,
// as both papers run it).
class MomentumTeacherAlgorithm : public Algorithm {
 public:
  bool TeacherInTrainMode() const override { return true; }
  void UpdateTeacher(int stage, StageImpl& student, StageImpl& teacher, int step) override;
  // m_k after optimizer step `step`.
  virtual double Momentum(int step) const = 0;
};

}  // namespace tspipe

#endif  // TSPIPE_ALGORITHMS_MOMENTUM_H_
