// Choosing where to cut a student and a teacher into stages, from measured
// block costs, by simulating the scheduler's steady state for each candidate
// cut (core/simulator.h). Torch-free: it takes costs, a scheduler and the
// recipe's cut rule, never models.
#ifndef TSPIPE_ENGINE_CUT_SEARCH_H_
#define TSPIPE_ENGINE_CUT_SEARCH_H_

#include <string>
#include <vector>

#include "core/schedule.h"

namespace tspipe {

// How a recipe's networks may be cut.
struct CutRule {
  enum class Kind {
    // Student and teacher each get their own balance (KD: two networks of
    // different shapes sharing the devices).
    kIndependent,
    // The teacher is cut like the student (a momentum target zipped with
    // its online network stage by stage), except that the student's last
    // stage holds `student_extra_blocks` more blocks (BYOL's predictor).
    kShared,
    // Every block pair is a stage of its own and trains on its own
    // (blockwise distillation); TrainConfig::stages then counts devices and
    // the scheduler places the blocks.
    kOnePerBlock,
  };
  Kind kind = Kind::kIndependent;
  int student_extra_blocks = 0;
};

// A cut of the student and teacher blocks into stages.
struct Cut {
  int stages = 0;             // kOnePerBlock: one per block.
  std::vector<int> student;   // Blocks per stage.
  std::vector<int> teacher;   // Empty without a teacher.
};

// The cut a run uses, by the recipe's rule, from the balances it was given
// (empty = even: kIndependent cuts each network evenly, kShared cuts the
// teacher's blocks evenly and puts the student's extra blocks on its last
// stage, kOnePerBlock gives every block a stage). The one rule the trainer
// and the cut search share. Throws std::invalid_argument with a one-line
// message naming `algorithm` and the balance that does not fit: a balance
// given to kOnePerBlock, a shared teacher balance that does not follow the
// student's, a last stage left only the extra blocks, or a balance with
// another stage count (the block counts themselves are Partition's check).
Cut ResolveCut(const CutRule& rule, const std::string& algorithm, int stages, int student_blocks,
               int teacher_blocks, bool has_teacher, const std::vector<int>& balance,
               const std::vector<int>& teacher_balance);

// Measured cost of every block, ms per micro-batch on the first device.
struct BlockCosts {
  std::vector<double> student_forward;   // Train mode.
  std::vector<double> student_backward;
  std::vector<double> teacher_forward;   // Empty without a teacher.
};

// A student/teacher cut with its stage costs and simulated period.
struct BalancePlan {
  std::vector<int> student;
  std::vector<int> teacher;  // Empty without a teacher.
  // Stage costs of that cut (ms per micro-batch), for schedulers that plan
  // with costs (TrainConfig's forward_ms/backward_ms/teacher_ms).
  std::vector<double> forward_ms;
  std::vector<double> backward_ms;
  std::vector<double> teacher_ms;
  // Simulated ms per iteration of this cut, and of the even cut.
  double period_ms = 0;
  double even_period_ms = 0;
};

struct CutSearch {
  std::string scheduler;
  int stages = 2;  // Devices for CutRule::kOnePerBlock.
  int microbatches = 4;
  Workload workload;
  CutRule rule;
  // A teacher cut the caller fixed (kIndependent); empty = search it too.
  std::vector<int> teacher_cut;
  // Models trained together, one pipeline each (Recipe::num_models): the
  // period is that of ReplicateModels' schedule.
  int models = 1;
  // Costs of communication, ms per action: each gradient all-reduce, and
  // each TeacherUpdate (a codistillation exchange, amortised over its K
  // steps). 0 = free (what the benchmarks' cut search assumes).
  double all_reduce_ms = 0;
  double teacher_update_ms = 0;
};

// The `max_plans` fastest cuts whose simulated period is within
// `tolerance` (a fraction) of the best one, fastest first (the simulator
// misses some real costs, so callers may time these and keep the fastest).
// Every candidate is simulated up to 20000 of them; beyond that, the cut
// that balances total work per stage (core/balance.h). Throws
// std::invalid_argument when the stage count does not fit the blocks.
std::vector<BalancePlan> PlanBalances(const CutSearch& search, const BlockCosts& costs,
                                      int max_plans, double tolerance);

// The cut's stage costs and simulated period, without searching.
BalancePlan PlanFor(const CutSearch& search, const BlockCosts& costs,
                    const std::vector<int>& student, const std::vector<int>& teacher);

// SchedulerOptions::num_devices for a search (and a run): kOnePerBlock
// spreads its block stages over `stages` devices, except on a scheduler
// that always runs on one device; otherwise 0 (the scheduler's own count).
int DevicesFor(const std::string& scheduler, const CutRule& rule, int stages);

// "student 2,3, teacher 4,4; simulated 130 ms/iteration (even cut: 161)".
std::string DescribePlan(const BalancePlan& plan);

}  // namespace tspipe

#endif  // TSPIPE_ENGINE_CUT_SEARCH_H_
