// Chooses where to cut a student and a teacher into pipeline stages. In TSPipe
// both models are pipelined over the same N devices: stage s runs student
// blocks [a_s, a_{s+1}) (forward and backward) and teacher blocks
// [b_s, b_{s+1}) (forward only) on one device, so the device's time per
// micro-batch is the sum of both, and the slowest device sets the pipeline's
// pace. Balancing the two models separately would ignore that they share the
// devices.
#ifndef TSPIPE_CORE_BALANCE_H_
#define TSPIPE_CORE_BALANCE_H_

#include <string>
#include <vector>

namespace tspipe {

struct BalanceResult {
  // Blocks per stage, in pipeline order; each entry >= 1 and they sum to the
  // model's block count. `teacher` is empty when there are no teacher costs.
  std::vector<int> student;
  std::vector<int> teacher;
  // Per stage: (student costs of the stage summed in block order) + (teacher
  // costs of the stage summed in block order).
  std::vector<double> stage_costs;
  // max(stage_costs): the smallest possible over all valid cuts.
  double bottleneck = 0;
};

// Cuts `student_costs` (per block, forward + backward) and `teacher_costs`
// (per block, forward only; may be empty) into `num_stages` contiguous stages,
// each with at least one student block and, when there is a teacher, at least
// one teacher block, minimising the most expensive stage exactly (dynamic
// programming, O(num_stages * K^2 * T^2) for K student and T teacher blocks).
// Among the optimal cuts it picks the one with the smallest sum of squared
// stage costs, so the non-bottleneck stages are balanced too; ties left after
// that go deterministically to the earliest cut found. Throws
// std::invalid_argument naming the numbers when num_stages < 1, num_stages
// exceeds either model's block count, or a cost is negative, infinite or NaN.
BalanceResult SolveBalance(const std::vector<double>& student_costs,
                           const std::vector<double>& teacher_costs, int num_stages);

// Throws std::invalid_argument naming the problem unless `balance` has at
// least one entry, every entry is >= 1 and the entries sum to `num_blocks`.
void CheckBalance(const std::vector<int>& balance, int num_blocks);

// Near-even balance for `num_stages` stages (earlier stages get the extra
// blocks). Throws std::invalid_argument when num_stages > num_blocks.
std::vector<int> EvenBalance(int num_blocks, int num_stages);

// "2,3" for {2, 3}; "" for {}. The form --balance-style flags take.
std::string FormatBalance(const std::vector<int>& balance);

}  // namespace tspipe

#endif  // TSPIPE_CORE_BALANCE_H_
