#include "backends/executor.h"

#include <c10/core/DeviceGuard.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <tuple>

#include "backends/action_clock.h"
#include "backends/memory_meter.h"
#include "backends/stage_slot.h"
#include "backends/transport.h"
#include "core/validator.h"

namespace tspipe {
namespace {

// A detached copy that autograd tracks from here: stage boundaries cut the
// graph so that each stage's backward is a separate action.
Activation Leaf(const Activation& a) {
  Activation out;
  out.reserve(a.size());
  for (const torch::Tensor& t : a) {
    if (t.defined() && t.is_floating_point()) {
      out.push_back(t.detach().requires_grad_(true));
    } else {
      out.push_back(t.defined() ? t.detach() : t);
    }
  }
  return out;
}

Activation Detached(const Activation& a) {
  Activation out;
  for (const torch::Tensor& t : a) out.push_back(t.defined() ? t.detach() : t);
  return out;
}


}  // namespace

class Executor::Impl {
 public:
  Impl(Schedule schedule, std::vector<Stage> student, std::vector<Stage> teacher,
       Algorithm* algorithm, ExecutorOptions options)
      : schedule_(std::move(schedule)), algorithm_(algorithm), options_(std::move(options)) {
    CheckCompatible(student, teacher);
    sync_ = std::make_unique<GradientSync>(schedule_, options_.tied_gradients,
                                           options_.clip_grad_norm);
    sync_->CheckStages(student);
    const int ranks = schedule_.num_ranks();
    devices_ = options_.devices;
    if (devices_.empty()) devices_.assign(ranks, torch::Device(torch::kCPU));
    slots_.resize(ranks);
    record_ = options_.record_trace;
    local_ranks_ = options_.local_ranks;
    if (local_ranks_.empty()) {
      for (int r = 0; r < ranks; ++r) local_ranks_.push_back(r);
    }
    for (int r : local_ranks_) {
      if (r < 0 || r >= ranks) {
        throw std::invalid_argument("local rank " + std::to_string(r) + " is not a rank of the " +
                                    std::to_string(ranks) + "-rank schedule");
      }
      any_cuda_ = any_cuda_ || devices_[r].is_cuda();
    }
    clocks_.resize(ranks);
    for (int r : local_ranks_) clocks_[r] = std::make_unique<ActionClock>(r, devices_[r]);
    transport_ = options_.transport ? options_.transport : MakeLocalTransport(ranks, devices_);
    if (transport_->MatchesInPostingOrder()) {
      for (const Schedule& s : {schedule_, TeacherPrologue(schedule_)}) {
        std::string why = CheckMessageOrder(s);
        if (!why.empty()) {
          throw std::invalid_argument("this transport matches messages in posting order, but "
                                      "schedule '" + schedule_.scheduler + "' does not: " + why);
        }
      }
    }
    const bool independent = schedule_.workload.independent_replicas;
    std::vector<bool> used(schedule_.num_stages, false);
    for (int r : local_ranks_) {
      for (int s : schedule_.StagesOnRank(r)) {
        StageSlot& slot = slots_[r][s];
        const int replica = schedule_.ReplicaIndex(s, r);
        // Separate models come from the caller, one set of stages each.
        // Otherwise the first local replica is the caller's stage (so the
        // caller's model is the trained one) and further ones are deep copies.
        const bool first = !used[s];
        used[s] = true;
        if (independent && replica > 0) {
          slot.student = options_.student_replicas.at(replica - 1).at(s);
        } else {
          slot.student = first || independent ? student[s] : student[s]->Replicate();
        }
        slot.student->to(devices_[r]);
        slot.student->train();
        if (!teacher.empty()) {
          if (independent && replica > 0) {
            slot.teacher = options_.teacher_replicas.at(replica - 1).at(s);
          } else {
            slot.teacher = first || independent ? teacher[s] : teacher[s]->Replicate();
          }
          slot.teacher->to(devices_[r]);
          // Teachers run inference only; pre-trained ones also with fixed
          // batch-norm statistics and no dropout.
          if (algorithm_->TeacherInTrainMode()) {
            slot.teacher->train();
          } else {
            slot.teacher->eval();
          }
          for (auto& p : slot.teacher->parameters()) p.set_requires_grad(false);
        }
        auto params = slot.student->parameters();
        if (!params.empty()) slot.optimizer = options_.make_optimizer(params);
        slot.Reset(schedule_.num_microbatches);
      }
    }
    // Replicas start from the first replica's values, whatever each process
    // initialised (integer buffers such as batch counts included, through a
    // float64 bucket that holds them exactly).
    for (int r : local_ranks_) {
      for (auto& [s, slot] : slots_[r]) {
        const std::vector<int>& group = schedule_.placement[s];
        if (group.size() < 2 || independent) continue;
        std::vector<torch::Tensor> state;
        for (torch::nn::Module* m : {slot.student.get(), slot.teacher.get()}) {
          if (m == nullptr) continue;
          for (const auto& p : m->parameters()) state.push_back(p);
          for (const auto& b : m->buffers()) state.push_back(b);
        }
        transport_->Broadcast(r, group, group[0], &state, options_.recv_timeout);
      }
    }
    prologue_ = TeacherPrologue(schedule_);
    handlers_.fill(nullptr);
    handlers_[static_cast<int>(Op::kForward)] = &Impl::Forward;
    handlers_[static_cast<int>(Op::kTeacherForward)] = &Impl::TeacherForward;
    handlers_[static_cast<int>(Op::kBackward)] = &Impl::Backward;
    handlers_[static_cast<int>(Op::kBackwardInput)] = &Impl::BackwardInput;
    handlers_[static_cast<int>(Op::kBackwardWeight)] = &Impl::BackwardWeight;
    handlers_[static_cast<int>(Op::kLoss)] = &Impl::Loss;
    handlers_[static_cast<int>(Op::kSendActivation)] = &Impl::SendActivation;
    handlers_[static_cast<int>(Op::kRecvActivation)] = &Impl::RecvActivation;
    handlers_[static_cast<int>(Op::kSendTeacherActivation)] = &Impl::SendTeacherActivation;
    handlers_[static_cast<int>(Op::kRecvTeacherActivation)] = &Impl::RecvTeacherActivation;
    handlers_[static_cast<int>(Op::kSendGradient)] = &Impl::SendGradient;
    handlers_[static_cast<int>(Op::kRecvGradient)] = &Impl::RecvGradient;
    handlers_[static_cast<int>(Op::kOptimizerStep)] = &Impl::OptimizerStep;
    handlers_[static_cast<int>(Op::kTeacherUpdate)] = &Impl::TeacherUpdate;
    handlers_[static_cast<int>(Op::kAllReduceGradients)] = &Impl::AllReduceGradients;
  }

  std::vector<StepResult> Run(const std::vector<Batch>& batches, const Batch* after) {
    // Recorded runs meter memory on every thread that allocates or frees
    // for them: this one (batches, cleanup) and the ranks'.
    std::shared_ptr<MemoryMeter> meter;
    if (record_) {
      if (!meter_) meter_ = std::make_shared<MemoryMeter>();
      meter = meter_;
      meter->Begin();
    }
    std::unique_ptr<MemoryMeter::Attachment> metering = MemoryMeter::Attach(meter);
    const int m = schedule_.num_microbatches;
    const int n = static_cast<int>(batches.size());
    data_.clear();
    for (int i = 0; i < n; ++i) data_[steps_done_ + i] = SplitBatch(Staged(batches[i]), m);
    if (after != nullptr) data_[steps_done_ + n] = SplitBatch(Staged(*after), m);
    // Teacher outputs for the first batch exist only if the previous call
    // looked ahead; otherwise the prologue computes them.
    run_prologue_ = !lookahead_ready_;
    losses_.assign(schedule_.num_ranks(), std::vector<torch::Tensor>(n));
    current_.assign(schedule_.num_ranks(), 0);
    errors_.clear();
    abort_ = false;
    transport_->Reset();
    // Here, not at construction: executors may share a transport (one c10d
    // world per process) and take turns.
    transport_->Configure(schedule_.num_stages, schedule_.num_microbatches);

    if (record_) {
      for (int r : local_ranks_) clocks_[r]->Start();
    }
    std::vector<std::thread> threads;
    for (int r : local_ranks_) {
      threads.emplace_back([this, r, n, meter] {
        std::unique_ptr<MemoryMeter::Attachment> metering = MemoryMeter::Attach(meter);
        RunRank(r, n);
      });
    }
    for (auto& t : threads) t.join();
    // Kernels may still be queued on the devices; a step ends when they finish
    // (so timings are honest and the next step sees finished parameters). A
    // failed kernel surfaces here: report it like a rank's error, after the
    // cleanup below.
    for (const torch::Device& d : devices_) {
      if (!d.is_cuda()) continue;
      try {
        torch::cuda::synchronize(d.index());
      } catch (const std::exception& e) {
        errors_.push_back("device " + d.str() + " failed: " + e.what());
      }
    }
    if (record_) {
      for (int r : local_ranks_) {
        std::vector<TraceEvent> events = clocks_[r]->Finish();
        trace_.insert(trace_.end(), events.begin(), events.end());
      }
    }
    for (int r : local_ranks_) {
      for (auto& [stage, slot] : slots_[r]) {
        slot.Reset(m);
        if (!errors_.empty()) {
          // A failed run leaves no half-accumulated gradients behind.
          if (slot.optimizer) slot.optimizer->zero_grad();
          slot.teacher_outputs.clear();
        }
      }
    }
    data_.clear();
    if (meter) {
      for (const auto& [device, bytes] : meter->Peaks()) {
        int64_t& kept = memory_peaks_[device];
        kept = std::max(kept, bytes);
      }
    }
    if (!errors_.empty()) {
      lookahead_ready_ = false;
      transport_->Reset();
      throw std::runtime_error(errors_.front());
    }
    lookahead_ready_ = after != nullptr;
    std::vector<StepResult> results(n);
    for (int i = 0; i < n; ++i) {
      for (int r : local_ranks_) {
        if (losses_[r][i].defined()) results[i].loss += losses_[r][i].item<double>();
      }
      results[i].samples = batches[i].size();
    }
    steps_done_ += n;
    return results;
  }

  void set_record_trace(bool on) { record_ = on; }
  std::vector<TraceEvent> TakeTrace() {
    std::vector<TraceEvent> out;
    out.swap(trace_);
    return out;
  }
  std::map<std::string, int64_t> TakeMemoryPeaks() {
    std::map<std::string, int64_t> out;
    out.swap(memory_peaks_);
    return out;
  }

  const Schedule& schedule() const { return schedule_; }
  const std::string& update_policy() const { return policy_; }
  int steps_done() const { return static_cast<int>(steps_done_); }

  // A teacher that changes is part of the state; a frozen one in eval mode
  // is the caller's (loaded from its own file).
  bool TeacherChanges() const {
    return algorithm_->teacher_kind() != TeacherKind::kFrozen || algorithm_->TeacherInTrainMode();
  }

  Executor::SavedState SaveState() const {
    Executor::SavedState state;
    state.steps_done = steps_done_;
    state.lookahead_ready = lookahead_ready_;
    for (int r : local_ranks_) {
      for (const auto& [s, slot] : slots_[r]) {
        state.stages[{r, s}] = SaveSlot(slot, steps_done_, TeacherChanges());
      }
    }
    return state;
  }

  void LoadState(const Executor::SavedState& state) {
    auto describe = [](const std::vector<std::pair<int, int>>& where) {
      std::string out;
      for (const auto& [r, s] : where) {
        out += (out.empty() ? "" : ", ") + std::string("rank ") + std::to_string(r) + " stage " +
               std::to_string(s);
      }
      return out.empty() ? std::string("none") : out;
    };
    std::vector<std::pair<int, int>> mine, saved;
    for (int r : local_ranks_) {
      for (const auto& entry : slots_[r]) mine.emplace_back(r, entry.first);
    }
    for (const auto& entry : state.stages) saved.push_back(entry.first);
    std::sort(mine.begin(), mine.end());
    if (mine != saved) {
      throw std::invalid_argument("the saved state holds " + describe(saved) +
                                  "; this executor runs " + describe(mine));
    }
    for (int r : local_ranks_) {
      for (auto& [s, slot] : slots_[r]) {
        LoadSlot(state.stages.at({r, s}), devices_[r], TeacherChanges(),
                 "rank " + std::to_string(r) + " stage " + std::to_string(s), &slot);
      }
    }
    steps_done_ = state.steps_done;
    lookahead_ready_ = state.lookahead_ready;
  }

 private:
  using Handler = void (Impl::*)(int rank, const Action& action);

  void CheckCompatible(const std::vector<Stage>& student, const std::vector<Stage>& teacher) {
    ValidationResult v = Validate(schedule_);
    if (!v.ok()) throw std::invalid_argument("invalid schedule:\n" + v.ToString());
    const int n = schedule_.num_stages;
    if (static_cast<int>(student.size()) != n) {
      throw std::invalid_argument("schedule has " + std::to_string(n) + " stages but the student has " +
                                  std::to_string(student.size()));
    }
    if (schedule_.workload.has_teacher && static_cast<int>(teacher.size()) != n) {
      throw std::invalid_argument("schedule has " + std::to_string(n) +
                                  " stages but the teacher has " + std::to_string(teacher.size()));
    }
    if (algorithm_ == nullptr) throw std::invalid_argument("no algorithm given");
    const Workload w = algorithm_->workload();
    if (w.has_teacher != schedule_.workload.has_teacher ||
        w.teacher_updates != schedule_.workload.teacher_updates ||
        w.local_losses != schedule_.workload.local_losses ||
        w.blockwise != schedule_.workload.blockwise) {
      throw std::invalid_argument("schedule was built for a different workload than algorithm '" +
                                  algorithm_->name() + "' needs");
    }
    if (!options_.devices.empty() &&
        static_cast<int>(options_.devices.size()) != schedule_.num_ranks()) {
      throw std::invalid_argument("schedule has " + std::to_string(schedule_.num_ranks()) +
                                  " ranks but " + std::to_string(options_.devices.size()) +
                                  " devices were given");
    }
    if (!options_.make_optimizer) throw std::invalid_argument("no optimizer factory given");
    if (schedule_.workload.independent_replicas) {
      const size_t models = schedule_.placement.empty() ? 0 : schedule_.placement[0].size();
      auto complete = [&](const std::vector<std::vector<Stage>>& replicas) {
        if (replicas.size() + 1 != models) return false;
        for (const auto& stages : replicas) {
          if (static_cast<int>(stages.size()) != n) return false;
        }
        return true;
      };
      if (!complete(options_.student_replicas) || !complete(options_.teacher_replicas)) {
        throw std::invalid_argument(
            "schedule '" + schedule_.scheduler + "' trains " + std::to_string(models) +
            " separate models; give the stages of every model after the first "
            "(ExecutorOptions::student_replicas, teacher_replicas)");
      }
      if (algorithm_->teacher_kind() != TeacherKind::kPeers) {
        throw std::invalid_argument("schedule '" + schedule_.scheduler +
                                    "' trains separate models, but algorithm '" +
                                    algorithm_->name() + "' has no peer teachers");
      }
    }
    const TeacherKind kind = algorithm_->teacher_kind();
    if (options_.update_policy.empty()) {
      policy_ = NaturalPolicy(schedule_, kind);
      if (policy_.empty()) {
        throw std::invalid_argument("schedule '" + schedule_.scheduler +
                                    "' gives its teacher forwards no consistent target version");
      }
    } else {
      std::unique_ptr<UpdatePolicy> policy =
          UpdatePolicyRegistry::Global().Create(options_.update_policy);
      std::string why = CheckPolicy(schedule_, *policy, kind);
      if (!why.empty()) {
        throw std::invalid_argument("scheduler '" + schedule_.scheduler +
                                    "' cannot honour update policy '" + policy->name() +
                                    "': " + why);
      }
      policy_ = policy->name();
    }
  }

  // `batch` in page-locked memory when a rank runs on a GPU, so that the
  // non-blocking host-to-device copies of its micro-batches are truly
  // asynchronous (from pageable memory they wait for the whole stream).
  // The pinned copies live in data_ until the run ends.
  Batch Staged(const Batch& batch) const {
    if (!any_cuda_) return batch;
    Batch pinned = batch;
    for (Activation* part : {&pinned.inputs, &pinned.targets}) {
      for (torch::Tensor& t : *part) {
        if (t.defined() && t.device().is_cpu()) t = t.pin_memory();
      }
    }
    return pinned;
  }

  void RunRank(int rank, int iterations) {
    const std::vector<Action>* actions = nullptr;
    size_t i = 0;
    bool flushing = false, syncing = false;
    try {
      c10::DeviceGuard guard(devices_[rank]);
      // The main list's gradient sync point (none in the prologue).
      const int point = sync_->active() ? sync_->point(rank) : -1;
      ActionClock& clock = *clocks_[rank];
      const bool record = record_;
      auto run = [&](const std::vector<Action>& list, int64_t batch, bool main) {
        actions = &list;
        current_[rank] = batch;
        for (auto& [stage, slot] : slots_[rank]) slot.ForgetBefore(batch);
        const TraceEvent::Kind kind = main ? TraceEvent::Kind::kAction : TraceEvent::Kind::kPrologue;
        for (i = 0; i <= list.size(); ++i) {
          if (abort_.load()) return false;
          if (main && static_cast<int>(i) == point) {
            syncing = true;
            if (record) clock.Begin();
            SyncGradients(rank);
            if (record) clock.End(TraceEvent::Kind::kSync, static_cast<int>(i), Action{}, batch);
            syncing = false;
          }
          if (i == list.size()) break;
          const Action& a = list[i];
          Handler h = handlers_[static_cast<int>(a.op)];
          if (h == nullptr) {
            throw std::logic_error(std::string("the local backend has no handler for op ") +
                                   OpName(a.op).data());
          }
          if (record) clock.Begin();
          (this->*h)(rank, a);
          if (record) clock.End(kind, static_cast<int>(i), a, batch);
        }
        return true;
      };
      if (run_prologue_ && !run(prologue_.ranks[rank], steps_done_, false)) return;
      for (int it = 0; it < iterations; ++it) {
        if (!run(schedule_.ranks[rank], steps_done_ + it, true)) return;
      }
      flushing = true;
      transport_->Flush(rank, options_.recv_timeout);
    } catch (const AbortedError&) {
      return;  // Another rank failed; its error is the one to report.
    } catch (const std::exception& e) {
      std::ostringstream msg;
      msg << "rank " << rank;
      if (flushing) {
        msg << " failed while flushing its sends";
      } else if (syncing) {
        msg << " failed summing tied gradients or the clipping norm";
      } else {
        msg << " failed at step " << i;
        if (actions != nullptr && i < actions->size()) {
          msg << " (" << ToString((*actions)[i]) << ")";
        }
      }
      msg << " of training step " << current_[rank] + 1 << ": " << e.what();
      {
        std::lock_guard<std::mutex> lock(error_mu_);
        errors_.push_back(msg.str());
      }
      abort_ = true;
      transport_->Wake();
    }
  }

  // The micro-batches of the mini-batch `offset` after the rank's current
  // one, or nullptr if it was not given (end of training).
  const std::vector<Batch>* Data(int rank, int offset) const {
    auto it = data_.find(current_[rank] + offset);
    return it == data_.end() ? nullptr : &it->second;
  }

  const std::vector<Batch>& Current(int rank) const {
    const std::vector<Batch>* d = Data(rank, 0);
    TORCH_CHECK(d != nullptr, "no data for mini-batch ", current_[rank]);
    return *d;
  }

  StageSlot& Slot(int rank, int stage) { return slots_[rank].at(stage); }
  // Absolute index of the mini-batch an action's data belongs to.
  int64_t BatchOf(int rank, const Action& a) const { return current_[rank] + a.batch_offset; }
  bool Local(int rank, int stage) { return slots_[rank].count(stage) > 0; }
  const torch::Device& Dev(int rank) const { return devices_[rank]; }

  Activation Receive(int rank, const MessageKey& key, const Action& a) {
    return transport_->Receive(rank, a.peer, key, options_.recv_timeout, abort_);
  }

  void Forward(int rank, const Action& a) {
    StageSlot& slot = Slot(rank, a.stage);
    Activation& input = slot.inputs[a.microbatch];
    if (schedule_.workload.blockwise) {
      // Set by the stage's TeacherForward: the teacher's input.
    } else if (a.stage == 0) {
      input = ToDevice(Current(rank)[a.microbatch].inputs, Dev(rank), /*non_blocking=*/true);
    } else if (Local(rank, a.stage - 1)) {
      input = Leaf(Slot(rank, a.stage - 1).outputs[a.microbatch]);
    }
    TORCH_CHECK(!input.empty(), "no input for ", ToString(a));
    slot.outputs[a.microbatch] = slot.student->Forward(input);
  }

  void TeacherForward(int rank, const Action& a) {
    StageSlot& slot = Slot(rank, a.stage);
    const std::vector<Batch>* data = Data(rank, a.batch_offset);
    if (data == nullptr) return;  // Look-ahead past the end of training.
    const int64_t batch = current_[rank] + a.batch_offset;
    Activation input;
    if (a.stage == 0) {
      input = ToDevice((*data)[a.microbatch].inputs, Dev(rank), /*non_blocking=*/true);
    } else if (Local(rank, a.stage - 1)) {
      input = Slot(rank, a.stage - 1).teacher_outputs.at(batch).at(a.microbatch);
      ReleaseTeacher(Slot(rank, a.stage - 1), batch, a.microbatch);
    } else {
      input = std::move(slot.teacher_inputs.at(batch).at(a.microbatch));
    }
    // Blockwise: the student stage learns from the same input (no gradient
    // flows into it: it comes from the teacher, or the data).
    if (schedule_.workload.blockwise && a.batch_offset == 0) slot.inputs[a.microbatch] = input;
    torch::NoGradGuard no_grad;
    auto& outs = slot.teacher_outputs[batch];
    outs.resize(schedule_.num_microbatches);
    outs[a.microbatch] = slot.teacher->Forward(input);
    if (schedule_.workload.blockwise) {
      auto& readers = slot.teacher_readers[batch];
      readers.resize(schedule_.num_microbatches);
      readers[a.microbatch] = a.stage < schedule_.num_stages - 1 ? 2 : 1;
    }
  }

  void Loss(int rank, const Action& a) {
    StageSlot& slot = Slot(rank, a.stage);
    std::vector<int> mbs = a.microbatch == kAllMicrobatches
                               ? schedule_.MicrobatchesOf(a.stage, rank)
                               : std::vector<int>{a.microbatch};
    std::vector<Activation> leaves, targets, teacher;
    int64_t samples = 0;
    for (int k : mbs) {
      TORCH_CHECK(!slot.outputs[k].empty(), "no student output of micro-batch ", k);
      leaves.push_back(Leaf(slot.outputs[k]));
      targets.push_back(Current(rank)[k].targets);
      samples += Current(rank)[k].size();
      if (schedule_.workload.has_teacher) {
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
    std::vector<LossTerm> terms = algorithm_->LossTerms(in);
    for (int k : mbs) ReleaseTeacher(slot, current_[rank], k);
    // What each term averages over in the whole mini-batch: weighting each
    // action's means by its share of that makes the sum over actions (loss
    // stages, replicas) the mini-batch's means, however it was split.
    // A separate model (independent replicas) averages over its own share.
    std::vector<int> mini_batch;
    if (schedule_.workload.independent_replicas) {
      mini_batch = schedule_.MicrobatchesOf(a.stage, rank);
    } else {
      for (int k = 0; k < schedule_.num_microbatches; ++k) mini_batch.push_back(k);
    }
    std::vector<double> totals;
    for (int k : mini_batch) {
      std::vector<double> units = algorithm_->LossUnits(Current(rank)[k], a.stage);
      if (totals.empty()) totals.assign(units.size(), 0.0);
      TORCH_CHECK(units.size() == totals.size(), "algorithm '", algorithm_->name(),
                  "' counts a different number of loss terms per micro-batch");
      for (size_t t = 0; t < units.size(); ++t) totals[t] += units[t];
    }
    TORCH_CHECK(terms.size() == totals.size(), "algorithm '", algorithm_->name(), "' returned ",
                terms.size(), " loss terms but counts units for ", totals.size());
    // The units a term says it averaged over must be the ones LossUnits
    // counts for these samples, or the weights would not sum to one.
    std::vector<double> here(totals.size(), 0.0);
    for (int k : mbs) {
      std::vector<double> units = algorithm_->LossUnits(Current(rank)[k], a.stage);
      for (size_t t = 0; t < units.size() && t < here.size(); ++t) here[t] += units[t];
    }
    torch::Tensor scaled;
    for (size_t t = 0; t < terms.size(); ++t) {
      TORCH_CHECK(terms[t].mean.defined() && terms[t].mean.numel() == 1, "algorithm '",
                  algorithm_->name(), "' returned a loss term that is not a scalar");
      TORCH_CHECK(std::abs(terms[t].units - here[t]) <= 1e-9 * std::max(1.0, here[t]),
                  "algorithm '", algorithm_->name(), "': loss term ", t, " averages over ",
                  terms[t].units, " units, but LossUnits counts ", here[t],
                  " in the same samples");
      if (terms[t].units <= 0) continue;  // Nothing to average here.
      torch::Tensor part = terms[t].mean.reshape({}) * (terms[t].units / totals[t]);
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
      // No term had units in these samples (or none depends on the
      // student): no gradient flows from them.
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

  // The outputs of micro-batch k that carry a gradient, with it.
  void Differentiable(StageSlot& slot, int k, std::vector<torch::Tensor>* tensors,
                      std::vector<torch::Tensor>* grads) {
    Activation& out = slot.outputs[k];
    Activation& grad = slot.output_grads[k];
    TORCH_CHECK(!out.empty(), "no forward output to differentiate");
    TORCH_CHECK(grad.size() == out.size(), "the gradient of the output is missing");
    for (size_t i = 0; i < out.size(); ++i) {
      if (out[i].defined() && out[i].requires_grad() && grad[i].defined()) {
        tensors->push_back(out[i]);
        grads->push_back(grad[i]);
      }
    }
  }

  static bool Differentiates(const torch::Tensor& t) { return t.defined() && t.requires_grad(); }

  // One gradient per stage input from `got`, the gradients of the inputs
  // that require one, in order: zeros where none reached an input,
  // undefined for inputs without gradients (masks, indices).
  static Activation PerInput(const Activation& inputs, const std::vector<torch::Tensor>& got) {
    Activation out;
    size_t j = 0;
    for (const torch::Tensor& t : inputs) {
      if (!Differentiates(t)) {
        out.push_back(torch::Tensor());
        continue;
      }
      const torch::Tensor& g = got.at(j++);
      out.push_back(g.defined() ? g : torch::zeros_like(t));
    }
    return out;
  }

  // Hands d loss / d inputs of micro-batch k (one entry per stage input,
  // undefined for those without a gradient) to the previous stage: here,
  // or through the stage's SG.
  void PassInputGradients(int rank, const Action& a, Activation input_grads) {
    if (a.stage == 0 || schedule_.workload.local_losses) return;
    if (Local(rank, a.stage - 1)) {
      Slot(rank, a.stage - 1).output_grads[a.microbatch] = std::move(input_grads);
    } else {
      Slot(rank, a.stage).input_grads[a.microbatch] = std::move(input_grads);
    }
  }

  void Backward(int rank, const Action& a) {
    StageSlot& slot = Slot(rank, a.stage);
    const int k = a.microbatch;
    std::vector<torch::Tensor> tensors, grads;
    Differentiable(slot, k, &tensors, &grads);
    if (!tensors.empty()) torch::autograd::backward(tensors, grads);
    std::vector<torch::Tensor> got;
    for (const torch::Tensor& t : slot.inputs[k]) {
      if (Differentiates(t)) got.push_back(t.grad());
    }
    PassInputGradients(rank, a, PerInput(slot.inputs[k], got));
    slot.outputs[k].clear();
    slot.output_grads[k].clear();
    slot.inputs[k].clear();
  }

  // I: the input gradients now; the graph waits for the W (SplitBackward).
  void BackwardInput(int rank, const Action& a) {
    StageSlot& slot = Slot(rank, a.stage);
    const int k = a.microbatch;
    std::vector<torch::Tensor> tensors, grads, wrt;
    Differentiable(slot, k, &tensors, &grads);
    // Stage 0's inputs are data: no input pass, the W does it all.
    const bool wants_inputs = a.stage > 0 && !schedule_.workload.local_losses;
    for (const torch::Tensor& t : slot.inputs[k]) {
      if (wants_inputs && Differentiates(t)) wrt.push_back(t);
    }
    auto split = std::make_unique<SplitBackward>(std::move(tensors), std::move(grads), wrt,
                                                 slot.student->parameters());
    std::vector<torch::Tensor> got = split->InputGradients();
    if (wants_inputs) PassInputGradients(rank, a, PerInput(slot.inputs[k], got));
    slot.split[k] = std::move(split);
    slot.outputs[k].clear();
    slot.output_grads[k].clear();
    slot.inputs[k].clear();
  }

  // W: accumulates the parameter gradients and frees the graph.
  void BackwardWeight(int rank, const Action& a) {
    std::unique_ptr<SplitBackward>& split = Slot(rank, a.stage).split[a.microbatch];
    TORCH_CHECK(split != nullptr, "no input-gradient action ran before ", ToString(a));
    split->AccumulateWeightGradients();
    split.reset();
  }

  void SendActivation(int rank, const Action& a) {
    const Activation& out = Slot(rank, a.stage).outputs[a.microbatch];
    TORCH_CHECK(!out.empty(), "nothing to send");
    transport_->Send(rank, a.peer,
                     {Channel::kActivation, a.stage + 1, a.microbatch, BatchOf(rank, a)},
                     Detached(out));
  }

  void RecvActivation(int rank, const Action& a) {
    Slot(rank, a.stage).inputs[a.microbatch] =
        Leaf(Receive(rank, {Channel::kActivation, a.stage, a.microbatch, BatchOf(rank, a)}, a));
  }

  void SendTeacherActivation(int rank, const Action& a) {
    if (Data(rank, a.batch_offset) == nullptr) return;  // Look-ahead past the end.
    const Activation& out =
        Slot(rank, a.stage).teacher_outputs.at(BatchOf(rank, a)).at(a.microbatch);
    transport_->Send(rank, a.peer,
                     {Channel::kTeacherActivation, a.stage + 1, a.microbatch, BatchOf(rank, a)},
                     out);
    ReleaseTeacher(Slot(rank, a.stage), BatchOf(rank, a), a.microbatch);
  }

  // Blockwise: a teacher output has two readers, its stage's loss and the
  // next stage (its teacher forward, or the send to it); the last stage's
  // only the loss. After the last one it is dropped, so a device holds the
  // teacher activations of the micro-batches in flight, not of the whole
  // iteration.
  void ReleaseTeacher(StageSlot& slot, int64_t batch, int microbatch) {
    if (!schedule_.workload.blockwise) return;
    auto it = slot.teacher_readers.find(batch);
    if (it == slot.teacher_readers.end() || --it->second.at(microbatch) > 0) return;
    slot.teacher_outputs.at(batch).at(microbatch).clear();
  }

  void RecvTeacherActivation(int rank, const Action& a) {
    if (Data(rank, a.batch_offset) == nullptr) return;
    auto& inputs = Slot(rank, a.stage).teacher_inputs[BatchOf(rank, a)];
    inputs.resize(schedule_.num_microbatches);
    inputs[a.microbatch] = Receive(
        rank, {Channel::kTeacherActivation, a.stage, a.microbatch, BatchOf(rank, a)}, a);
  }

  void SendGradient(int rank, const Action& a) {
    Activation& g = Slot(rank, a.stage).input_grads[a.microbatch];
    TORCH_CHECK(!g.empty(), "no input gradient to send");
    transport_->Send(rank, a.peer, {Channel::kGradient, a.stage - 1, a.microbatch, BatchOf(rank, a)},
                     g);
    g.clear();
  }

  void RecvGradient(int rank, const Action& a) {
    Slot(rank, a.stage).output_grads[a.microbatch] =
        Receive(rank, {Channel::kGradient, a.stage, a.microbatch, BatchOf(rank, a)}, a);
  }

  void OptimizerStep(int rank, const Action& a) {
    StageSlot& slot = Slot(rank, a.stage);
    if (!slot.optimizer) return;  // A stage without parameters.
    FinishAllReduce(slot);
    if (options_.before_step) {
      options_.before_step(*slot.optimizer, static_cast<int>(current_[rank]) + 1);
    }
    slot.optimizer->step();
    // The only place gradients are zeroed: once per step, after the update.
    slot.optimizer->zero_grad();
  }

  // Starts summing the stage's gradients over its replicas; the stage's
  // OptimizerStep waits for the sums (so the backward of earlier stages
  // overlaps the communication where the transport allows). Losses are
  // already weighted by each replica's share of the mini-batch, so the sum
  // is the mini-batch gradient. Gradients travel as one flattened bucket
  // per stage: one collective instead of one per parameter.
  void AllReduceGradients(int rank, const Action& a) {
    StageSlot& slot = Slot(rank, a.stage);
    std::vector<torch::Tensor> params = slot.student->parameters();
    if (params.empty()) return;
    std::vector<torch::Tensor> flat;
    for (const torch::Tensor& p : params) {
      flat.push_back(p.grad().defined() ? p.grad().reshape({-1}) : torch::zeros({p.numel()}, p.options()));
    }
    slot.reduce_bucket = {torch::cat(flat)};
    slot.pending_reduce =
        transport_->StartAllReduce(rank, schedule_.placement[a.stage], a.stage, BatchOf(rank, a),
                                   &slot.reduce_bucket, options_.recv_timeout, abort_);
  }

  // Every gradient of the rank's stages is final: sum tied copies, clip.
  void SyncGradients(int rank) {
    std::map<int, StageImpl*> stages;
    for (auto& [s, slot] : slots_[rank]) {
      FinishAllReduce(slot);
      stages[s] = slot.student.get();
    }
    sync_->Finish(rank, current_[rank], stages, *transport_, options_.recv_timeout, abort_);
  }

  // Puts a finished all-reduce's sums into the stage's gradients.
  void FinishAllReduce(StageSlot& slot) {
    if (!slot.pending_reduce) return;
    slot.pending_reduce->Wait(options_.recv_timeout);
    slot.pending_reduce.reset();
    // Copies, not views of the bucket: the optimizer's zero_grad detaches
    // gradients in place, which views do not allow.
    int64_t offset = 0;
    for (torch::Tensor& p : slot.student->parameters()) {
      p.mutable_grad() = slot.reduce_bucket[0].slice(0, offset, offset + p.numel()).view_as(p).clone();
      offset += p.numel();
    }
    slot.reduce_bucket.clear();
  }

  void TeacherUpdate(int rank, const Action& a) {
    StageSlot& slot = Slot(rank, a.stage);
    const int step = static_cast<int>(current_[rank]) + 1;
    if (!schedule_.workload.independent_replicas) {
      algorithm_->UpdateTeacher(a.stage, *slot.student, *slot.teacher, step);
      return;
    }
    // Models teaching each other: at exchange steps every replica of the
    // stage sends its student's state to the others, which load it into
    // their copies of it; in between the copies stay as they are.
    if (!algorithm_->ExchangesAt(step)) return;
    const std::vector<int>& group = schedule_.placement[a.stage];
    std::vector<std::vector<torch::Tensor>> parts =
        transport_->AllGather(rank, group, a.stage, BatchOf(rank, a), StageState(*slot.student),
                              options_.recv_timeout, abort_);
    const int own = schedule_.ReplicaIndex(a.stage, rank);
    parts.erase(parts.begin() + own);
    LoadPeerCopies(*slot.teacher, parts);
  }

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

Executor::Executor(Schedule schedule, std::vector<Stage> student,
                             std::vector<Stage> teacher, Algorithm* algorithm,
                             ExecutorOptions options)
    : impl_(std::make_unique<Impl>(std::move(schedule), std::move(student), std::move(teacher),
                                   algorithm, std::move(options))) {}

Executor::~Executor() = default;

std::vector<StepResult> Executor::Run(const std::vector<Batch>& batches,
                                           const Batch* after) {
  return impl_->Run(batches, after);
}

StepResult Executor::Step(const Batch& batch, const Batch* next) {
  return impl_->Run({batch}, next)[0];
}

void Executor::set_record_trace(bool on) { impl_->set_record_trace(on); }
std::vector<TraceEvent> Executor::TakeTrace() { return impl_->TakeTrace(); }
std::map<std::string, int64_t> Executor::TakeMemoryPeaks() { return impl_->TakeMemoryPeaks(); }
const Schedule& Executor::schedule() const { return impl_->schedule(); }
const std::string& Executor::update_policy() const { return impl_->update_policy(); }
int Executor::steps_done() const { return impl_->steps_done(); }
Executor::SavedState Executor::SaveState() const { return impl_->SaveState(); }
void Executor::LoadState(const SavedState& state) { impl_->LoadState(state); }

}  // namespace tspipe
