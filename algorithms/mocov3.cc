#include "algorithms/mocov3.h"

#include "algorithms/byol.h"

namespace tspipe {

torch::Tensor MocoV3Loss(const torch::Tensor& q1, const torch::Tensor& q2,
                         const torch::Tensor& k1, const torch::Tensor& k2, double temperature) {
  namespace F = torch::nn::functional;
  auto ctr = [temperature](const torch::Tensor& q, const torch::Tensor& k) {
    torch::Tensor qn = F::normalize(q, F::NormalizeFuncOptions().dim(1));
    torch::Tensor kn = F::normalize(k.detach(), F::NormalizeFuncOptions().dim(1));
    torch::Tensor logits = torch::matmul(qn, kn.t()) / temperature;
    torch::Tensor labels =
        torch::arange(q.size(0), torch::TensorOptions().dtype(torch::kInt64).device(q.device()));
    return F::cross_entropy(logits, labels) * (2.0 * temperature);
  };
  return ctr(q1, k2) + ctr(q2, k1);
}

Workload MocoV3::workload() const {
  Workload w;
  w.has_teacher = true;
  w.teacher_updates = true;
  w.full_batch_loss = true;  // Negatives span the whole mini-batch.
  return w;
}

torch::Tensor MocoV3::Loss(const LossInputs& in) {
  TORCH_CHECK(in.student != nullptr && in.student->size() == 2,
              "mocov3 needs two views from the query encoder");
  TORCH_CHECK(in.teacher != nullptr && in.teacher->size() == 2,
              "mocov3 needs two views from the momentum encoder");
  return MocoV3Loss((*in.student)[0], (*in.student)[1], (*in.teacher)[0], (*in.teacher)[1],
                    options_.temperature);
}

void MocoV3::UpdateTeacher(int stage, StageImpl& student, StageImpl& teacher, int step) {
  EmaUpdate(student, teacher, CosineMomentum(options_.base_momentum, step, options_.total_steps));
}

TSPIPE_REGISTER_ALGORITHM("mocov3",
                          "MoCo v3: ViT query encoder against an EMA key encoder, InfoNCE "
                          "over the whole mini-batch",
                          MocoV3);

}  // namespace tspipe
