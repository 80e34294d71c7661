// What the executor holds for one stage on one rank: its modules, optimizer
// and the per-micro-batch buffers its actions fill and consume. Internal to
// backends/executor.cc and backends/executor_state.cc (checkpoints).
#ifndef TSPIPE_BACKENDS_STAGE_SLOT_H_
#define TSPIPE_BACKENDS_STAGE_SLOT_H_

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backends/split_backward.h"
#include "backends/transport.h"
#include "core/microbatch.h"
#include "core/partition.h"

namespace tspipe {

struct StageSlot {
  Stage student;
  Stage teacher;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  // Per micro-batch; cleared as soon as they are consumed.
  std::vector<Activation> inputs;        // Leaves fed to the student stage.
  std::vector<Activation> outputs;       // Student outputs, graph attached.
  std::vector<Activation> output_grads;  // d loss / d outputs.
  std::vector<Activation> input_grads;   // d loss / d inputs, awaiting SG.
  // Split backwards between their I and their W (graph kept alive).
  std::vector<std::unique_ptr<SplitBackward>> split;
  // Gradient bucket of an all-reduce in flight, and its handle.
  std::vector<torch::Tensor> reduce_bucket;
  std::unique_ptr<PendingReduce> pending_reduce;
  // By absolute mini-batch index, then micro-batch. Teacher outputs computed
  // one batch ahead wait here for the next iteration's loss.
  std::map<int64_t, std::vector<Activation>> teacher_inputs;
  std::map<int64_t, std::vector<Activation>> teacher_outputs;
  // Blockwise: readers each teacher output still has (see ReleaseTeacher).
  std::map<int64_t, std::vector<int>> teacher_readers;

  void Reset(int m) {
    pending_reduce.reset();
    reduce_bucket.clear();
    inputs.assign(m, {});
    outputs.assign(m, {});
    output_grads.assign(m, {});
    input_grads.assign(m, {});
    split.clear();
    split.resize(m);
    teacher_inputs.clear();
  }

  // Drops teacher data of mini-batches before `batch`.
  void ForgetBefore(int64_t batch) {
    teacher_outputs.erase(teacher_outputs.begin(), teacher_outputs.lower_bound(batch));
    teacher_inputs.erase(teacher_inputs.begin(), teacher_inputs.lower_bound(batch));
    teacher_readers.erase(teacher_readers.begin(), teacher_readers.lower_bound(batch));
  }
};

// The slot's state between two runs as bytes (a torch archive): student
// parameters and buffers, the teacher's when `with_teacher` (a teacher that
// changes), the optimizer state, and teacher data of mini-batches from
// `from_batch` on (computed ahead for the next run).
std::string SaveSlot(const StageSlot& slot, int64_t from_batch, bool with_teacher);
// Restores what SaveSlot wrote into a slot built the same way, onto
// `device`. Throws std::invalid_argument naming `what` (e.g. "rank 1 stage
// 2") and the first tensor that does not fit.
void LoadSlot(const std::string& bytes, const torch::Device& device, bool with_teacher,
              const std::string& what, StageSlot* slot);

}  // namespace tspipe

#endif  // TSPIPE_BACKENDS_STAGE_SLOT_H_
