// Planning a run before it starts: timing every block of the recipe's
// networks, searching the cut (engine/cut_search.h) for this configuration,
// and timing the best few cuts for real.
#ifndef TSPIPE_ENGINE_PLANNING_H_
#define TSPIPE_ENGINE_PLANNING_H_

#include <functional>
#include <string>
#include <vector>

#include "engine/cut_search.h"
#include "engine/trainer.h"

namespace tspipe {

// Builds the recipe's networks once and loads config.teacher_checkpoint and
// config.initial_checkpoint into them, as the trainer will, so that a file
// that is missing, corrupt or of another network stops a run before any
// work, in one line starting with `teacher_flag` or `student_flag`.
void CheckWeightFiles(const TrainConfig& config, const std::string& teacher_flag,
                      const std::string& student_flag);

// Throws std::invalid_argument unless the micro-batches divide the batch
// (and, for `models` models trained together, each model's share).
void CheckMicrobatches(const TrainConfig& config, int models);

// Times every block of the recipe's student (forward, backward) and teacher
// (forward) on one micro-batch of its example input. Under c10d rank 0
// measures and every rank gets its figures.
BlockCosts MeasureBlockCosts(const TrainConfig& config);

// The cut search for this configuration: the recipe's cut rule and
// workload, a teacher balance the config fixes.
std::vector<BalancePlan> PlanBalances(const TrainConfig& config, const BlockCosts& costs,
                                      int max_plans, double tolerance);
// The search PlanBalances runs, to simulate a cut with other costs
// (engine/cut_search.h's PlanFor).
CutSearch CutSearchFor(const TrainConfig& config);
// The best simulated plan, measuring the costs first.
BalancePlan PlanBalance(const TrainConfig& config);
// Puts the plan's cuts and stage costs into `config`.
void ApplyPlan(const BalancePlan& plan, TrainConfig* config);

// A scheduler simulated at a scale this machine may not have: `stages`
// devices, `microbatches` micro-batches, each block costing what
// MeasureBlockCosts measured for one micro-batch. Against inter-layer model
// parallelism (the model cut over the same devices, one mini-batch passing
// through them in turn, no two devices busy at once), whose period is the
// whole work once: every block's forward and backward (and the teacher's
// forward) for every micro-batch. Leaves out communication, memory limits,
// and how costs change with the micro-batch size.
struct ScaledSimulation {
  int stages = 0;
  int microbatches = 0;
  BalancePlan plan;                  // The best cut the simulator found.
  double model_parallel_ms = 0;      // Per mini-batch.
  double speedup = 0;                // model_parallel_ms / plan.period_ms.
};
ScaledSimulation SimulateAtScale(const TrainConfig& config, const BlockCosts& costs, int stages,
                                 int microbatches);
// "tspipe, 8 stages, 7 micro-batches: 812.3 ms/iteration simulated, model
// parallelism 3301.0 ms: 4.06x (student 7,6,..., teacher ...)".
std::string DescribeScaledSimulation(const std::string& scheduler, const ScaledSimulation& s);
// Those lines for every scheduler at every stage count N, with N-1 (the
// TSPipe reference's choice), 2N and 4N micro-batches, each handed to
// `emit` as soon as it is simulated.
void SimulateAtScales(const TrainConfig& config, const BlockCosts& costs,
                      const std::vector<std::string>& schedulers, const std::vector<int>& stages,
                      const std::function<void(const std::string&)>& emit);

// Builds a trainer for every plan and times each over `rounds` rounds of
// `steps` steps (keeping each one's best figure, so a slow moment of the
// machine hurts one trial, not the choice). Returns samples/s per plan.
std::vector<double> TimePlans(const TrainConfig& config, const std::vector<BalancePlan>& plans,
                              int steps, int rounds);

}  // namespace tspipe

#endif  // TSPIPE_ENGINE_PLANNING_H_
