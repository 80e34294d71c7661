#include "algorithms/byol.h"

#include <cmath>
#include <stdexcept>

namespace tspipe {

double CosineMomentum(double base, int step, int total_steps) {
  if (total_steps <= 0) return base;
  const double progress = std::min(1.0, static_cast<double>(step) / total_steps);
  return 1.0 - (1.0 - base) * (std::cos(M_PI * progress) + 1.0) / 2.0;
}

double ByolMomentum(const ByolOptions& o, int step) {
  return CosineMomentum(o.base_momentum, step, o.total_steps);
}

torch::Tensor ByolLoss(const torch::Tensor& p1, const torch::Tensor& p2, const torch::Tensor& z1,
                       const torch::Tensor& z2) {
  namespace F = torch::nn::functional;
  auto term = [](const torch::Tensor& p, const torch::Tensor& z) {
    // The target is a fixed regression target: no gradient through it.
    return (2.0 - 2.0 * F::cosine_similarity(p, z.detach(),
                                             F::CosineSimilarityFuncOptions().dim(1)))
        .mean();
  };
  return term(p1, z2) + term(p2, z1);
}

Workload Byol::workload() const {
  Workload w;
  w.has_teacher = true;
  w.teacher_updates = true;
  // A mean of per-sample terms: splitting the batch (data parallel) is exact.
  w.full_batch_loss = false;
  return w;
}

torch::Tensor Byol::Loss(const LossInputs& in) {
  TORCH_CHECK(in.student != nullptr && in.student->size() == 2,
              "byol needs two views from the online network");
  TORCH_CHECK(in.teacher != nullptr && in.teacher->size() == 2,
              "byol needs two views from the target network");
  return ByolLoss((*in.student)[0], (*in.student)[1], (*in.teacher)[0], (*in.teacher)[1]);
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

void Byol::UpdateTeacher(int stage, StageImpl& student, StageImpl& teacher, int step) {
  EmaUpdate(student, teacher, ByolMomentum(options_, step));
}

TSPIPE_REGISTER_ALGORITHM("byol",
                          "BYOL: online network predicts an EMA target's projection of "
                          "another view",
                          Byol);

}  // namespace tspipe
