#include "engine/trainer.h"

#include <torch/torch.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <sstream>
#include <stdexcept>

#include "backends/c10d/c10d_transport.h"
#include "backends/executor.h"
#include "core/balance.h"
#include "core/file_util.h"
#include "core/scheduler.h"
#include "core/simulator.h"
#include "core/validator.h"
#include "engine/checkpoint.h"
#include "engine/devices.h"
#include "engine/model_files.h"
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
      << "\nmomentum=" << c.momentum << "\noptimizer=" << c.optimizer << "\nadam=" << c.adam_beta1
      << "," << c.adam_beta2 << "," << c.adam_eps << "\nwarmup_steps=" << c.warmup_steps
      << "\ndecay_learning_rate=" << c.decay_learning_rate << "\nclip_grad_norm=" << c.clip_grad_norm
      << "\nweight_decay=" << c.weight_decay
      << "\nweight_decay_schedule=" << [&c] {
           std::ostringstream w;
           for (const auto& [step, value] : c.weight_decay_schedule) w << step << ":" << value << ",";
           return w.str();
         }()
      << "\ndtype=" << c.dtype << "\ntotal_steps=" << c.total_steps << "\nteacher_checkpoint=" << c.teacher_checkpoint
      << "\ninitial_checkpoint=" << c.initial_checkpoint
      << "\nsteps_per_iteration=" << c.steps_per_iteration << "\n";
  // The recipe's part: its options, each on a line of its own.
  std::istringstream options(recipe_options);
  for (std::string line; std::getline(options, line);) out << c.algorithm << "." << line << "\n";
  return out.str();
}

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

// One optimizer per stage over its trainable parameters.
std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<torch::Tensor>)>
MakeOptimizerFactory(const TrainConfig& c) {
  if (c.optimizer != "sgd" && c.optimizer != "adamw") {
    throw std::invalid_argument("unknown optimizer '" + c.optimizer + "'; use sgd or adamw");
  }
  return [c](std::vector<torch::Tensor> all) -> std::unique_ptr<torch::optim::Optimizer> {
    std::vector<torch::Tensor> params;
    for (const torch::Tensor& p : all) {
      if (p.requires_grad()) params.push_back(p);
    }
    if (params.empty()) return nullptr;  // A frozen stage: nothing to step.
    if (c.optimizer == "adamw") {
      return std::make_unique<torch::optim::AdamW>(
          params, torch::optim::AdamWOptions(c.learning_rate)
                      .betas({c.adam_beta1, c.adam_beta2})
                      .eps(c.adam_eps)
                      .weight_decay(c.weight_decay));
    }
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(c.learning_rate).momentum(c.momentum).weight_decay(c.weight_decay));
  };
}

// The learning rate and weight decay of step `step` (1-based), set before
// it; null when both are constant.
std::function<void(torch::optim::Optimizer&, int)> MakeStepSchedule(const TrainConfig& c) {
  if (c.weight_decay_schedule.empty() && c.warmup_steps == 0 && !c.decay_learning_rate) return nullptr;
  if (c.decay_learning_rate && c.total_steps <= 0) {
    throw std::invalid_argument("a decaying learning rate needs the run's total steps");
  }
  return [c](torch::optim::Optimizer& optimizer, int step) {
    double wd = c.weight_decay;
    for (const auto& [from, decay] : c.weight_decay_schedule) {
      if (step >= from) wd = decay;
    }
    double lr = c.learning_rate;
    if (c.warmup_steps > 0 && step <= c.warmup_steps) {
      lr *= static_cast<double>(step) / c.warmup_steps;
    } else if (c.decay_learning_rate) {
      lr *= std::max(0.0, static_cast<double>(c.total_steps - step + 1) /
                              std::max(1, c.total_steps - c.warmup_steps));
    }
    for (auto& group : optimizer.param_groups()) {
      if (auto* adamw = dynamic_cast<torch::optim::AdamWOptions*>(&group.options())) {
        adamw->lr(lr).weight_decay(wd);
      } else {
        static_cast<torch::optim::SGDOptions&>(group.options()).lr(lr).weight_decay(wd);
      }
    }
  };
}

void CheckMicrobatches(const TrainConfig& c, int models) {
  if (c.batch_size < 1) {
    throw std::invalid_argument("batch size must be at least 1, got " +
                                std::to_string(c.batch_size));
  }
  if (c.microbatches < 1 || c.batch_size % c.microbatches != 0) {
    throw std::invalid_argument(std::to_string(c.microbatches) +
                                " micro-batches do not divide the batch of " +
                                std::to_string(c.batch_size) + " samples");
  }
  if (models > 1 && c.batch_size % (models * c.microbatches) != 0) {
    throw std::invalid_argument(
        std::to_string(models) + " models x " + std::to_string(c.microbatches) +
        " micro-batches do not divide the batch of " + std::to_string(c.batch_size) +
        " samples (each model trains on its own share)");
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
  s.models = recipe.num_models();
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
  ConfiguredRecipe r = Configure(c.algorithm, c.algorithm_options);
  const int models = r.recipe->num_models();
  CheckMicrobatches(c, models);
  std::unique_ptr<Algorithm> algorithm = r.recipe->MakeAlgorithm();
  const torch::Device device = FirstDevice(c.device);
  // Profiling changes batch-norm statistics: use throw-away models.
  torch::manual_seed(c.seed);
  ModelSet set = r.recipe->BuildModels();
  const Activation input = r.recipe->ExampleInput(c.batch_size / (models * c.microbatches));
  BlockCosts costs;
  BlockTimes student = ProfileBlocks(set.student_blocks, input, device,
                                     /*with_backward=*/true, /*train_mode=*/true);
  costs.student_forward = student.forward;
  costs.student_backward = student.backward;
  if (models > 1) {
    // Peer teachers: every other model's copy of each block, in eval mode.
    costs.teacher_forward = ProfileBlocks(set.student_blocks, input, device,
                                          /*with_backward=*/false, /*train_mode=*/false)
                                .forward;
    for (double& ms : costs.teacher_forward) ms *= models - 1;
  } else if (algorithm->workload().has_teacher) {
    costs.teacher_forward = ProfileBlocks(set.teacher_blocks, input, device,
                                          /*with_backward=*/false,
                                          algorithm->TeacherInTrainMode())
                                .forward;
  }
  return costs;
}

// Bytes in a uint8 tensor and back: process files hold each stage's
// archive (loaded later onto that stage's own device) as one entry.
torch::Tensor BytesTensor(const std::string& bytes) {
  torch::Tensor t = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  if (!bytes.empty()) std::memcpy(t.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  return t;
}

std::string TensorBytes(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kCPU).contiguous();
  return std::string(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), c.numel());
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
    num_models_ = recipe_->num_models();
    CheckMicrobatches(config, num_models_);
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
    if (num_models_ > 1) {
      // Models that teach each other: each its own initial values, each
      // model's teacher copies of the others.
      if (algorithm_->teacher_kind() != TeacherKind::kPeers || models_.teacher) {
        throw std::logic_error("recipe " + config.algorithm + " trains " +
                               std::to_string(num_models_) +
                               " models but its algorithm has no peer teachers (or the recipe "
                               "built a teacher itself)");
      }
      if (!config.initial_checkpoint.empty()) {
        throw std::invalid_argument("algorithm " + config.algorithm + " trains " +
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
    } else if (workload.has_teacher != static_cast<bool>(models_.teacher)) {
      throw std::logic_error("recipe " + config.algorithm +
                             " built a teacher that its algorithm's workload does not match");
    }
    if (!config.initial_checkpoint.empty()) {
      LoadModelFile(config.initial_checkpoint, "student", models_.student_shape, *models_.student);
      recipe_->StudentLoaded(models_);
    }
    if (!config.teacher_checkpoint.empty()) {
      LoadModelFile(config.teacher_checkpoint, "teacher", models_.teacher_shape, *models_.teacher);
    }

    if (config.dtype == "float64") {
      dtype_ = torch::kFloat64;
    } else if (config.dtype != "float32") {
      throw std::invalid_argument("unknown dtype '" + config.dtype + "'; use float32 or float64");
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
    ExecutorOptions eo;
    for (const ModelSet& m : peers_) {
      eo.student_replicas.push_back(Partition(m.student_blocks, balance));
      eo.teacher_replicas.push_back(Partition(m.teacher_blocks, tbalance));
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
      // Which models this process holds whole (SaveModel, ExportModel): a
      // stage of model g is on placement[s][g] when the replicas are
      // separate models, on any of its ranks when they are copies (dp).
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
      transport_any_ = transport_;
      local_ranks_ = {rank_};
      eo.transport = transport_;
      eo.local_ranks = {rank_};
      eo.recv_timeout = std::chrono::seconds(config.peer_timeout_seconds);
      // Only this process's own rank runs here; the others' entries are
      // never used.
      eo.devices.assign(devices_, transport_->device());
    } else {
      eo.devices = RankDevices(config.device, devices_);
      // Made here rather than by the executor, to read its traffic counts.
      transport_any_ = MakeLocalTransport(devices_, eo.devices);
      eo.transport = transport_any_;
      for (int r = 0; r < devices_; ++r) local_ranks_.push_back(r);
    }
    // A c10d world's transport serves every trainer of the process in
    // turn: count only this one's traffic.
    for (int r : local_ranks_) sent_before_ += transport_any_->bytes_sent(r);
    eo.update_policy = config.update_policy;
    // Each model's device per stage (its replica's rank), for parameterless
    // stages.
    std::vector<std::vector<torch::Device>> placed(num_models_);
    for (int g = 0; g < num_models_; ++g) {
      for (int s = 0; s < c.stages; ++s) {
        const int rank = schedule.placement[s][num_models_ > 1 ? g : 0];
        placed[g].push_back(eo.devices.empty() ? torch::Device(torch::kCPU) : eo.devices[rank]);
      }
    }
    eo.make_optimizer = MakeOptimizerFactory(config);
    eo.before_step = MakeStepSchedule(config);
    eo.clip_grad_norm = config.clip_grad_norm;
    eo.tied_gradients = ResolveTies(models_.student_ties, stages_);
    std::vector<std::vector<Stage>> model_stages{stages_};
    for (const auto& r : eo.student_replicas) model_stages.push_back(r);
    executor_ = std::make_unique<Executor>(std::move(schedule), stages_, std::move(teacher_stages),
                                           algorithm_.get(), eo);
    // Evaluation runs each block where the executor put its stage.
    block_devices_.resize(num_models_);
    for (int g = 0; g < num_models_; ++g) {
      for (int s = 0; s < c.stages; ++s) {
        std::vector<torch::Tensor> params = model_stages[g][s]->parameters();
        const torch::Device d = params.empty() ? placed[g][s] : params[0].device();
        for (int b = 0; b < model_stages[g][s]->num_blocks(); ++b) block_devices_[g].push_back(d);
      }
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
    for (int i = 0; i < steps; ++i) {
      run.push_back(Pop());
      tokens_ += recipe_->Tokens(run.back());
    }
    double loss = executor_->Run(run, &Peek()).back().loss;
    steps_ += steps;
    // Under c10d each process knows only its own ranks' share of the loss:
    // the last stage's rank holds all of it in a pipeline (the others 0),
    // each replica its weighted part under dp. The sum is the mini-batch loss.
    loss = SumOverProcesses(loss, /*stage=*/-1, executor_->steps_done());
    // Several models: the losses of all of them were summed; report their mean.
    return loss / num_models_;
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
    auto blocks_of = [this](int model) -> const BlockList& {
      return model == 0 ? models_.student_blocks : peers_.at(model - 1).student_blocks;
    };
    EvalContext context(
        num_models_,
        [this, blocks_of](const Activation& input, int num_blocks, int model) {
          if (model < 0 || model >= num_models_) {
            throw std::invalid_argument("no model " + std::to_string(model) + " of " +
                                        std::to_string(num_models_));
          }
          const BlockList& blocks = blocks_of(model);
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
        for (const Block& b : blocks_of(g)) b->train(train);
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

  // A c10d process holds only its own rank's stages: a model can be written
  // only by a process that holds all of it (a dp replica, or a one-stage
  // model of codistillation).
  void RequireWholeModel(const char* what, int model) const {
    if (transport_ && !models_here_.count(model)) {
      throw std::logic_error(std::string(what) + " " + std::to_string(model) +
                             " needs the single-process backend: this c10d process (rank " +
                             std::to_string(rank_) + ") holds only its own stages");
    }
  }

  void SaveModel(const std::string& path, int model) {
    if (model < 0 || model >= num_models_) {
      throw std::invalid_argument("no model " + std::to_string(model) + " of " +
                                  std::to_string(num_models_));
    }
    RequireWholeModel("saving model", model);
    torch::serialize::OutputArchive archive;
    (model == 0 ? models_ : peers_[model - 1]).student->save(archive);
    std::ostringstream bytes;
    archive.save_to(bytes);
    WriteFileAtomically(path, bytes.str());
  }

  void ExportModel(const std::string& path, int model) {
    if (model < 0 || model >= num_models_) {
      throw std::invalid_argument("no model " + std::to_string(model) + " of " +
                                  std::to_string(num_models_));
    }
    RequireWholeModel("exporting model", model);
    WriteSafetensors(path, recipe_->ExportTensors(model == 0 ? models_ : peers_[model - 1]),
                     {{"format", "pt"}, {"algorithm", config_.algorithm}});
  }

  double MaxParameterDifference(const Impl& other) const {
    if (num_models_ != other.num_models_) {
      throw std::invalid_argument("the two runs train different numbers of models");
    }
    double diff = 0;
    for (int g = 0; g < num_models_; ++g) {
      const ModelSet& x = g == 0 ? models_ : peers_[g - 1];
      const ModelSet& y = g == 0 ? other.models_ : other.peers_[g - 1];
      auto a = x.student->parameters(), b = y.student->parameters();
      if (a.size() != b.size()) throw std::invalid_argument("the two students differ in shape");
      for (size_t i = 0; i < a.size(); ++i) {
        if (!a[i].sizes().equals(b[i].sizes())) {
          throw std::invalid_argument("the two students differ in shape");
        }
        diff = std::max(diff,
                        (a[i].to(torch::kCPU) - b[i].to(torch::kCPU)).abs().max().item<double>());
      }
    }
    return diff;
  }

  int num_devices() const { return devices_; }
  const std::string& placement() const { return placement_; }
  int rank() const { return rank_; }
  int batch_size() const { return config_.batch_size; }
  void RecordTrace(bool on) { executor_->set_record_trace(on); }
  TraceRun TakeTrace() {
    return {config_.scheduler, executor_->schedule(), executor_->TakeTrace(),
            executor_->TakeMemoryPeaks()};
  }
  int64_t train_set_size() const { return data_->size(); }
  double bytes_sent_per_step_per_device() const {
    if (steps_ == 0) return 0;
    int64_t bytes = 0;
    for (int r : local_ranks_) bytes += transport_any_->bytes_sent(r);
    return static_cast<double>(bytes - sent_before_) / steps_ / local_ranks_.size();
  }
  double simulated_bubble() const { return bubble_; }
  int64_t tokens_trained() const { return tokens_; }
  int stash_peak() const { return stash_peak_; }
  int num_models() const { return num_models_; }
  int64_t steps_done() const { return executor_->steps_done(); }


  // Process number of this process in a checkpoint: its c10d rank, or 0.
  int process() const { return transport_ ? rank_ : 0; }
  int processes() const { return transport_ ? transport_->world_size() : 1; }

  // What a resumed run must share with the one that wrote the checkpoint.
  std::string CheckpointFingerprint() const {
    return Fingerprint(config_, recipe_options_) + "ranks=" + std::to_string(devices_) +
           "\nplacement=" + placement_ + "\n";
  }

  // The sum of `value` over every process (a barrier under c10d); `stage`
  // and `tag` name the collective (-1: Train's loss, -2: checkpoints).
  double SumOverProcesses(double value, int stage, int64_t tag) {
    if (!transport_) return value;
    std::vector<int> world(transport_->world_size());
    std::iota(world.begin(), world.end(), 0);
    std::vector<torch::Tensor> sum{torch::tensor({value}, torch::kFloat64).to(transport_->device())};
    std::atomic<bool> never{false};
    transport_->AllReduce(rank_, world, stage, tag, &sum,
                          std::chrono::seconds(config_.peer_timeout_seconds), never);
    return sum[0].item<double>();
  }

  std::string ProcessState() {
    torch::serialize::OutputArchive archive;
    auto put = [&](const std::string& key, int64_t v) {
      archive.write(key, torch::tensor(v, torch::kInt64), /*is_buffer=*/true);
    };
    put("steps", steps_);
    put("tokens", tokens_);
    put("drawn", drawn_);
    put("ahead", static_cast<int64_t>(ahead_.size()));
    const Executor::SavedState state = executor_->SaveState();
    put("executor_steps", state.steps_done);
    put("lookahead", state.lookahead_ready ? 1 : 0);
    put("slots", static_cast<int64_t>(state.stages.size()));
    int i = 0;
    for (const auto& [where, bytes] : state.stages) {
      const std::string key = "slot" + std::to_string(i++);
      put(key + "_rank", where.first);
      put(key + "_stage", where.second);
      archive.write(key, BytesTensor(bytes), true);
    }
    // Random generators last: nothing above draws from them.
    {
      at::Generator cpu = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(cpu.mutex());
      archive.write("cpu_rng", cpu.get_state(), true);
    }
    const int cuda = CudaDevices();
    put("cuda_devices", cuda);
    for (int d = 0; d < cuda; ++d) {
      at::Generator g = at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, d));
      std::lock_guard<std::mutex> lock(g.mutex());
      archive.write("cuda_rng" + std::to_string(d), g.get_state(), true);
    }
    std::ostringstream bytes;
    archive.save_to(bytes);
    return bytes.str();
  }

  void LoadProcessState(const std::string& payload, const std::string& what) {
    torch::serialize::InputArchive archive;
    try {
      std::istringstream in(payload);
      archive.load_from(in, torch::Device(torch::kCPU));
    } catch (const c10::Error& e) {
      throw std::runtime_error(what + " is unreadable: " + e.what_without_backtrace());
    }
    auto get = [&](const std::string& key) {
      torch::Tensor t;
      if (!archive.try_read(key, t, true)) throw std::runtime_error(what + " has no '" + key + "'");
      return t;
    };
    auto get_int = [&](const std::string& key) { return get(key).item<int64_t>(); };
    Executor::SavedState state;
    state.steps_done = get_int("executor_steps");
    state.lookahead_ready = get_int("lookahead") != 0;
    const int64_t slots = get_int("slots");
    for (int64_t i = 0; i < slots; ++i) {
      const std::string key = "slot" + std::to_string(i);
      state.stages[{static_cast<int>(get_int(key + "_rank")), static_cast<int>(get_int(key + "_stage"))}] =
          TensorBytes(get(key));
    }
    executor_->LoadState(state);
    steps_ = get_int("steps");
    tokens_ = get_int("tokens");
    // The data stream: the same source, fast-forwarded by drawing (and
    // dropping) what the saved run had drawn, so its own generators end in
    // the same state; the last `ahead` draws are the batches it held.
    const int64_t drawn = get_int("drawn"), ahead = get_int("ahead");
    std::deque<Batch> held;
    while (drawn_ < drawn) {
      Batch b = data_->Next();
      ++drawn_;
      if (drawn - drawn_ < ahead) held.push_back(Converted(std::move(b)));
    }
    if (drawn_ != drawn) {
      throw std::invalid_argument(what + " was written after " + std::to_string(drawn) +
                                  " batches, fewer than this trainer has drawn already (" +
                                  std::to_string(drawn_) + "); resume a fresh trainer");
    }
    ahead_ = std::move(held);
    {
      at::Generator cpu = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(cpu.mutex());
      cpu.set_state(get("cpu_rng"));
    }
    const int64_t cuda = std::min<int64_t>(get_int("cuda_devices"), CudaDevices());
    for (int d = 0; d < cuda; ++d) {
      at::Generator g = at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, d));
      std::lock_guard<std::mutex> lock(g.mutex());
      g.set_state(get("cuda_rng" + std::to_string(d)));
    }
  }

  void SaveCheckpoint(const std::string& dir, int keep) {
    if (keep < 1) throw std::invalid_argument("keep at least 1 checkpoint, got " + std::to_string(keep));
    const int64_t step = executor_->steps_done();
    WriteProcessFile(dir, step, process(), ProcessState());
    // Every process has its file on disk before the manifest says so.
    SumOverProcesses(1, /*stage=*/-2, step);
    if (process() == 0) {
      CheckpointManifest m;
      m.step = step;
      m.processes = processes();
      m.ranks = devices_;
      m.fingerprint = CheckpointFingerprint();
      for (int p = 0; p < m.processes; ++p) m.files.push_back(ProcessFileName(p));
      WriteManifest(dir, m);
    }
    PruneCheckpoints(dir, process(), keep);
  }

  int64_t Resume(const std::string& dir, std::vector<std::string>* skipped) {
    // Process 0 decides which manifests exist (under c10d the others may
    // not see its disk); every process checks its own file of each.
    std::string listing;
    std::vector<std::string> notes;
    if (process() == 0) {
      for (const CheckpointManifest& m :
           CompleteCheckpoints(dir, /*check_files=*/processes() == 1, &notes)) {
        listing += FormatManifest(m) + "\x1e";
      }
    }
    if (transport_) listing = config_.world->ShareFromRankZero("checkpoints", listing);
    std::vector<CheckpointManifest> candidates;
    for (size_t start = 0, end; (end = listing.find('\x1e', start)) != std::string::npos;
         start = end + 1) {
      candidates.push_back(ParseManifest(listing.substr(start, end - start)));
    }
    const std::vector<std::string> ignore{"steps_per_iteration", "initial_checkpoint"};
    int64_t tag = 0;
    for (const CheckpointManifest& m : candidates) {
      const std::string where = StepDirectory(dir, m.step);
      if (m.processes != processes()) {
        throw std::invalid_argument(
            "checkpoint " + where + " was written by " + std::to_string(m.processes) +
            " process(es) (c10d world size " + std::to_string(m.processes) + "); this run has " +
            std::to_string(processes()) + "; resume with the same world size");
      }
      const std::string diff = DescribeDifferences(m.fingerprint, CheckpointFingerprint(), ignore);
      if (!diff.empty()) {
        throw std::invalid_argument("checkpoint " + where +
                                    " was written by another configuration: " + diff);
      }
      std::string payload, problem;
      try {
        payload = ReadProcessFile(dir, m, process());
      } catch (const std::runtime_error& e) {
        problem = e.what();
      }
      // Resume only from a checkpoint every process has whole.
      if (SumOverProcesses(problem.empty() ? 1 : 0, /*stage=*/-2, --tag) < processes()) {
        notes.push_back(where + ": " + (problem.empty() ? "another process's file is damaged" : problem));
        continue;
      }
      LoadProcessState(payload, where + "/" + m.files[process()]);
      if (skipped) *skipped = notes;
      return m.step;
    }
    if (skipped) *skipped = notes;
    return -1;
  }

 private:
  // CUDA devices whose generators a checkpoint holds: those of a GPU run.
  int CudaDevices() const {
    return config_.device.rfind("cuda", 0) == 0 ? static_cast<int>(torch::cuda::device_count()) : 0;
  }

  // The executor looks one batch ahead (TSPipe's teacher forwards), so the
  // next batch is drawn before it is trained on.
  const Batch& Peek() {
    if (ahead_.empty()) {
      ahead_.push_back(Converted(data_->Next()));
      ++drawn_;
    }
    return ahead_.front();
  }

  // Floating tensors of `b` in the run's dtype.
  Batch Converted(Batch b) const {
    if (dtype_ == torch::kFloat32) return b;
    for (Activation* part : {&b.inputs, &b.targets}) {
      for (torch::Tensor& t : *part) {
        if (t.defined() && t.is_floating_point()) t = t.to(dtype_);
      }
    }
    return b;
  }

  std::vector<ModelSet*> AllModels() {
    std::vector<ModelSet*> all{&models_};
    for (ModelSet& m : peers_) all.push_back(&m);
    return all;
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
  // Model 0 (the only one, unless the recipe trains several), and the others.
  int num_models_ = 1;
  ModelSet models_;
  std::vector<ModelSet> peers_;
  std::vector<Stage> stages_;
  // Device of each student block of each model, for evaluation.
  std::vector<std::vector<torch::Device>> block_devices_;
  // The transport the executor uses, and the ranks this process runs.
  std::shared_ptr<Transport> transport_any_;
  std::vector<int> local_ranks_;
  int64_t steps_ = 0;
  int64_t tokens_ = 0;  // Recipe::Tokens of every batch trained on.
  int64_t drawn_ = 0;   // Batches drawn from data_ (a checkpoint's data position).
  torch::Dtype dtype_ = torch::kFloat32;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<BatchSource> data_;
  std::deque<Batch> ahead_;
  int devices_ = 1;
  std::string placement_;
  int rank_ = 0;
  std::set<int> models_here_;  // Under c10d: models whose every stage is on rank_.
  // The c10d world's transport; null when local.
  std::shared_ptr<C10dTransport> transport_;
  double bubble_ = 0;
  int stash_peak_ = 0;  // PeakStashes' most student micro-batches on a stage.
  int64_t sent_before_ = 0;  // Bytes the transport had sent before this trainer.
};

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

CutSearch CutSearchFor(const TrainConfig& c) {
  ConfiguredRecipe r = Configure(c.algorithm, c.algorithm_options);
  std::unique_ptr<Algorithm> algorithm = r.recipe->MakeAlgorithm();
  return SearchFor(c, *r.recipe, *algorithm);
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

std::vector<std::string> RecipeDataSets(const std::string& algorithm) {
  return CreateRecipe(algorithm)->DataSets();
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
