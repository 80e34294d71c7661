#include "algorithms/momentum.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace tspipe {

double CosineMomentum(double base, int step, int total_steps) {
  if (total_steps <= 0) return base;
  const double progress = std::min(1.0, static_cast<double>(step) / total_steps);
  return 1.0 - (1.0 - base) * (std::cos(M_PI * progress) + 1.0) / 2.0;
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

torch::nn::Sequential MakeMomentumTarget(const torch::nn::Sequential& online) {
  torch::nn::Sequential target;
  size_t i = 0;
  for (const torch::nn::AnyModule& child : *online) {
    if (++i == online->size()) break;  // The predictor stays online-only.
    target->push_back(child.clone());
  }
  return target;
}

ModelSet MakeMomentumPair(const VisionModelOptions& options,
                          const std::vector<std::pair<std::string, torch::nn::AnyModule>>& heads) {
  namespace nn = torch::nn;
  VisionModelOptions o = options;
  o.classifier = false;
  VisionModel online = MakeVisionModel(o);
  // The target draws its own initial values, then takes the online ones;
  // the generator is put back, so the run draws as if it did not exist.
  VisionModel target = [&o] {
    RestoreGeneratorOnExit restore;
    return MakeVisionModel(o);
  }();
  CopyState(*online.module, *target.module);

  auto online_owner = std::make_shared<nn::Module>("Online");
  auto target_owner = std::make_shared<nn::Module>("Target");
  online_owner->register_module("backbone", online.module);
  target_owner->register_module("backbone", target.module);
  nn::Sequential online_layers = online.layers, target_layers = target.layers;
  for (size_t h = 0; h < heads.size(); ++h) {
    online_owner->register_module(heads[h].first, heads[h].second.ptr());
    online_layers->push_back(heads[h].second);
    if (h + 1 < heads.size()) {  // The last head (the predictor) stays online-only.
      nn::AnyModule copy = heads[h].second.clone();
      target_owner->register_module(heads[h].first, copy.ptr());
      target_layers->push_back(copy);
    }
  }
  ModelSet m;
  m.student = online_owner;
  m.student_blocks = MultiViewBlocksFromSequential(online_layers);
  m.teacher = target_owner;
  m.teacher_blocks = MultiViewBlocksFromSequential(target_layers);
  m.student_shape = online.description;
  m.teacher_shape = "its target";
  m.adapt_student_file = [o](NamedTensors& tensors) {
    // A file of the encoder alone (a pretrained backbone) is not this
    // network's; only the positions adapt, under the backbone's prefix.
    NamedTensors backbone;
    for (auto& [name, t] : tensors) {
      if (name.rfind("backbone.", 0) == 0) backbone[name.substr(9)] = t;
    }
    AdaptVisionTensors(o, backbone);
    for (auto& [name, t] : backbone) tensors["backbone." + name] = t;
  };
  return m;
}

void ResetMomentumTarget(ModelSet& m) {
  auto online = m.student->named_children(), target = m.teacher->named_children();
  for (const auto& child : target) CopyState(*online[child.key()], *child.value());
}

void MomentumTeacherAlgorithm::UpdateTeacher(int stage, StageImpl& student, StageImpl& teacher,
                                             int step) {
  EmaUpdate(student, teacher, Momentum(step));
}

}  // namespace tspipe
