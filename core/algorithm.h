// The algorithm interface: what a teacher-student method tells the schedule
// core. Schedulers and executors only see this, so a new method is a new
// module, not a fork of the executor.
#ifndef TSPIPE_CORE_ALGORITHM_H_
#define TSPIPE_CORE_ALGORITHM_H_

#include <torch/torch.h>

#include <string>

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
};

class Algorithm {
 public:
  virtual ~Algorithm() = default;
  virtual std::string name() const = 0;
  virtual Workload workload() const = 0;
  virtual TeacherKind teacher_kind() const = 0;
  // A scalar loss averaged over the samples in `inputs`. Runs on the loss
  // stage's thread and device; must not keep references to the inputs.
  virtual torch::Tensor Loss(const LossInputs& inputs) = 0;
  // Updates teacher stage `stage` from the student stage after optimizer
  // step `step` (TeacherUpdate action). Only called when
  // workload().teacher_updates; the default refuses.
  virtual void UpdateTeacher(int stage, StageImpl& student, StageImpl& teacher, int step);
  // Whether the teacher runs in train mode (batch statistics in batch norm),
  // as momentum targets do in BYOL and MoCo; a pre-trained teacher runs in
  // eval mode. Teachers never get gradients either way.
  virtual bool TeacherInTrainMode() const { return false; }
  // Total optimizer steps of the run, for schedules over training (BYOL's
  // momentum ramp). Called before training; the default ignores it.
  virtual void SetTrainingLength(int total_steps) {}
};

using AlgorithmRegistry = Registry<Algorithm>;

}  // namespace tspipe

#define TSPIPE_REGISTER_ALGORITHM(name, help, type)                         \
  static const bool tspipe_algorithm_registered_##type =                    \
      ::tspipe::AlgorithmRegistry::Global().Register(                       \
          name, help, [] { return std::unique_ptr<::tspipe::Algorithm>(new type()); })

#endif  // TSPIPE_CORE_ALGORITHM_H_
