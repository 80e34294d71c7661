#include "algorithms/supervised.h"

namespace tspipe {

Workload SupervisedAlgorithm::workload() const {
  Workload w;
  w.full_batch_loss = false;  // Per-sample loss: any micro-batching is exact.
  return w;
}

torch::Tensor SupervisedAlgorithm::Loss(const LossInputs& in) {
  TORCH_CHECK(in.student && !in.student->empty(), "supervised loss needs student logits");
  TORCH_CHECK(in.targets && !in.targets->empty(), "supervised loss needs labels");
  return torch::nn::functional::cross_entropy((*in.student)[0], (*in.targets)[0]);
}

TSPIPE_REGISTER_ALGORITHM("supervised", "cross-entropy on labels, no teacher",
                          SupervisedAlgorithm);

}  // namespace tspipe
