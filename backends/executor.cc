// The executor's setup and run loop; the handlers live by family in
// executor_compute.cc, executor_loss.cc and executor_comm.cc
// (backends/executor_impl.h).
#include "backends/executor.h"

#include <c10/core/DeviceGuard.h>

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "backends/executor_impl.h"
#include "core/update_policy.h"
#include "core/validator.h"

namespace tspipe {

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

Executor::Impl::Impl(Schedule schedule, std::vector<Stage> student, std::vector<Stage> teacher,
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
  PlaceStages(student, teacher);
  prologue_ = TeacherPrologue(schedule_);
  FillHandlers();
}

void Executor::Impl::FillHandlers() {
  handlers_.fill(nullptr);
  auto set = [this](Op op, Handler h) { handlers_[static_cast<int>(op)] = h; };
  set(Op::kForward, &Impl::Forward);
  set(Op::kTeacherForward, &Impl::TeacherForward);
  set(Op::kBackward, &Impl::Backward);
  set(Op::kBackwardInput, &Impl::BackwardInput);
  set(Op::kBackwardWeight, &Impl::BackwardWeight);
  set(Op::kLoss, &Impl::Loss);
  set(Op::kSendActivation, &Impl::SendActivation);
  set(Op::kRecvActivation, &Impl::RecvActivation);
  set(Op::kSendTeacherActivation, &Impl::SendTeacherActivation);
  set(Op::kRecvTeacherActivation, &Impl::RecvTeacherActivation);
  set(Op::kSendGradient, &Impl::SendGradient);
  set(Op::kRecvGradient, &Impl::RecvGradient);
  set(Op::kAllReduceGradients, &Impl::AllReduceGradients);
  set(Op::kSumTiedGradients, &Impl::SumTiedGradients);
  set(Op::kClipGradients, &Impl::ClipGradients);
  set(Op::kOptimizerStep, &Impl::OptimizerStep);
  set(Op::kTeacherUpdate, &Impl::TeacherUpdate);
}

void Executor::Impl::PlaceStages(const std::vector<Stage>& student,
                                 const std::vector<Stage>& teacher) {
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
}

void Executor::Impl::CheckCompatible(const std::vector<Stage>& student,
                                     const std::vector<Stage>& teacher) {
  // Every schedule, built or loaded, meets the validator's rules (posting
  // order included, so any transport runs it).
  ValidationResult v = Validate(schedule_);
  if (!v.ok()) throw std::invalid_argument("invalid schedule:\n" + v.ToString());
  const int n = schedule_.num_stages;
  if (static_cast<int>(student.size()) != n) {
    throw std::invalid_argument("schedule has " + std::to_string(n) +
                                " stages but the student has " + std::to_string(student.size()));
  }
  if (schedule_.workload.has_teacher() && static_cast<int>(teacher.size()) != n) {
    throw std::invalid_argument("schedule has " + std::to_string(n) +
                                " stages but the teacher has " + std::to_string(teacher.size()));
  }
  if (algorithm_ == nullptr) throw std::invalid_argument("no algorithm given");
  const Workload w = algorithm_->workload();
  if (w.teacher != schedule_.workload.teacher || w.local_losses != schedule_.workload.local_losses ||
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
  }
  if (options_.update_policy.empty()) {
    policy_ = NaturalPolicy(schedule_);
    if (policy_.empty()) {
      throw std::invalid_argument("schedule '" + schedule_.scheduler +
                                  "' gives its teacher forwards no consistent target version");
    }
  } else {
    std::unique_ptr<UpdatePolicy> policy =
        UpdatePolicyRegistry::Global().Create(options_.update_policy);
    std::string why = CheckPolicy(schedule_, *policy);
    if (!why.empty()) {
      throw std::invalid_argument("scheduler '" + schedule_.scheduler +
                                  "' cannot honour update policy '" + policy->name() +
                                  "': " + why);
    }
    policy_ = policy->name();
  }
}

bool Executor::Impl::TeacherChanges() const {
  return schedule_.workload.teacher != TeacherKind::kFrozen || algorithm_->TeacherInTrainMode();
}

// `batch` in page-locked memory when a rank runs on a GPU, so that the
// non-blocking host-to-device copies of its micro-batches are truly
// asynchronous (from pageable memory they wait for the whole stream). The
// pinned copies live in data_ until the run ends.
Batch Executor::Impl::Staged(const Batch& batch) const {
  if (!any_cuda_) return batch;
  Batch pinned = batch;
  for (Activation* part : {&pinned.inputs, &pinned.targets}) {
    for (torch::Tensor& t : *part) {
      if (t.defined() && t.device().is_cpu()) t = t.pin_memory();
    }
  }
  return pinned;
}

std::vector<StepResult> Executor::Impl::Run(const std::vector<Batch>& batches, const Batch* after) {
  // Recorded runs meter memory on every thread that allocates or frees for
  // them: this one (batches, cleanup) and the ranks'.
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

void Executor::Impl::RunRank(int rank, int iterations) {
  const std::vector<Action>* actions = nullptr;
  size_t i = 0;
  bool flushing = false;
  try {
    c10::DeviceGuard guard(devices_[rank]);
    ActionClock& clock = *clocks_[rank];
    const bool record = record_;
    auto run = [&](const std::vector<Action>& list, int64_t batch, bool main) {
      actions = &list;
      current_[rank] = batch;
      for (auto& [stage, slot] : slots_[rank]) slot.ForgetBefore(batch);
      const TraceEvent::Kind kind = main ? TraceEvent::Kind::kAction : TraceEvent::Kind::kPrologue;
      for (i = 0; i < list.size(); ++i) {
        if (abort_.load()) return false;
        const Action& a = list[i];
        Handler h = handlers_[static_cast<int>(a.op)];
        if (h == nullptr) {
          throw std::logic_error(std::string("the executor has no handler for op ") +
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
    } else {
      msg << " failed at step " << i;
      if (actions != nullptr && i < actions->size()) msg << " (" << ToString((*actions)[i]) << ")";
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

const std::vector<Batch>* Executor::Impl::Data(int rank, int offset) const {
  auto it = data_.find(current_[rank] + offset);
  return it == data_.end() ? nullptr : &it->second;
}

const std::vector<Batch>& Executor::Impl::Current(int rank) const {
  const std::vector<Batch>* d = Data(rank, 0);
  TORCH_CHECK(d != nullptr, "no data for mini-batch ", current_[rank]);
  return *d;
}

std::vector<TraceEvent> Executor::Impl::TakeTrace() {
  std::vector<TraceEvent> out;
  out.swap(trace_);
  return out;
}

std::map<std::string, int64_t> Executor::Impl::TakeMemoryPeaks() {
  std::map<std::string, int64_t> out;
  out.swap(memory_peaks_);
  return out;
}

Executor::Executor(Schedule schedule, std::vector<Stage> student, std::vector<Stage> teacher,
                   Algorithm* algorithm, ExecutorOptions options)
    : impl_(std::make_unique<Impl>(std::move(schedule), std::move(student), std::move(teacher),
                                   algorithm, std::move(options))) {}

Executor::~Executor() = default;

std::vector<StepResult> Executor::Run(const std::vector<Batch>& batches, const Batch* after) {
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
