// The executor's loss handler (L): gathers the action's micro-batches, asks
// the algorithm for its terms, weights them (backends/loss_weights.h) and
// hands each micro-batch the gradient of the weighted sum w.r.t. its
// outputs.
#include "backends/executor_impl.h"
#include "backends/loss_weights.h"

namespace tspipe {

void Executor::Impl::Loss(int rank, const Action& a) {
  StageSlot& slot = Slot(rank, a.stage);
  std::vector<int> mbs = a.microbatch == kAllMicrobatches ? schedule_.MicrobatchesOf(a.stage, rank)
                                                          : std::vector<int>{a.microbatch};
  std::vector<Activation> leaves, targets, teacher;
  int64_t samples = 0;
  for (int k : mbs) {
    TORCH_CHECK(!slot.outputs[k].empty(), "no student output of micro-batch ", k);
    leaves.push_back(Leaf(slot.outputs[k]));
    targets.push_back(Current(rank)[k].targets);
    samples += Current(rank)[k].size();
    if (schedule_.workload.has_teacher()) {
      auto it = slot.teacher_outputs.find(current_[rank]);
      TORCH_CHECK(it != slot.teacher_outputs.end() && k < static_cast<int>(it->second.size()) &&
                      !it->second[k].empty(),
                  "no teacher output of micro-batch ", k, " on stage ", a.stage);
      teacher.push_back(it->second[k]);
    }
  }
  Activation student_all = Concat(leaves);
  Activation targets_all = ToDevice(Concat(targets), Dev(rank), /*non_blocking=*/true);
  Activation teacher_all;
  if (!teacher.empty()) teacher_all = Concat(teacher);
  LossInputs in;
  in.stage = a.stage;
  in.last_stage = a.stage == schedule_.num_stages - 1;
  in.student = &student_all;
  in.teacher = teacher.empty() ? nullptr : &teacher_all;
  in.targets = &targets_all;
  in.step = static_cast<int>(current_[rank]) + 1;
  in.samples = samples;
  const std::vector<LossTerm> terms = algorithm_->LossTerms(in);
  for (int k : mbs) ReleaseTeacher(slot, current_[rank], k);
  // The mean is over the whole mini-batch, or a separate model's
  // (independent replicas) own share of it.
  std::vector<int> mini_batch;
  if (schedule_.workload.independent_replicas) {
    mini_batch = schedule_.MicrobatchesOf(a.stage, rank);
  } else {
    for (int k = 0; k < schedule_.num_microbatches; ++k) mini_batch.push_back(k);
  }
  std::vector<std::vector<double>> mine, all;
  for (int k : mbs) mine.push_back(algorithm_->LossUnits(Current(rank)[k], a.stage));
  for (int k : mini_batch) all.push_back(algorithm_->LossUnits(Current(rank)[k], a.stage));
  std::vector<double> reported;
  for (const LossTerm& term : terms) {
    TORCH_CHECK(term.mean.defined() && term.mean.numel() == 1, "algorithm '", algorithm_->name(),
                "' returned a loss term that is not a scalar");
    reported.push_back(term.units);
  }
  const std::vector<double> weights = LossTermWeights(algorithm_->name(), reported, mine, all);
  torch::Tensor scaled;
  for (size_t t = 0; t < terms.size(); ++t) {
    if (terms[t].units <= 0) continue;  // Nothing to average here.
    torch::Tensor part = terms[t].mean.reshape({}) * weights[t];
    scaled = scaled.defined() ? scaled + part : part;
  }
  torch::Tensor& sum = losses_[rank][current_[rank] - steps_done_];
  if (scaled.defined()) {
    // Summed on the device and read after the run: an .item() here would
    // make the rank wait for its GPU at every loss.
    sum = sum.defined() ? sum + scaled.detach().to(torch::kFloat64)
                        : scaled.detach().to(torch::kFloat64);
  }
  if (!scaled.defined() || !scaled.requires_grad()) {
    // No term had units in these samples (or none depends on the student):
    // no gradient flows from them.
    for (int k : mbs) {
      Activation& og = slot.output_grads[k];
      og.clear();
      for (const torch::Tensor& t : slot.outputs[k]) {
        og.push_back(t.defined() && t.requires_grad() ? torch::zeros_like(t) : torch::Tensor());
      }
    }
    return;
  }
  std::vector<torch::Tensor> wrt;
  for (const Activation& leaf : leaves) {
    for (const torch::Tensor& t : leaf) {
      if (t.defined() && t.requires_grad()) wrt.push_back(t);
    }
  }
  std::vector<torch::Tensor> grads =
      torch::autograd::grad({scaled}, wrt, /*grad_outputs=*/{}, /*retain_graph=*/false,
                            /*create_graph=*/false, /*allow_unused=*/true);
  size_t g = 0;
  for (size_t j = 0; j < mbs.size(); ++j) {
    Activation& og = slot.output_grads[mbs[j]];
    og.clear();
    for (const torch::Tensor& t : leaves[j]) {
      if (t.defined() && t.requires_grad()) {
        torch::Tensor grad = grads[g++];
        og.push_back(grad.defined() ? grad : torch::zeros_like(t));
      } else {
        og.push_back(torch::Tensor());
      }
    }
  }
}

}  // namespace tspipe
