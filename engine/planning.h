// Planning a run before it starts: timing every block of the recipe's
// networks, searching the cut (engine/cut_search.h) for this configuration,
// and timing the best few cuts for real.
#ifndef TSPIPE_ENGINE_PLANNING_H_
#define TSPIPE_ENGINE_PLANNING_H_

#include <vector>

#include "engine/cut_search.h"
#include "engine/trainer.h"

namespace tspipe {

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

// Builds a trainer for every plan and times each over `rounds` rounds of
// `steps` steps (keeping each one's best figure, so a slow moment of the
// machine hurts one trial, not the choice). Returns samples/s per plan.
std::vector<double> TimePlans(const TrainConfig& config, const std::vector<BalancePlan>& plans,
                              int steps, int rounds);

}  // namespace tspipe

#endif  // TSPIPE_ENGINE_PLANNING_H_
