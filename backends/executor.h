// The executor: walks each rank's actions through one dispatch table, one
// thread per rank run by this process, each rank on its own device (CPU cores
// here, cuda:i where present). Tensors cross ranks through a Transport: by
// default in-memory mailboxes (the single-process backend, every rank a
// thread; backends/local_transport.cc); with backends/c10d's transport, torch
// c10d process groups (one process per rank). Only the transport differs.
//
// The ops, over each stage's buffers (k = micro-batch, b = mini-batch):
//   F   outputs[k] = student(inputs[k])            (inputs: the batch, the
//                                                  previous stage, or RA)
//   T   teacher_outputs[b][k] = teacher(...)       (no_grad; +1: batch b+1)
//   L   output_grads[k] = d(sum_t w_t mean_t)/d outputs[k], w_t = units of
//       term t in these samples / units of term t in the mini-batch
//       (Algorithm::LossTerms, LossUnits; backends/loss_weights.h)
//   B   accumulate parameter grads; input_grads[k] = d/d inputs[k]
//   I   input_grads[k] = d/d inputs[k]; the graph waits for W
//   W   accumulate parameter grads of micro-batch k; frees its graph
//   SA/RA, ST/RT, SG/RG  send/receive outputs, teacher outputs, input grads
//   AR  start the all-reduce of the stage's gradients over its replicas
//   TG  sum tied copies' gradients with the peer rank (backends/grad_sync.h)
//   GN  scale the replica's gradients to its global-norm clip
//   O   wait for AR, optimizer step, zero the gradients (the only place)
//   U   teacher <- Algorithm::UpdateTeacher(student); with independent
//       replicas, at Algorithm::ExchangesAt steps: all-gather the stage's
//       StageState over its replicas, LoadPeerCopies into the teacher
// The handlers live by family in executor_compute.cc, executor_loss.cc and
// executor_comm.cc (backends/executor_impl.h).
#ifndef TSPIPE_BACKENDS_EXECUTOR_H_
#define TSPIPE_BACKENDS_EXECUTOR_H_

#include <torch/torch.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backends/grad_sync.h"
#include "backends/transport.h"
#include "core/algorithm.h"
#include "core/microbatch.h"
#include "core/partition.h"
#include "core/schedule.h"
#include "core/trace.h"

namespace tspipe {

using OptimizerFactory =
    std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<torch::Tensor>)>;

struct ExecutorOptions {
  // Device of each rank; empty means CPU for every rank.
  std::vector<torch::Device> devices;
  // Makes one optimizer per stage over that stage's parameters.
  OptimizerFactory make_optimizer;
  // A receive that waits longer than this fails the step with a message
  // naming the action, instead of hanging.
  std::chrono::milliseconds recv_timeout{std::chrono::seconds(60)};
  // How ranks exchange tensors; null = in-process mailboxes (all ranks are
  // threads of this process). backends/c10d gives one over torch c10d.
  std::shared_ptr<Transport> transport;
  // Ranks this process runs; empty = every rank of the schedule. With c10d
  // it is the process's own rank.
  std::vector<int> local_ranks;
  // Schedules whose replicas are separate models
  // (Workload::independent_replicas): the stages of model i >= 1, indexed
  // [i - 1][stage], student and teacher (the teacher of a model being its
  // peers' copies, PeerCopiesBlockImpl). Empty: replicas are deep copies of
  // `student`/`teacher`, starting from the first replica's values.
  std::vector<std::vector<Stage>> student_replicas;
  std::vector<std::vector<Stage>> teacher_replicas;
  // Called before every optimizer step with the step's number (1-based):
  // schedules of the learning rate or weight decay. Null = none.
  std::function<void(torch::optim::Optimizer& optimizer, int step)> before_step;
  // Update policy name (core/update_policy.h) the run must honour; the
  // constructor refuses a schedule whose action order gives a momentum
  // teacher other versions. Empty = whichever policy the schedule honours.
  std::string update_policy;
  // Parameters two stages hold copies of (indices into the stages'
  // parameters()): their gradients are summed before every step, so the
  // copies stay equal. Replicas have the same ties. The schedule must have
  // been built for them (Workload::tied_stages = TiedStages(these)).
  std::vector<TiedGradient> tied_gradients;
  // > 0: every model's gradients are scaled so that their 2-norm over all
  // its stages is at most this (torch.nn.utils.clip_grad_norm_); the
  // schedule must have been built with Workload::clip_gradients.
  double clip_grad_norm = 0;
  // Record when every action starts and ends on every local rank (see
  // TakeTrace); Executor::set_record_trace changes it between runs.
  bool record_trace = false;
};

struct StepResult {
  // Sum of the losses computed this step (the mean loss for one loss stage).
  double loss = 0.0;
  int64_t samples = 0;
};

class Executor {
 public:
  // `student` has one Stage per schedule stage; `teacher` too when the
  // workload has a teacher (empty otherwise). Stages move to the device of
  // the rank holding them. Throws std::invalid_argument naming the problem
  // when the schedule is invalid or does not fit the stages, devices or
  // algorithm.
  Executor(Schedule schedule, std::vector<Stage> student, std::vector<Stage> teacher,
                Algorithm* algorithm, ExecutorOptions options);
  ~Executor();

  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Runs one iteration of the schedule per batch (one optimizer step per
  // stage each), with no barrier between iterations: a rank starts batch i+1
  // as soon as it has finished its own part of batch i, as TSPipe requires.
  // `after` is the mini-batch the next call will start with, for schedules
  // that run teacher forwards one batch ahead (batch_offset +1); pass nullptr
  // at the end of training (the look-ahead is then skipped, and the next call
  // first runs the teacher prologue). If any rank fails, every rank stops and
  // this throws std::runtime_error naming the rank and action; gradients of
  // the failed step are discarded.
  std::vector<StepResult> Run(const std::vector<Batch>& batches, const Batch* after = nullptr);

  // Run({batch}, next)[0].
  StepResult Step(const Batch& batch, const Batch* next = nullptr);

  // Recording costs two clock reads per action (CUDA events on GPU ranks)
  // and a report per allocation (backends/memory_meter.h): recorded runs
  // also measure their peak memory.
  void set_record_trace(bool on);
  // What the runs since the last call recorded, in the order each rank ran
  // it (core/trace.h), and forgets it.
  std::vector<TraceEvent> TakeTrace();
  // The most bytes any recorded run since the last call held above what
  // was allocated when it began, by device ("cpu": every rank of this
  // process together; "cuda:<i>": that GPU), and forgets them.
  std::map<std::string, int64_t> TakeMemoryPeaks();

  const Schedule& schedule() const;
  // The update policy in force (the requested one, or the schedule's own).
  const std::string& update_policy() const;
  int steps_done() const;

  // What the next Run depends on, for the stages this process runs: per
  // (rank, stage) a torch archive as bytes (each loads onto its own
  // device) of the student's parameters and buffers, a changing teacher's
  // (momentum target, peer copies), the optimizer state and the teacher
  // outputs computed ahead for the next batch; and the step count. An
  // executor built with the same schedule, stages and options continues
  // from it as if it had run those steps itself (checkpoints).
  struct SavedState {
    int64_t steps_done = 0;
    bool lookahead_ready = false;
    std::map<std::pair<int, int>, std::string> stages;
  };
  SavedState SaveState() const;
  // Throws std::invalid_argument naming the stage and tensor that do not
  // fit; call it between runs only.
  void LoadState(const SavedState& state);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tspipe

#endif  // TSPIPE_BACKENDS_EXECUTOR_H_
