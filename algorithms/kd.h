// Soft-target knowledge distillation (Hinton et al. 2015), as benchmarked by
// TSPipe: a frozen, pre-trained teacher and a smaller student,
//   loss = CE(s, y) + lambda * T^2 * KL(softmax(t/T) || softmax(s/T)),
// KL averaged over the samples of the batch.
//
// T^2 scaling: the soft term's gradients shrink as 1/T^2 (Hinton et al.,
// section 2), so without it lambda would have to be re-tuned for every T.
// `scale_by_t_squared = false` gives the unscaled form
// CE + lambda * KL_T for comparison with code that omits it.
#ifndef TSPIPE_ALGORITHMS_KD_H_
#define TSPIPE_ALGORITHMS_KD_H_

#include "core/algorithm.h"

namespace tspipe {

struct KdOptions {
  double temperature = 4.0;
  double lambda = 0.1;
  bool scale_by_t_squared = true;
};

class KnowledgeDistillation : public Algorithm {
 public:
  KnowledgeDistillation() = default;
  explicit KnowledgeDistillation(const KdOptions& options);

  std::string name() const override { return "kd"; }
  Workload workload() const override;
  // (*student)[0]: student logits; (*teacher)[0]: teacher logits;
  // (*targets)[0]: labels.
  torch::Tensor Loss(const LossInputs& inputs) const override;

  const KdOptions& options() const { return options_; }

 private:
  KdOptions options_;
};

// The loss itself, for tests and for training loops outside the executor.
torch::Tensor KdLoss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                     const torch::Tensor& labels, const KdOptions& options);

}  // namespace tspipe

#endif  // TSPIPE_ALGORITHMS_KD_H_
