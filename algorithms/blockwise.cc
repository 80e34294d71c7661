#include "algorithms/blockwise.h"

namespace tspipe {

Workload BlockwiseDistillation::workload() const {
  Workload w;
  w.has_teacher = true;
  w.local_losses = true;
  w.blockwise = true;
  w.full_batch_loss = false;  // Per-sample terms: exact under any micro-batching.
  return w;
}

torch::Tensor BlockMseLoss(const torch::Tensor& student, const torch::Tensor& teacher) {
  TORCH_CHECK(student.sizes() == teacher.sizes(), "a student block's output ", student.sizes(),
              " must have the teacher block's shape ", teacher.sizes());
  return torch::mse_loss(student, teacher);
}

torch::Tensor SoftCrossEntropy(const torch::Tensor& s, const torch::Tensor& t) {
  namespace F = torch::nn::functional;
  return -(F::softmax(t, F::SoftmaxFuncOptions(1)) * F::log_softmax(s, F::LogSoftmaxFuncOptions(1)))
              .sum(1)
              .mean();
}

torch::Tensor BlockwiseDistillation::Loss(const LossInputs& in) {
  TORCH_CHECK(in.student && !in.student->empty(), "blockwise distillation needs the student output");
  TORCH_CHECK(in.teacher && !in.teacher->empty(), "blockwise distillation needs the teacher output");
  const torch::Tensor& s = (*in.student)[0];
  const torch::Tensor t = (*in.teacher)[0].detach();
  return in.last_stage ? SoftCrossEntropy(s, t) : BlockMseLoss(s, t);
}

TSPIPE_REGISTER_ALGORITHM("blockwise",
                          "blockwise distillation (DNA / Pipe-BD): student block i learns "
                          "teacher block i from the teacher's input (MSE; soft CE on the last)",
                          BlockwiseDistillation);

}  // namespace tspipe
