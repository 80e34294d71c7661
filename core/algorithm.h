// The algorithm interface: what a teacher-student method tells the schedule
// core. Schedulers and executors only see this, so a new method is a new
// module, not a fork of the executor.
#ifndef TSPIPE_CORE_ALGORITHM_H_
#define TSPIPE_CORE_ALGORITHM_H_

#include <torch/torch.h>

#include <string>

#include "core/microbatch.h"
#include "core/partition.h"
#include "core/registry.h"
#include "core/schedule.h"
#include "core/update_policy.h"

namespace tspipe {

struct LossInputs {
  int stage = 0;
  // Whether `stage` is the model's last (blockwise losses differ there).
  bool last_stage = true;
  // Student outputs of `stage`: the whole mini-batch gathered (whole-batch
  // losses) or one micro-batch.
  const Activation* student = nullptr;
  // Teacher outputs of the same samples, or nullptr without a teacher.
  const Activation* teacher = nullptr;
  // The batch's targets for the same samples.
  const Activation* targets = nullptr;
  // 1-based index of the mini-batch (optimizer step) being trained.
  int step = 1;
  // Samples in `student` (dimension 0 of its tensors).
  int64_t samples = 0;
};

// One term of a loss: its mean over the `units` it averages over in the
// samples given (samples for a per-sample mean, masked tokens for a masked
// language model). The executor weights it by units / (the term's units in
// the whole mini-batch), so the trained loss is every term's mean over the
// mini-batch however the samples are split into micro-batches and replicas.
// A term with 0 units contributes nothing (its mean may be NaN).
struct LossTerm {
  torch::Tensor mean;
  double units = 0;
};

class Algorithm {
 public:
  virtual ~Algorithm() = default;
  virtual std::string name() const = 0;
  // What the schedule must provide, the teacher included (the one
  // statement of whether there is one and how it changes:
  // Workload::teacher). Every flag defaults to the least demanding choice.
  virtual Workload workload() const = 0;
  // A scalar loss averaged over the samples in `inputs`: for losses that
  // are per-sample means. Runs on the loss stage's thread and device,
  // concurrently on several rank threads (replicas, loss stages): const,
  // and must not keep references to the inputs. Losses that average over
  // something else override LossTerms and LossUnits instead; the default
  // refuses.
  virtual torch::Tensor Loss(const LossInputs& inputs) const;
  // The loss as terms (see LossTerm), summed with the weights above. The
  // default is {Loss(inputs), inputs.samples}: one per-sample mean.
  virtual std::vector<LossTerm> LossTerms(const LossInputs& inputs) const;
  // Units of each term of LossTerms in one micro-batch (its size() samples
  // by default), known before any forward runs: what the executor divides
  // by. `stage` as in LossInputs. Must match what LossTerms counts (the
  // executor checks). Runs concurrently like Loss.
  virtual std::vector<double> LossUnits(const Batch& microbatch, int stage) const;
  // Updates teacher stage `stage` from the student stage after optimizer
  // step `step` (TeacherUpdate action). Only called when
  // workload().teacher_updates(); the default refuses.
  virtual void UpdateTeacher(int stage, StageImpl& student, StageImpl& teacher, int step);
  // Whether the teacher runs in train mode (batch statistics in batch norm),
  // as momentum targets do in BYOL and MoCo; a pre-trained teacher runs in
  // eval mode. Teachers never get gradients either way.
  virtual bool TeacherInTrainMode() const { return false; }
  // Peer teachers (TeacherKind::kPeers, Workload::independent_replicas):
  // whether the TeacherUpdate after optimizer step `step` exchanges the
  // models' parameters (refreshing every stale copy). Called on every rank
  // with the same answer expected; the default never exchanges.
  virtual bool ExchangesAt(int step) const { return false; }
  // Total optimizer steps of the run, for schedules over training (BYOL's
  // momentum ramp). Called before training; the default ignores it.
  virtual void SetTrainingLength(int total_steps) {}
};

}  // namespace tspipe

#endif  // TSPIPE_CORE_ALGORITHM_H_
