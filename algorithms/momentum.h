// Momentum teachers, shared by BYOL and MoCo v3: the target network is an
// exponential moving average of the online network,
//   target_k = m_k * target_{k-1} + (1 - m_k) * online_k,
// with m_k ramped from a base value towards 1 on a cosine. Which target
// version a batch sees is the update policy's business (core/update_policy.h);
// the recursion is the same.
#ifndef TSPIPE_ALGORITHMS_MOMENTUM_H_
#define TSPIPE_ALGORITHMS_MOMENTUM_H_

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "core/algorithm.h"
#include "engine/recipe.h"
#include "models/vision_models.h"

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

// Online and target networks over a named encoder (`encoder` without its
// classifier: the representation). The online module holds the encoder as
// "backbone" under PyTorch's names (backbone.layer1.0.conv1.weight, as
// solo-learn and lightly name it) and each head under its name
// ("projector", "predictor"); its blocks are the encoder's, then one per
// head, each applied to every view. The target (the teacher) is a copy
// without the last head, equal at the start, with the same names. Leaves
// the global random generator as it would be after building the online
// network alone.
ModelSet MakeMomentumPair(const VisionModelOptions& encoder,
                          const std::vector<std::pair<std::string, torch::nn::AnyModule>>& heads);
// Copies the online network's state into its target (MakeMomentumPair's
// layout), after a student checkpoint was loaded.
void ResetMomentumTarget(ModelSet& models);

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
