// The executor's internals, shared by the files that hold its handler
// families (backends/executor*.cc): setup and the run loop in executor.cc,
// compute (F, T, B, I, W) in executor_compute.cc, the loss (L) in
// executor_loss.cc, communication, collectives and the optimizer (SA..RG,
// AR, TG, GN, O, U) in executor_comm.cc, checkpoints in executor_state.cc.
// Not part of the executor's interface: include backends/executor.h.
#ifndef TSPIPE_BACKENDS_EXECUTOR_IMPL_H_
#define TSPIPE_BACKENDS_EXECUTOR_IMPL_H_

#include <torch/torch.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backends/action_clock.h"
#include "backends/executor.h"
#include "backends/grad_sync.h"
#include "backends/memory_meter.h"
#include "backends/stage_slot.h"
#include "backends/transport.h"
#include "core/message.h"

namespace tspipe {

// A detached copy that autograd tracks from here: stage boundaries cut the
// graph so that each stage's backward is a separate action.
Activation Leaf(const Activation& a);
// A copy without graph (what travels to another rank).
Activation Detached(const Activation& a);

class Executor::Impl {
 public:
  Impl(Schedule schedule, std::vector<Stage> student, std::vector<Stage> teacher,
       Algorithm* algorithm, ExecutorOptions options);

  std::vector<StepResult> Run(const std::vector<Batch>& batches, const Batch* after);

  void set_record_trace(bool on) { record_ = on; }
  std::vector<TraceEvent> TakeTrace();
  std::map<std::string, int64_t> TakeMemoryPeaks();
  const Schedule& schedule() const { return schedule_; }
  const std::string& update_policy() const { return policy_; }
  int steps_done() const { return static_cast<int>(steps_done_); }

  Executor::SavedState SaveState() const;
  void LoadState(const Executor::SavedState& state);

 private:
  // One entry per Op (the dispatch table); an op without one is a hard
  // error at run time.
  using Handler = void (Impl::*)(int rank, const Action& action);

  // Setup (executor.cc).
  void CheckCompatible(const std::vector<Stage>& student, const std::vector<Stage>& teacher);
  void PlaceStages(const std::vector<Stage>& student, const std::vector<Stage>& teacher);
  void FillHandlers();
  Batch Staged(const Batch& batch) const;
  void RunRank(int rank, int iterations);
  // A teacher that changes is part of the state; a frozen one in eval mode
  // is the caller's (loaded from its own file).
  bool TeacherChanges() const;

  // Where the current action's data lives.
  // The micro-batches of the mini-batch `offset` after the rank's current
  // one, or nullptr if it was not given (end of training).
  const std::vector<Batch>* Data(int rank, int offset) const;
  const std::vector<Batch>& Current(int rank) const;
  StageSlot& Slot(int rank, int stage) { return slots_[rank].at(stage); }
  // Absolute index of the mini-batch an action's data belongs to.
  int64_t BatchOf(int rank, const Action& a) const { return current_[rank] + a.batch_offset; }
  bool Local(int rank, int stage) const { return slots_[rank].count(stage) > 0; }
  const torch::Device& Dev(int rank) const { return devices_[rank]; }

  // Compute handlers (executor_compute.cc).
  void Forward(int rank, const Action& a);
  void TeacherForward(int rank, const Action& a);
  void Backward(int rank, const Action& a);
  void BackwardInput(int rank, const Action& a);
  void BackwardWeight(int rank, const Action& a);
  // Blockwise: drops a teacher output once its last reader is done.
  void ReleaseTeacher(StageSlot& slot, int64_t batch, int microbatch);
  // Hands d loss / d inputs of micro-batch k to the previous stage: here,
  // or through the stage's SG.
  void PassInputGradients(int rank, const Action& a, Activation input_grads);

  // The loss handler (executor_loss.cc).
  void Loss(int rank, const Action& a);

  // Communication, collectives and the optimizer (executor_comm.cc).
  void SendActivation(int rank, const Action& a);
  void RecvActivation(int rank, const Action& a);
  void SendTeacherActivation(int rank, const Action& a);
  void RecvTeacherActivation(int rank, const Action& a);
  void SendGradient(int rank, const Action& a);
  void RecvGradient(int rank, const Action& a);
  Activation Receive(int rank, const Action& a);
  void AllReduceGradients(int rank, const Action& a);
  void FinishAllReduce(StageSlot& slot);
  void SumTiedGradients(int rank, const Action& a);
  void ClipGradients(int rank, const Action& a);
  // The rank's stages with every all-reduce finished: what TG and GN read.
  std::map<int, StageImpl*> FinalGradients(int rank);
  void OptimizerStep(int rank, const Action& a);
  void TeacherUpdate(int rank, const Action& a);

  Schedule schedule_;
  std::string policy_;
  Algorithm* algorithm_;
  ExecutorOptions options_;
  std::vector<torch::Device> devices_;
  // Whether a rank of this process runs on a GPU (batches are then pinned).
  bool any_cuda_ = false;
  // Trace recording (set between runs, read by the rank threads), one clock
  // per local rank (null for the others), and what finished runs recorded.
  bool record_ = false;
  std::vector<std::unique_ptr<ActionClock>> clocks_;
  std::vector<TraceEvent> trace_;
  // Memory metering of recorded runs (made on the first), and the peaks
  // they measured since TakeMemoryPeaks.
  std::shared_ptr<MemoryMeter> meter_;
  std::map<std::string, int64_t> memory_peaks_;
  std::vector<std::map<int, StageSlot>> slots_;
  std::shared_ptr<Transport> transport_;
  // Ranks this process runs (all of them for the single-process backend).
  std::vector<int> local_ranks_;
  std::array<Handler, kNumOps> handlers_;
  std::unique_ptr<GradientSync> sync_;
  Schedule prologue_;
  // Micro-batches by absolute mini-batch index, for the current Run().
  std::map<int64_t, std::vector<Batch>> data_;
  // Absolute mini-batch index each rank is working on.
  std::vector<int64_t> current_;
  bool run_prologue_ = false;
  bool lookahead_ready_ = false;
  // Loss sums by [rank][iteration], on the rank's device; undefined
  // where the rank computed no loss.
  std::vector<std::vector<torch::Tensor>> losses_;
  std::atomic<bool> abort_{false};
  std::mutex error_mu_;
  std::vector<std::string> errors_;
  int64_t steps_done_ = 0;
};

}  // namespace tspipe

#endif  // TSPIPE_BACKENDS_EXECUTOR_IMPL_H_
