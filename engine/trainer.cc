#include "engine/trainer.h"

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "backends/c10d/c10d_transport.h"
#include "backends/executor.h"
#include "core/balance.h"
#include "core/file_util.h"
#include "core/scheduler.h"
#include "core/simulator.h"
#include "engine/devices.h"
#include "engine/profile.h"
#include "engine/recipe.h"

namespace tspipe {
namespace {

// A configured recipe and the canonical text of its options.
struct ConfiguredRecipe {
  std::unique_ptr<Recipe> recipe;
  std::string options;
};

std::unique_ptr<Recipe> CreateRecipe(const std::string& name) {
  if (!RecipeRegistry::Global().Contains(name)) {
    std::string names;
    for (const std::string& n : RecipeRegistry::Global().Names()) {
      names += (names.empty() ? "" : ", ") + n;
    }
    throw std::invalid_argument("unknown algorithm '" + name + "'; choices: " + names);
  }
  return RecipeRegistry::Global().Create(name);
}

ConfiguredRecipe Configure(const std::string& name, const std::string& options) {
  ConfiguredRecipe c;
  c.recipe = CreateRecipe(name);
  OptionValues values = ParseOptions(name, c.recipe->Options(), options);
  c.recipe->Configure(values);
  c.options = values.Canonical();
  return c;
}

// What every rank of a c10d run must agree on, one setting per line.
std::string Fingerprint(const TrainConfig& c, const std::string& recipe_options) {
  std::ostringstream out;
  out << "scheduler=" << c.scheduler << "\nalgorithm=" << c.algorithm << "\nstages=" << c.stages
      << "\nmicrobatches=" << c.microbatches << "\nbatch_size=" << c.batch_size
      << "\nbalance=" << FormatBalance(c.balance)
      << "\nteacher_balance=" << FormatBalance(c.teacher_balance)
      << "\nupdate_policy=" << c.update_policy << "\nseed=" << c.seed << "\ndata=" << c.data
      << "\ndata_dir=" << c.data_dir << "\ntrain_samples=" << c.train_samples
      << "\nnum_batches=" << c.num_batches << "\nlearning_rate=" << c.learning_rate
      << "\nmomentum=" << c.momentum << "\nweight_decay=" << c.weight_decay
      << "\ntotal_steps=" << c.total_steps << "\nteacher_checkpoint=" << c.teacher_checkpoint
      << "\ninitial_checkpoint=" << c.initial_checkpoint
      << "\nsteps_per_iteration=" << c.steps_per_iteration << "\n";
  // The recipe's part: its options, each on a line of its own.
  std::istringstream options(recipe_options);
  for (std::string line; std::getline(options, line);) out << c.algorithm << "." << line << "\n";
  return out.str();
}

// Loads a SaveModel checkpoint into `model` (the `what` of this run, of
// shape `shape`), with messages that say which file and which shape.
void LoadModel(const std::string& path, const std::string& what, const std::string& shape,
               torch::nn::Module& model) {
  // Read first, so a missing file gets tspipe's message rather than the
  // archive's.
  std::string bytes;
  try {
    bytes = ReadFile(path);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(what + " checkpoint: " + e.what() +
                             " (train and save one with //benchmarks:kd_accuracy)");
  }
  const std::string misfit =
      what + " checkpoint " + path + " does not fit the " + what + " (" + shape + "): ";
  // Module::load replaces tensors wholesale without comparing shapes, so the
  // shapes are checked here.
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& p : model.named_parameters()) shapes[p.key()] = p.value().sizes().vec();
  for (const auto& b : model.named_buffers()) shapes[b.key()] = b.value().sizes().vec();
  try {
    std::istringstream in(bytes);
    torch::serialize::InputArchive archive;
    archive.load_from(in, torch::Device(torch::kCPU));
    model.load(archive);
  } catch (const c10::Error& e) {
    throw std::invalid_argument(misfit + e.what_without_backtrace());
  }
  auto check = [&](const std::string& name, const torch::Tensor& t) {
    const std::vector<int64_t>& want = shapes.at(name);
    if (t.sizes().vec() != want) {
      throw std::invalid_argument(misfit + name + " has shape " + c10::str(t.sizes()) +
                                  " in the file but " + c10::str(c10::IntArrayRef(want)) +
                                  " in the model");
    }
  };
  for (const auto& p : model.named_parameters()) check(p.key(), p.value());
  for (const auto& b : model.named_buffers()) check(b.key(), b.value());
}

void CheckMicrobatches(const TrainConfig& c) {
  if (c.batch_size < 1) {
    throw std::invalid_argument("batch size must be at least 1, got " +
                                std::to_string(c.batch_size));
  }
  if (c.microbatches < 1 || c.batch_size % c.microbatches != 0) {
    throw std::invalid_argument(std::to_string(c.microbatches) +
                                " micro-batches do not divide the batch of " +
                                std::to_string(c.batch_size) + " samples");
  }
}

CutSearch SearchFor(const TrainConfig& c, const Recipe& recipe, const Algorithm& algorithm) {
  CutSearch s;
  s.scheduler = c.scheduler;
  s.stages = c.stages;
  s.microbatches = c.microbatches;
  s.workload = algorithm.workload();
  s.rule = recipe.cut_rule();
  s.teacher_cut = c.teacher_balance;
  return s;
}

std::string EncodeCosts(const BlockCosts& c) {
  std::ostringstream out;
  out.precision(17);
  for (const std::vector<double>* v : {&c.student_forward, &c.student_backward, &c.teacher_forward}) {
    out << v->size();
    for (double x : *v) out << ' ' << x;
    out << '\n';
  }
  return out.str();
}

BlockCosts DecodeCosts(const std::string& text) {
  std::istringstream in(text);
  BlockCosts c;
  for (std::vector<double>* v : {&c.student_forward, &c.student_backward, &c.teacher_forward}) {
    size_t n = 0;
    in >> n;
    v->resize(n);
    for (double& x : *v) in >> x;
  }
  return c;
}

BlockCosts Measure(const TrainConfig& c) {
  CheckMicrobatches(c);
  ConfiguredRecipe r = Configure(c.algorithm, c.algorithm_options);
  std::unique_ptr<Algorithm> algorithm = r.recipe->MakeAlgorithm();
  const torch::Device device = FirstDevice(c.device);
  // Profiling changes batch-norm statistics: use throw-away models.
  torch::manual_seed(c.seed);
  ModelSet models = r.recipe->BuildModels();
  const Activation input = r.recipe->ExampleInput(c.batch_size / c.microbatches);
  BlockCosts costs;
  BlockTimes student = ProfileBlocks(models.student_blocks, input, device,
                                     /*with_backward=*/true, /*train_mode=*/true);
  costs.student_forward = student.forward;
  costs.student_backward = student.backward;
  if (algorithm->workload().has_teacher) {
    costs.teacher_forward = ProfileBlocks(models.teacher_blocks, input, device,
                                          /*with_backward=*/false,
                                          algorithm->TeacherInTrainMode())
                                .forward;
  }
  return costs;
}

}  // namespace

double MetricValue(const Metrics& metrics, const std::string& name) {
  std::string names;
  for (const auto& [n, v] : metrics) {
    if (n == name) return v;
    names += (names.empty() ? "" : ", ") + n;
  }
  throw std::invalid_argument("the evaluation reports no '" + name + "' (it reports: " +
                              (names.empty() ? "nothing" : names) + ")");
}

class Trainer::Impl {
 public:
  explicit Impl(const TrainConfig& config) : config_(config) {
    ConfiguredRecipe r = Configure(config.algorithm, config.algorithm_options);
    recipe_ = std::move(r.recipe);
    recipe_options_ = r.options;
    CheckMicrobatches(config);
    algorithm_ = recipe_->MakeAlgorithm();
    algorithm_->SetTrainingLength(config.total_steps);
    const Workload workload = algorithm_->workload();
    const CutRule rule = recipe_->cut_rule();
    if (!config.teacher_checkpoint.empty() &&
        algorithm_->teacher_kind() != TeacherKind::kFrozen) {
      throw std::invalid_argument(
          "algorithm " + config.algorithm + " has no pre-trained teacher to load from " +
          config.teacher_checkpoint +
          (algorithm_->teacher_kind() == TeacherKind::kMomentum
               ? " (its teacher follows the student; load the student with initial_checkpoint)"
               : ""));
    }
    torch::manual_seed(config.seed);
    models_ = recipe_->BuildModels();
    if (workload.has_teacher != static_cast<bool>(models_.teacher)) {
      throw std::logic_error("recipe " + config.algorithm +
                             " built a teacher that its algorithm's workload does not match");
    }
    if (!config.initial_checkpoint.empty()) {
      LoadModel(config.initial_checkpoint, "student", models_.student_shape, *models_.student);
      recipe_->StudentLoaded(models_);
    }
    if (!config.teacher_checkpoint.empty()) {
      LoadModel(config.teacher_checkpoint, "teacher", models_.teacher_shape, *models_.teacher);
    }

    // The cut, by the recipe's rule.
    TrainConfig c = config;
    const int devices = DevicesFor(config.scheduler, rule, config.stages);
    std::vector<int> balance = c.balance, tbalance = c.teacher_balance;
    const int student_blocks = static_cast<int>(models_.student_blocks.size());
    const int teacher_blocks = static_cast<int>(models_.teacher_blocks.size());
    if (rule.kind == CutRule::Kind::kOnePerBlock) {
      // Every block pair trains on its own: each is a stage, and the
      // scheduler spreads the stages over --stages devices.
      c.stages = student_blocks;
      const std::vector<int> ones(c.stages, 1);
      for (const auto* cut : {&config.balance, &config.teacher_balance}) {
        if (!cut->empty() && *cut != ones) {
          throw std::invalid_argument(
              "algorithm " + config.algorithm +
              " makes every block a stage; the scheduler chooses the blocks per device, so "
              "--balance/--teacher_balance do not apply (got " + FormatBalance(*cut) + ")");
        }
      }
      balance = ones;
      tbalance = workload.has_teacher ? ones : std::vector<int>{};
    } else if (rule.kind == CutRule::Kind::kShared) {
      const int extra = rule.student_extra_blocks;
      if (balance.empty()) {
        // Even over the teacher's blocks; the extra blocks join the last stage.
        balance = EvenBalance(student_blocks - extra, c.stages);
        balance.back() += extra;
      }
      if (workload.has_teacher) {
        if (balance.back() <= extra) {
          throw std::invalid_argument(
              "balance " + FormatBalance(balance) + " leaves the last stage only the " +
              std::to_string(extra) +
              " student-only block(s); the last stage needs at least one more block");
        }
        std::vector<int> follows = balance;
        follows.back() -= extra;
        if (!tbalance.empty() && tbalance != follows) {
          throw std::invalid_argument("algorithm " + config.algorithm +
                                      " cuts its teacher like its student (" +
                                      FormatBalance(follows) + " for student balance " +
                                      FormatBalance(balance) + "); --teacher_balance " +
                                      FormatBalance(tbalance) + " does not apply");
        }
        tbalance = follows;
      }
    } else {
      if (balance.empty()) balance = EvenBalance(student_blocks, c.stages);
      if (workload.has_teacher && tbalance.empty()) {
        tbalance = EvenBalance(teacher_blocks, c.stages);
      }
    }
    if (static_cast<int>(balance.size()) != c.stages) {
      throw std::invalid_argument("balance " + FormatBalance(balance) + " has " +
                                  std::to_string(balance.size()) + " entries for " +
                                  std::to_string(c.stages) + " stages");
    }
    stages_ = Partition(models_.student_blocks, balance);
    std::vector<Stage> teacher_stages;
    if (workload.has_teacher) {
      if (static_cast<int>(tbalance.size()) != c.stages) {
        throw std::invalid_argument("teacher balance " + FormatBalance(tbalance) + " has " +
                                    std::to_string(tbalance.size()) + " entries for " +
                                    std::to_string(c.stages) + " stages");
      }
      teacher_stages = Partition(models_.teacher_blocks, tbalance);
    }

    SchedulerOptions so;
    so.num_stages = c.stages;
    so.num_devices = devices;
    so.num_microbatches = c.microbatches;
    so.workload = workload;
    // Measured stage costs (PlanBalance), when given, let cost-driven
    // schedulers (TSPipe's list scheduling) plan with the real ones.
    so.costs.forward_per_stage = c.forward_ms;
    so.costs.backward_per_stage = c.backward_ms;
    so.costs.teacher_forward_per_stage = c.teacher_ms;
    Schedule schedule = BuildSchedule(c.scheduler, so);
    // Steady state: Train() runs iterations back to back, as simulated here.
    bubble_ = SimulateSteadyState(schedule, so.costs).bubble_fraction;
    placement_ = FormatPlacement(schedule);
    devices_ = schedule.num_ranks();

    ExecutorOptions eo;
    if (config.world) {
      World& world = *config.world;
      if (world.world_size() != devices_) {
        throw std::invalid_argument(c.scheduler + " needs " + std::to_string(devices_) +
                                    " processes (one per rank), but WORLD_SIZE is " +
                                    std::to_string(world.world_size()));
      }
      if (config.device != world.device()) {
        throw std::invalid_argument("this trainer asks for --device=" + config.device +
                                    " but its c10d world was joined with " + world.device());
      }
      // The schedule too: measured costs decide TSPipe's action order.
      std::string schedule_csv = ToCsv(schedule);
      std::replace(schedule_csv.begin(), schedule_csv.end(), '\n', ' ');
      world.CheckSameConfig("trainer", Fingerprint(config, recipe_options_) +
                                           "schedule=" + schedule_csv + "\n");
      rank_ = world.rank();
      transport_ = world.transport();
      eo.transport = transport_;
      eo.local_ranks = {rank_};
      eo.recv_timeout = std::chrono::seconds(config.peer_timeout_seconds);
      // Only this process's own rank runs here; the others' entries are
      // never used.
      eo.devices.assign(devices_, transport_->device());
    } else {
      eo.devices = RankDevices(config.device, devices_);
    }
    eo.update_policy = config.update_policy;
    std::vector<torch::Device> placed;  // Replica 0's device, for parameterless stages.
    for (int s = 0; s < c.stages; ++s) {
      const int rank = schedule.placement[s][0];
      placed.push_back(eo.devices.empty() ? torch::Device(torch::kCPU) : eo.devices[rank]);
    }
    const double lr = config.learning_rate, momentum = config.momentum, wd = config.weight_decay;
    eo.make_optimizer = [lr, momentum, wd](std::vector<torch::Tensor> params) {
      return std::unique_ptr<torch::optim::Optimizer>(new torch::optim::SGD(
          params, torch::optim::SGDOptions(lr).momentum(momentum).weight_decay(wd)));
    };
    executor_ = std::make_unique<Executor>(std::move(schedule), stages_, std::move(teacher_stages),
                                           algorithm_.get(), eo);
    // Evaluation runs each block where the executor put its stage.
    for (int s = 0; s < c.stages; ++s) {
      std::vector<torch::Tensor> params = stages_[s]->parameters();
      const torch::Device d = params.empty() ? placed[s] : params[0].device();
      for (int b = 0; b < stages_[s]->num_blocks(); ++b) block_devices_.push_back(d);
    }
    DataRequest data;
    data.data = config.data;
    data.data_dir = config.data_dir;
    data.batch_size = config.batch_size;
    data.seed = config.seed;
    data.train_samples = config.train_samples;
    data.num_batches = config.num_batches;
    if (data.data != "synthetic") {
      const std::vector<std::string> sets = recipe_->DataSets();
      if (std::find(sets.begin(), sets.end(), data.data) == sets.end()) {
        std::string names = "synthetic";
        for (const std::string& s : sets) names += ", " + s;
        throw std::invalid_argument("unknown data '" + data.data + "' for algorithm " +
                                    config.algorithm + "; use " + names);
      }
    }
    data_ = recipe_->MakeData(data);
    // Fails here, not mid-run, when the micro-batches do not divide a batch.
    SplitBatch(Peek(), c.microbatches);
  }

  double Train(int steps) {
    std::vector<Batch> run;
    for (int i = 0; i < steps; ++i) run.push_back(Pop());
    double loss = executor_->Run(run, &Peek()).back().loss;
    if (transport_) {
      // Each process knows only its own ranks' share of the loss: the last
      // stage's rank holds all of it in a pipeline (the others 0), each
      // replica its weighted part under dp. The sum is the mini-batch loss.
      std::vector<int> world(transport_->world_size());
      std::iota(world.begin(), world.end(), 0);
      std::vector<torch::Tensor> sum{
          torch::tensor({loss}, torch::kFloat64).to(transport_->device())};
      std::atomic<bool> never{false};
      transport_->AllReduce(rank_, world, /*stage=*/-1, executor_->steps_done(), &sum,
                            std::chrono::seconds(config_.peer_timeout_seconds), never);
      loss = sum[0].item<double>();
    }
    return loss;
  }

  Metrics Evaluate(int train_limit, int test_limit) {
    if (transport_) {
      throw std::logic_error("evaluation needs the single-process backend (each c10d process "
                             "trains only its own stages)");
    }
    EvalRequest request;
    request.train_limit = train_limit;
    request.test_limit = test_limit;
    request.data_dir = config_.data_dir;
    const BlockList& blocks = models_.student_blocks;
    EvalContext context(
        models_,
        [this, &blocks](const Activation& input, int num_blocks) {
          torch::NoGradGuard no_grad;
          const int n = num_blocks < 0 ? static_cast<int>(blocks.size()) : num_blocks;
          Activation x = input;
          for (int b = 0; b < n; ++b) {
            x = blocks.at(b)->Forward(ToDevice(x, block_devices_.at(b)));
          }
          return x;
        },
        request);
    // Eval mode: batch norm uses its running statistics.
    for (const Block& b : blocks) b->eval();
    Metrics metrics;
    try {
      metrics = recipe_->Evaluate(context);
    } catch (...) {
      for (const Block& b : blocks) b->train();
      throw;
    }
    for (const Block& b : blocks) b->train();
    return metrics;
  }

  void SaveModel(const std::string& path) {
    torch::serialize::OutputArchive archive;
    models_.student->save(archive);
    std::ostringstream bytes;
    archive.save_to(bytes);
    WriteFileAtomically(path, bytes.str());
  }

  double MaxParameterDifference(const Impl& other) const {
    auto a = models_.student->parameters(), b = other.models_.student->parameters();
    if (a.size() != b.size()) throw std::invalid_argument("the two students differ in shape");
    double diff = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!a[i].sizes().equals(b[i].sizes())) {
        throw std::invalid_argument("the two students differ in shape");
      }
      diff = std::max(diff, (a[i].to(torch::kCPU) - b[i].to(torch::kCPU)).abs().max().item<double>());
    }
    return diff;
  }

  int num_devices() const { return devices_; }
  const std::string& placement() const { return placement_; }
  int rank() const { return rank_; }
  int batch_size() const { return config_.batch_size; }
  int64_t train_set_size() const { return data_->size(); }
  double simulated_bubble() const { return bubble_; }

 private:
  // The executor looks one batch ahead (TSPipe's teacher forwards), so the
  // next batch is drawn before it is trained on.
  const Batch& Peek() {
    if (ahead_.empty()) ahead_.push_back(data_->Next());
    return ahead_.front();
  }

  Batch Pop() {
    Peek();
    Batch b = std::move(ahead_.front());
    ahead_.pop_front();
    return b;
  }

  TrainConfig config_;
  std::unique_ptr<Recipe> recipe_;
  std::string recipe_options_;
  std::unique_ptr<Algorithm> algorithm_;
  ModelSet models_;
  std::vector<Stage> stages_;
  // Device of each student block, for evaluation.
  std::vector<torch::Device> block_devices_;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<BatchSource> data_;
  std::deque<Batch> ahead_;
  int devices_ = 1;
  std::string placement_;
  int rank_ = 0;
  // The c10d world's transport; null when local.
  std::shared_ptr<C10dTransport> transport_;
  double bubble_ = 0;
};

Trainer::Trainer(const TrainConfig& config) : impl_(std::make_unique<Impl>(config)) {}
Trainer::~Trainer() = default;
double Trainer::Train(int steps) { return impl_->Train(steps); }
Metrics Trainer::Evaluate(int train_limit, int test_limit) {
  return impl_->Evaluate(train_limit, test_limit);
}
void Trainer::SaveModel(const std::string& path) { impl_->SaveModel(path); }
double Trainer::MaxParameterDifference(const Trainer& other) const {
  return impl_->MaxParameterDifference(*other.impl_);
}
int Trainer::num_devices() const { return impl_->num_devices(); }
const std::string& Trainer::placement() const { return impl_->placement(); }
int Trainer::rank() const { return impl_->rank(); }
int Trainer::batch_size() const { return impl_->batch_size(); }
int64_t Trainer::train_set_size() const { return impl_->train_set_size(); }
double Trainer::simulated_bubble() const { return impl_->simulated_bubble(); }

double Trainer::MeasureSamplesPerSecond(int steps) {
  Train(steps);  // Warm-up (and the teacher prologue).
  const auto start = std::chrono::steady_clock::now();
  Train(steps);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return steps * batch_size() / secs;
}

BlockCosts MeasureBlockCosts(const TrainConfig& c) {
  if (!c.world) return Measure(c);
  // Timings differ between processes; rank 0 measures for everyone.
  return DecodeCosts(
      c.world->ShareFromRankZero("costs", c.world->rank() == 0 ? EncodeCosts(Measure(c)) : ""));
}

std::vector<BalancePlan> PlanBalances(const TrainConfig& c, const BlockCosts& costs,
                                      int max_plans, double tolerance) {
  ConfiguredRecipe r = Configure(c.algorithm, c.algorithm_options);
  std::unique_ptr<Algorithm> algorithm = r.recipe->MakeAlgorithm();
  return PlanBalances(SearchFor(c, *r.recipe, *algorithm), costs, max_plans, tolerance);
}

BalancePlan PlanBalance(const TrainConfig& config) {
  return PlanBalances(config, MeasureBlockCosts(config), 1, 0).front();
}

void ApplyPlan(const BalancePlan& plan, TrainConfig* config) {
  config->balance = plan.student;
  config->teacher_balance = plan.teacher;
  config->forward_ms = plan.forward_ms;
  config->backward_ms = plan.backward_ms;
  config->teacher_ms = plan.teacher_ms;
}

std::vector<double> TimePlans(const TrainConfig& config, const std::vector<BalancePlan>& plans,
                              int steps, int rounds) {
  std::vector<std::unique_ptr<Trainer>> trials;
  for (const BalancePlan& plan : plans) {
    TrainConfig trial = config;
    ApplyPlan(plan, &trial);
    trials.push_back(std::make_unique<Trainer>(trial));
  }
  std::vector<double> rate(plans.size(), 0.0);
  for (int round = 0; round < rounds; ++round) {
    for (size_t i = 0; i < plans.size(); ++i) {
      rate[i] = std::max(rate[i], trials[i]->MeasureSamplesPerSecond(steps));
    }
  }
  return rate;
}

void SetIntraOpThreads(int threads) { at::set_num_threads(threads); }

std::vector<std::string> SchedulerNames() { return SchedulerRegistry::Global().Names(); }
std::string DescribeSchedulers() { return SchedulerRegistry::Global().Describe(); }
std::vector<std::string> RecipeNames() { return RecipeRegistry::Global().Names(); }
std::string DescribeRecipes() { return RecipeRegistry::Global().Describe(); }

std::string RecipeOptionsHelp(const std::string& algorithm) {
  return "Options of " + algorithm + " (--algorithm_options=name=value,...):\n" +
         DescribeOptions(CreateRecipe(algorithm)->Options());
}

std::string CheckRecipeOptions(const std::string& algorithm, const std::string& options) {
  return Configure(algorithm, options).options;
}

std::string RecipeOptionValue(const std::string& algorithm, const std::string& options,
                              const std::string& name) {
  const std::string canonical = CheckRecipeOptions(algorithm, options);
  std::istringstream in(canonical);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + "=", 0) == 0) return line.substr(name.size() + 1);
  }
  throw std::invalid_argument(algorithm + " has no option '" + name + "'");
}

}  // namespace tspipe
