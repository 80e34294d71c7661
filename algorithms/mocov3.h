// MoCo v3 (Chen, Xie and He 2021): a query encoder (ViT, projector,
// predictor) and a momentum key encoder (ViT, projector) kept as its EMA;
// InfoNCE between each view's queries and the other view's keys, symmetrised:
//   ctr(q, k) = CE(normalize(q) normalize(k)^T / tau, arange(N)) * 2 tau,
//   loss = ctr(q1, k2) + ctr(q2, k1).
// The negatives of a query are the keys of every other sample of the whole
// mini-batch (the executor gathers all micro-batches before the loss; data
// parallelism, which would split them, is refused via full_batch_loss).
// Momentum m ramps from base (0.99) to 1 on a cosine, as BYOL's.
#ifndef TSPIPE_ALGORITHMS_MOCOV3_H_
#define TSPIPE_ALGORITHMS_MOCOV3_H_

#include "algorithms/momentum.h"
#include "core/algorithm.h"

namespace tspipe {

struct MocoV3Options {
  double temperature = 0.2;
  double base_momentum = 0.99;
  int total_steps = 0;  // 0 keeps m at base_momentum.
};

// ctr(q1, k2) + ctr(q2, k1) above; keys get no gradient.
torch::Tensor MocoV3Loss(const torch::Tensor& q1, const torch::Tensor& q2,
                         const torch::Tensor& k1, const torch::Tensor& k2, double temperature);

class MocoV3 : public MomentumTeacherAlgorithm {
 public:
  MocoV3() = default;
  explicit MocoV3(const MocoV3Options& options) : options_(options) {}

  std::string name() const override { return "mocov3"; }
  Workload workload() const override;
  // (*student) = {q1, q2}, (*teacher) = {k1, k2}.
  torch::Tensor Loss(const LossInputs& inputs) const override;
  double Momentum(int step) const override {
    return CosineMomentum(options_.base_momentum, step, options_.total_steps);
  }
  void SetTrainingLength(int total_steps) override { options_.total_steps = total_steps; }

  const MocoV3Options& options() const { return options_; }

 private:
  MocoV3Options options_;
};

}  // namespace tspipe

#endif  // TSPIPE_ALGORITHMS_MOCOV3_H_
