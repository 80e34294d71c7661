// BYOL (Grill et al. 2020): an online network (encoder, projector, predictor)
// learns to predict a target network's projection of another view of the
// same image; the target (encoder, projector) is an exponential moving
// average of the online network:
//   target_k = m_k * target_{k-1} + (1 - m_k) * online_k,
//   m_k = 1 - (1 - m_base) * (cos(pi * k / K) + 1) / 2,
// k = optimizer steps taken, K = the run's total steps (m ramps from m_base
// towards 1). Loss, symmetrised over the two views:
//   mean(2 - 2 cos(p1, z2)) + mean(2 - 2 cos(p2, z1)).
// Which target version a batch sees is the update policy's business (sync:
// b-1; TSPipe: b-2); the recursion is the same.
#ifndef TSPIPE_ALGORITHMS_BYOL_H_
#define TSPIPE_ALGORITHMS_BYOL_H_

#include "algorithms/momentum.h"
#include "core/algorithm.h"

namespace tspipe {

struct ByolOptions {
  double base_momentum = 0.996;
  // K above; 0 keeps m at base_momentum. Set by SetTrainingLength.
  int total_steps = 0;
};

// m_k above.
double ByolMomentum(const ByolOptions& options, int step);

// The symmetrised loss for predictions p1, p2 (online, views 1 and 2) and
// target projections z1, z2, averaged over the samples.
torch::Tensor ByolLoss(const torch::Tensor& p1, const torch::Tensor& p2, const torch::Tensor& z1,
                       const torch::Tensor& z2);

class Byol : public MomentumTeacherAlgorithm {
 public:
  Byol() = default;
  explicit Byol(const ByolOptions& options) : options_(options) {}

  std::string name() const override { return "byol"; }
  Workload workload() const override;
  // (*student) = {p1, p2}, (*teacher) = {z1, z2}; targets are unused.
  torch::Tensor Loss(const LossInputs& inputs) const override;
  double Momentum(int step) const override { return ByolMomentum(options_, step); }
  void SetTrainingLength(int total_steps) override { options_.total_steps = total_steps; }

  const ByolOptions& options() const { return options_; }

 private:
  ByolOptions options_;
};

}  // namespace tspipe

#endif  // TSPIPE_ALGORITHMS_BYOL_H_
