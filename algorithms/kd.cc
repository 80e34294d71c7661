#include "algorithms/kd.h"

#include <stdexcept>

namespace tspipe {

KnowledgeDistillation::KnowledgeDistillation(const KdOptions& options) : options_(options) {
  if (options.temperature <= 0) {
    throw std::invalid_argument("KD temperature must be positive, got " +
                                std::to_string(options.temperature));
  }
  if (options.lambda < 0) {
    throw std::invalid_argument("KD lambda must not be negative, got " +
                                std::to_string(options.lambda));
  }
}

Workload KnowledgeDistillation::workload() const {
  Workload w;
  w.has_teacher = true;
  w.full_batch_loss = false;  // Per-sample terms: exact under any micro-batching.
  return w;
}

torch::Tensor KdLoss(const torch::Tensor& s, const torch::Tensor& t, const torch::Tensor& y,
                     const KdOptions& o) {
  namespace F = torch::nn::functional;
  const double temp = o.temperature;
  torch::Tensor ce = F::cross_entropy(s, y);
  torch::Tensor kl = F::kl_div(F::log_softmax(s / temp, F::LogSoftmaxFuncOptions(1)),
                               F::softmax(t / temp, F::SoftmaxFuncOptions(1)),
                               F::KLDivFuncOptions().reduction(torch::kBatchMean));
  const double scale = o.scale_by_t_squared ? temp * temp : 1.0;
  return ce + o.lambda * scale * kl;
}

torch::Tensor KnowledgeDistillation::Loss(const LossInputs& in) {
  TORCH_CHECK(in.student && !in.student->empty(), "KD needs student logits");
  TORCH_CHECK(in.teacher && !in.teacher->empty(), "KD needs teacher logits");
  TORCH_CHECK(in.targets && !in.targets->empty(), "KD needs labels");
  return KdLoss((*in.student)[0], (*in.teacher)[0].detach(), (*in.targets)[0], options_);
}

TSPIPE_REGISTER_ALGORITHM("kd",
                          "soft-target knowledge distillation from a frozen teacher "
                          "(CE + lambda T^2 KL_T; T=4, lambda=0.1)",
                          KnowledgeDistillation);

}  // namespace tspipe
