// The Trainer: builds a run from a TrainConfig (the recipe's models, the
// cut, the schedule, the transport, the executor, the data) and trains,
// evaluates and writes models. Checkpoints: trainer_checkpoint.cc;
// optimizers: optimizer.h; data: batch_stream.h; planning: planning.h.
#include "engine/trainer.h"

#include <algorithm>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "backends/grad_sync.h"
#include "io/file_util.h"
#include "core/lowering.h"
#include "core/scheduler.h"
#include "core/simulator.h"
#include "core/validator.h"
#include "engine/devices.h"
#include "engine/fingerprint.h"
#include "engine/model_files.h"
#include "engine/optimizer.h"
#include "engine/planning.h"
#include "engine/trainer_impl.h"
#include "engine/world.h"

namespace tspipe {
namespace {

// Where the cut put each tied pair: (stage, index in its parameters()).
std::vector<TiedGradient> ResolveTies(
    const std::vector<std::pair<torch::Tensor, torch::Tensor>>& ties,
    const std::vector<Stage>& stages) {
  auto find = [&](const torch::Tensor& t, int* stage, int* index) {
    if (!t.requires_grad()) {
      throw std::logic_error("the recipe ties a parameter that does not train");
    }
    for (size_t s = 0; s < stages.size(); ++s) {
      const std::vector<torch::Tensor> params = stages[s]->parameters();
      for (size_t i = 0; i < params.size(); ++i) {
        if (params[i].is_same(t)) {
          *stage = static_cast<int>(s);
          *index = static_cast<int>(i);
          return;
        }
      }
    }
    throw std::logic_error("the recipe ties a tensor that is not a student parameter");
  };
  std::vector<TiedGradient> out;
  for (const auto& [a, b] : ties) {
    TiedGradient t;
    find(a, &t.first_stage, &t.first_index);
    find(b, &t.second_stage, &t.second_index);
    out.push_back(t);
  }
  return out;
}

}  // namespace

Trainer::Impl::Impl(const TrainConfig& config) : config_(config) {
  ConfiguredRecipe r = ConfigureRecipe(config.algorithm, config.algorithm_options);
  recipe_ = std::move(r.recipe);
  recipe_options_ = r.options;
  num_models_ = recipe_->num_models();
  CheckMicrobatches(config, num_models_);
  algorithm_ = recipe_->MakeAlgorithm();
  algorithm_->SetTrainingLength(config.total_steps);
  BuildModels();
  ExecutorOptions eo;
  std::vector<Stage> teacher_stages;
  Schedule schedule = BuildPlan(&eo, &teacher_stages);
  Connect(schedule, &eo);
  // Each model's device per stage (its replica's rank), for parameterless
  // stages.
  const int stages = schedule.num_stages;
  std::vector<std::vector<torch::Device>> placed(num_models_);
  for (int g = 0; g < num_models_; ++g) {
    for (int s = 0; s < stages; ++s) {
      const int rank = schedule.placement[s][num_models_ > 1 ? g : 0];
      placed[g].push_back(eo.devices.empty() ? torch::Device(torch::kCPU) : eo.devices[rank]);
    }
  }
  eo.update_policy = config.update_policy;
  eo.make_optimizer = MakeOptimizerFactory(config);
  eo.before_step = MakeStepSchedule(config);
  eo.clip_grad_norm = config.clip_grad_norm;
  std::vector<std::vector<Stage>> model_stages{stages_};
  for (const auto& r : eo.student_replicas) model_stages.push_back(r);
  executor_ = std::make_unique<Executor>(std::move(schedule), stages_, std::move(teacher_stages),
                                         algorithm_.get(), eo);
  // Evaluation runs each block where the executor put its stage.
  block_devices_.resize(num_models_);
  for (int g = 0; g < num_models_; ++g) {
    for (int s = 0; s < stages; ++s) {
      std::vector<torch::Tensor> params = model_stages[g][s]->parameters();
      const torch::Device d = params.empty() ? placed[g][s] : params[0].device();
      for (int b = 0; b < model_stages[g][s]->num_blocks(); ++b) block_devices_[g].push_back(d);
    }
  }
  MakeData();
}

void Trainer::Impl::BuildModels() {
  const TeacherKind kind = algorithm_->workload().teacher;
  if (!config_.teacher_checkpoint.empty() && kind != TeacherKind::kFrozen) {
    throw std::invalid_argument(
        "algorithm " + config_.algorithm + " has no pre-trained teacher to load from " +
        config_.teacher_checkpoint +
        (kind == TeacherKind::kMomentum
             ? " (its teacher follows the student; load the student with initial_checkpoint)"
             : ""));
  }
  torch::manual_seed(config_.seed);
  models_ = recipe_->BuildModels();
  if (num_models_ > 1) {
    // Models that teach each other: each its own initial values, each
    // model's teacher copies of the others.
    if (kind != TeacherKind::kPeers || models_.teacher) {
      throw std::logic_error("recipe " + config_.algorithm + " trains " +
                             std::to_string(num_models_) +
                             " models but its algorithm has no peer teachers (or the recipe "
                             "built a teacher itself)");
    }
    if (!config_.initial_checkpoint.empty()) {
      throw std::invalid_argument("algorithm " + config_.algorithm + " trains " +
                                  std::to_string(num_models_) +
                                  " models; loading one initial student does not apply");
    }
    std::vector<BlockList> students{models_.student_blocks};
    for (int g = 1; g < num_models_; ++g) {
      peers_.push_back(recipe_->BuildModels());
      students.push_back(peers_.back().student_blocks);
    }
    std::vector<BlockList> teachers = MakePeerTeachers(students);
    models_.teacher_blocks = teachers[0];
    for (int g = 1; g < num_models_; ++g) peers_[g - 1].teacher_blocks = teachers[g];
  } else if ((kind != TeacherKind::kNone) != static_cast<bool>(models_.teacher)) {
    // The workload says whether there is a teacher; the recipe supplies it.
    throw std::logic_error("recipe " + config_.algorithm +
                           (models_.teacher ? " built a teacher its algorithm does not use"
                                            : " built no teacher for its algorithm"));
  }
  if (!config_.initial_checkpoint.empty()) {
    LoadModelFile(config_.initial_checkpoint, "student", models_.student_shape, *models_.student,
                  models_.adapt_student_file);
    recipe_->StudentLoaded(models_);
  }
  if (!config_.teacher_checkpoint.empty()) {
    LoadModelFile(config_.teacher_checkpoint, "teacher", models_.teacher_shape, *models_.teacher,
                  models_.adapt_teacher_file);
  }
  if (config_.dtype == "float64") {
    dtype_ = torch::kFloat64;
  } else if (config_.dtype != "float32") {
    throw std::invalid_argument("unknown dtype '" + config_.dtype + "'; use float32 or float64");
  }
  // Tied copies are one parameter: equal from the start, whatever a
  // checkpoint held (the first copy wins).
  for (ModelSet* m : AllModels()) {
    torch::NoGradGuard no_grad;
    for (auto& [first, second] : m->student_ties) second.copy_(first);
  }
  if (dtype_ != torch::kFloat32) {
    for (ModelSet* m : AllModels()) {
      for (const Block& b : m->student_blocks) b->to(dtype_);
      for (const Block& b : m->teacher_blocks) b->to(dtype_);
    }
  }
}

Schedule Trainer::Impl::BuildPlan(ExecutorOptions* eo, std::vector<Stage>* teacher_stages) {
  Workload workload = algorithm_->workload();
  const Cut cut =
      ResolveCut(recipe_->cut_rule(), config_.algorithm, config_.stages,
                 static_cast<int>(models_.student_blocks.size()),
                 static_cast<int>(models_.teacher_blocks.size()), workload.has_teacher(),
                 config_.balance, config_.teacher_balance);
  stages_ = Partition(models_.student_blocks, cut.student);
  if (workload.has_teacher()) *teacher_stages = Partition(models_.teacher_blocks, cut.teacher);
  for (const ModelSet& m : peers_) {
    eo->student_replicas.push_back(Partition(m.student_blocks, cut.student));
    eo->teacher_replicas.push_back(Partition(m.teacher_blocks, cut.teacher));
  }
  // Tied parameters and clipping are cross-rank steps of the schedule: the
  // lowering inserts them where the cut put the copies.
  eo->tied_gradients = ResolveTies(models_.student_ties, stages_);
  workload.tied_stages = TiedStages(eo->tied_gradients);
  workload.clip_gradients = config_.clip_grad_norm > 0;
  SchedulerOptions so;
  so.num_stages = cut.stages;
  so.num_devices = DevicesFor(config_.scheduler, recipe_->cut_rule(), config_.stages);
  so.num_microbatches = config_.microbatches;
  so.workload = workload;
  // Measured stage costs (PlanBalance), when given, let cost-driven
  // schedulers (TSPipe's list scheduling) plan with the real ones.
  so.costs.forward_per_stage = config_.forward_ms;
  so.costs.backward_per_stage = config_.backward_ms;
  so.costs.teacher_forward_per_stage = config_.teacher_ms;
  Schedule schedule = BuildSchedule(config_.scheduler, so);
  if (num_models_ > 1) {
    // One pipeline per model on ranks of its own.
    schedule = ReplicateModels(schedule, num_models_);
    ValidationResult v = Validate(schedule);
    if (!v.ok()) {
      throw std::logic_error("the schedule of " + std::to_string(num_models_) +
                             " models is invalid:\n" + v.ToString());
    }
  }
  // Steady state: Train() runs iterations back to back, as simulated here.
  bubble_ = SimulateSteadyState(schedule, so.costs).bubble_fraction;
  for (int peak : PeakStashes(schedule).student) stash_peak_ = std::max(stash_peak_, peak);
  placement_ = FormatPlacement(schedule);
  devices_ = schedule.num_ranks();
  return schedule;
}

void Trainer::Impl::Connect(const Schedule& schedule, ExecutorOptions* eo) {
  if (config_.world) {
    world_ = config_.world;
    World& world = *world_;
    if (world.world_size() != devices_) {
      throw std::invalid_argument(config_.scheduler + " needs " + std::to_string(devices_) +
                                  " processes (one per rank), but WORLD_SIZE is " +
                                  std::to_string(world.world_size()));
    }
    if (config_.device != world.device()) {
      throw std::invalid_argument("this trainer asks for --device=" + config_.device +
                                  " but its c10d world was joined with " + world.device());
    }
    // The schedule too: measured costs decide TSPipe's action order.
    std::string schedule_csv = ToCsv(schedule);
    std::replace(schedule_csv.begin(), schedule_csv.end(), '\n', ' ');
    world.CheckSameConfig("trainer", Fingerprint(config_, recipe_options_) +
                                         "schedule=" + schedule_csv + "\n");
    rank_ = world.rank();
    // Which models this process holds whole (SaveModel, ExportModel): a
    // stage of model g is on placement[s][g] when the replicas are separate
    // models, on any of its ranks when they are copies (dp).
    for (int g = 0; g < num_models_; ++g) {
      bool whole = true;
      for (const std::vector<int>& ranks : schedule.placement) {
        whole = whole && (num_models_ > 1
                              ? ranks.at(g) == rank_
                              : std::find(ranks.begin(), ranks.end(), rank_) != ranks.end());
      }
      if (whole) models_here_.insert(g);
    }
    transport_ = world.transport();
    local_ranks_ = {rank_};
    eo->local_ranks = {rank_};
    eo->recv_timeout = std::chrono::seconds(config_.peer_timeout_seconds);
    // Only this process's own rank runs here; the others' entries are
    // never used.
    eo->devices.assign(devices_, torch::Device(world.tensor_device()));
  } else {
    eo->devices = RankDevices(config_.device, devices_);
    // Made here rather than by the executor, to read its traffic counts.
    transport_ = MakeLocalTransport(devices_, eo->devices);
    for (int r = 0; r < devices_; ++r) local_ranks_.push_back(r);
  }
  eo->transport = transport_;
  // A c10d world's transport serves every trainer of the process in turn:
  // count only this one's traffic.
  for (int r : local_ranks_) sent_before_ += transport_->bytes_sent(r);
}

void Trainer::Impl::MakeData() {
  DataRequest data;
  data.data = config_.data;
  data.data_dir = config_.data_dir;
  data.batch_size = config_.batch_size;
  data.seed = config_.seed;
  data.train_samples = config_.train_samples;
  data.num_batches = config_.num_batches;
  data.data_threads = config_.data_threads;
  data.skip_bad_images = config_.skip_bad_images;
  data.plain_resize = config_.plain_resize;
  if (data.data != "synthetic") {
    const std::vector<std::string> sets = recipe_->DataSets();
    if (std::find(sets.begin(), sets.end(), data.data) == sets.end()) {
      std::string names = "synthetic";
      for (const std::string& s : sets) names += ", " + s;
      throw std::invalid_argument("unknown data '" + data.data + "' for algorithm " +
                                  config_.algorithm + "; use " + names);
    }
  }
  data_ = std::make_unique<BatchStream>(recipe_->MakeData(data), dtype_);
  // Fails here, not mid-run, when the micro-batches do not divide a batch.
  SplitBatch(data_->Peek(), config_.microbatches);
}

double Trainer::Impl::Train(int steps) {
  std::vector<Batch> run;
  for (int i = 0; i < steps; ++i) {
    run.push_back(data_->Pop());
    tokens_ += recipe_->Tokens(run.back());
  }
  double loss = executor_->Run(run, &data_->Peek()).back().loss;
  steps_ += steps;
  // Under c10d each process knows only its own ranks' share of the loss:
  // the last stage's rank holds all of it in a pipeline (the others 0),
  // each replica its weighted part under dp. The sum is the mini-batch loss.
  loss = SumOverProcesses(loss, {CollectiveId::Kind::kLossSum, 0, executor_->steps_done()});
  // Several models: the losses of all of them were summed; report their mean.
  return loss / num_models_;
}

double Trainer::Impl::SumOverProcesses(double value, const CollectiveId& id) {
  if (!world_) return value;
  std::vector<int> world(world_->world_size());
  std::iota(world.begin(), world.end(), 0);
  std::vector<torch::Tensor> sum{
      torch::tensor({value}, torch::kFloat64).to(torch::Device(world_->tensor_device()))};
  std::atomic<bool> never{false};
  transport_->AllReduce(rank_, world, id, &sum, std::chrono::seconds(config_.peer_timeout_seconds),
                        never);
  return sum[0].item<double>();
}

Metrics Trainer::Impl::Evaluate(int train_limit, int test_limit) {
  if (world_) {
    throw std::logic_error("evaluation needs the single-process backend (each c10d process "
                           "trains only its own stages)");
  }
  EvalRequest request;
  request.train_limit = train_limit;
  request.test_limit = test_limit;
  request.data_dir = config_.data_dir;
  request.data = config_.data;
  request.eval_dir = config_.eval_dir;
  request.data_threads = config_.data_threads;
  request.skip_bad_images = config_.skip_bad_images;
  request.plain_resize = config_.plain_resize;
  EvalContext context(
      num_models_,
      [this](const Activation& input, int num_blocks, int model) {
        if (model < 0 || model >= num_models_) {
          throw std::invalid_argument("no model " + std::to_string(model) + " of " +
                                      std::to_string(num_models_));
        }
        const BlockList& blocks = Model(model).student_blocks;
        torch::NoGradGuard no_grad;
        const int n = num_blocks < 0 ? static_cast<int>(blocks.size()) : num_blocks;
        Activation x = input;
        for (int b = 0; b < n; ++b) {
          x = blocks.at(b)->Forward(ToDevice(x, block_devices_.at(model).at(b)));
        }
        return x;
      },
      request);
  // Eval mode: batch norm uses its running statistics.
  auto set_mode = [&](bool train) {
    for (int g = 0; g < num_models_; ++g) {
      for (const Block& b : Model(g).student_blocks) b->train(train);
    }
  };
  set_mode(false);
  Metrics metrics;
  try {
    metrics = recipe_->Evaluate(context);
  } catch (...) {
    set_mode(true);
    throw;
  }
  set_mode(true);
  return metrics;
}

void Trainer::Impl::RequireWholeModel(const char* what, int model) const {
  if (model < 0 || model >= num_models_) {
    throw std::invalid_argument("no model " + std::to_string(model) + " of " +
                                std::to_string(num_models_));
  }
  if (world_ && !models_here_.count(model)) {
    throw std::logic_error(std::string(what) + " " + std::to_string(model) +
                           " needs the single-process backend: this c10d process (rank " +
                           std::to_string(rank_) + ") holds only its own stages");
  }
}

const ModelSet& Trainer::Impl::Model(int model) const {
  return model == 0 ? models_ : peers_.at(model - 1);
}

std::vector<ModelSet*> Trainer::Impl::AllModels() {
  std::vector<ModelSet*> all{&models_};
  for (ModelSet& m : peers_) all.push_back(&m);
  return all;
}

void Trainer::Impl::SaveModel(const std::string& path, int model) {
  RequireWholeModel("saving model", model);
  torch::serialize::OutputArchive archive;
  Model(model).student->save(archive);
  std::ostringstream bytes;
  archive.save_to(bytes);
  WriteFileAtomically(path, bytes.str());
}

void Trainer::Impl::ExportModel(const std::string& path, int model) {
  RequireWholeModel("exporting model", model);
  WriteSafetensors(path, recipe_->ExportTensors(Model(model)),
                   {{"format", "pt"}, {"algorithm", config_.algorithm}});
}

double Trainer::Impl::MaxParameterDifference(const Impl& other) const {
  if (num_models_ != other.num_models_) {
    throw std::invalid_argument("the two runs train different numbers of models");
  }
  double diff = 0;
  for (int g = 0; g < num_models_; ++g) {
    auto a = Model(g).student->parameters(), b = other.Model(g).student->parameters();
    if (a.size() != b.size()) throw std::invalid_argument("the two students differ in shape");
    for (size_t i = 0; i < a.size(); ++i) {
      if (!a[i].sizes().equals(b[i].sizes())) {
        throw std::invalid_argument("the two students differ in shape");
      }
      diff = std::max(diff, (a[i].to(torch::kCPU) - b[i].to(torch::kCPU)).abs().max().item<double>());
    }
  }
  return diff;
}

TraceRun Trainer::Impl::TakeTrace() {
  return {config_.scheduler, executor_->schedule(), executor_->TakeTrace(),
          executor_->TakeMemoryPeaks(), data_->TakeWaits()};
}

double Trainer::Impl::bytes_sent_per_step_per_device() const {
  if (steps_ == 0) return 0;
  int64_t bytes = 0;
  for (int r : local_ranks_) bytes += transport_->bytes_sent(r);
  return static_cast<double>(bytes - sent_before_) / steps_ / local_ranks_.size();
}

Trainer::Trainer(const TrainConfig& config) : impl_(std::make_unique<Impl>(config)) {}
Trainer::~Trainer() = default;
double Trainer::Train(int steps) { return impl_->Train(steps); }
Metrics Trainer::Evaluate(int train_limit, int test_limit) {
  return impl_->Evaluate(train_limit, test_limit);
}
void Trainer::SaveModel(const std::string& path, int model) { impl_->SaveModel(path, model); }
void Trainer::ExportModel(const std::string& path, int model) { impl_->ExportModel(path, model); }
double Trainer::MaxParameterDifference(const Trainer& other) const {
  return impl_->MaxParameterDifference(*other.impl_);
}
int Trainer::num_devices() const { return impl_->num_devices(); }
const std::string& Trainer::placement() const { return impl_->placement(); }
int Trainer::rank() const { return impl_->rank(); }
int Trainer::batch_size() const { return impl_->batch_size(); }
int64_t Trainer::train_set_size() const { return impl_->train_set_size(); }
double Trainer::simulated_bubble() const { return impl_->simulated_bubble(); }
int64_t Trainer::tokens_trained() const { return impl_->tokens_trained(); }
int Trainer::stash_peak() const { return impl_->stash_peak(); }
double Trainer::data_wait_seconds() const { return impl_->data_wait_seconds(); }
double Trainer::bytes_sent_per_step_per_device() const {
  return impl_->bytes_sent_per_step_per_device();
}
int Trainer::num_models() const { return impl_->num_models(); }
void Trainer::RecordTrace(bool on) { impl_->RecordTrace(on); }
void Trainer::SaveCheckpoint(const std::string& dir, int keep) { impl_->SaveCheckpoint(dir, keep); }
int64_t Trainer::Resume(const std::string& dir, std::vector<std::string>* skipped) {
  return impl_->Resume(dir, skipped);
}
int64_t Trainer::steps_done() const { return impl_->steps_done(); }
TraceRun Trainer::TakeTrace() { return impl_->TakeTrace(); }

double Trainer::MeasureSamplesPerSecond(int steps) {
  Train(steps);  // Warm-up (and the teacher prologue).
  const auto start = std::chrono::steady_clock::now();
  Train(steps);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return steps * batch_size() / secs;
}

void SetIntraOpThreads(int threads) { at::set_num_threads(threads); }

}  // namespace tspipe
