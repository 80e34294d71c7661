#include "engine/planning.h"

#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>

#include "engine/devices.h"
#include "engine/model_files.h"
#include "engine/profile.h"
#include "engine/recipe.h"

namespace tspipe {
namespace {

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
  ConfiguredRecipe r = ConfigureRecipe(c.algorithm, c.algorithm_options);
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
  } else if (algorithm->workload().has_teacher()) {
    costs.teacher_forward = ProfileBlocks(set.teacher_blocks, input, device,
                                          /*with_backward=*/false,
                                          algorithm->TeacherInTrainMode())
                                .forward;
  }
  return costs;
}

}  // namespace

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

BlockCosts MeasureBlockCosts(const TrainConfig& c) {
  if (!c.world) return Measure(c);
  // Timings differ between processes; rank 0 measures for everyone.
  return DecodeCosts(
      c.world->ShareFromRankZero("costs", c.world->rank() == 0 ? EncodeCosts(Measure(c)) : ""));
}

std::vector<BalancePlan> PlanBalances(const TrainConfig& c, const BlockCosts& costs,
                                      int max_plans, double tolerance) {
  ConfiguredRecipe r = ConfigureRecipe(c.algorithm, c.algorithm_options);
  std::unique_ptr<Algorithm> algorithm = r.recipe->MakeAlgorithm();
  return PlanBalances(SearchFor(c, *r.recipe, *algorithm), costs, max_plans, tolerance);
}

CutSearch CutSearchFor(const TrainConfig& c) {
  ConfiguredRecipe r = ConfigureRecipe(c.algorithm, c.algorithm_options);
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

ScaledSimulation SimulateAtScale(const TrainConfig& config, const BlockCosts& costs, int stages,
                                 int microbatches) {
  TrainConfig c = config;
  c.stages = stages;
  c.microbatches = microbatches;
  c.balance.clear();
  c.teacher_balance.clear();
  c.forward_ms.clear();
  c.backward_ms.clear();
  c.teacher_ms.clear();
  ScaledSimulation out;
  out.stages = stages;
  out.microbatches = microbatches;
  out.plan = PlanBalances(c, costs, 1, 0).front();
  double work = 0;
  for (const auto* list : {&costs.student_forward, &costs.student_backward, &costs.teacher_forward}) {
    for (double ms : *list) work += ms;
  }
  out.model_parallel_ms = work * microbatches;
  out.speedup = out.plan.period_ms > 0 ? out.model_parallel_ms / out.plan.period_ms : 0;
  return out;
}

std::string DescribeScaledSimulation(const std::string& scheduler, const ScaledSimulation& s) {
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(1);
  out << scheduler << ", " << s.stages << " stages, " << s.microbatches
      << " micro-batches: " << s.plan.period_ms << " ms/iteration simulated, model parallelism "
      << s.model_parallel_ms << " ms: ";
  out.precision(2);
  out << s.speedup << "x (" << DescribePlan(s.plan) << ")";
  return out.str();
}

void SimulateAtScales(const TrainConfig& config, const BlockCosts& costs,
                      const std::vector<std::string>& schedulers, const std::vector<int>& stages,
                      const std::function<void(const std::string&)>& emit) {
  for (int n : stages) {
    if (n < 1) throw std::invalid_argument("a stage count must be positive, got " + std::to_string(n));
    for (const std::string& scheduler : schedulers) {
      TrainConfig c = config;
      c.scheduler = scheduler;
      for (int m : {n - 1, 2 * n, 4 * n}) {
        if (m >= 1) emit(DescribeScaledSimulation(scheduler, SimulateAtScale(c, costs, n, m)));
      }
    }
  }
}

void CheckWeightFiles(const TrainConfig& config, const std::string& teacher_flag,
                      const std::string& student_flag) {
  if (config.teacher_checkpoint.empty() && config.initial_checkpoint.empty()) return;
  ConfiguredRecipe r = ConfigureRecipe(config.algorithm, config.algorithm_options);
  ModelSet models = r.recipe->BuildModels();
  auto load = [](const std::string& flag, const std::string& path, const std::string& what,
                 const std::string& shape, const std::shared_ptr<torch::nn::Module>& module,
                 const std::function<void(NamedTensors&)>& adapt) {
    if (path.empty()) return;
    if (!module) throw std::invalid_argument(flag + ": algorithm has no " + what + " to load");
    try {
      LoadModelFile(path, what, shape, *module, adapt);
    } catch (const std::exception& e) {
      throw std::invalid_argument(flag + ": " + e.what());
    }
  };
  load(teacher_flag, config.teacher_checkpoint, "teacher", models.teacher_shape, models.teacher,
       models.adapt_teacher_file);
  load(student_flag, config.initial_checkpoint, "student", models.student_shape, models.student,
       models.adapt_student_file);
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

}  // namespace tspipe
