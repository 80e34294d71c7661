// Pipe-BD (Jang et al., DATE 2023; reference hongsunjang/pipe-bd) for
// blockwise distillation (Workload::blockwise, one stage per block pair):
//  - teacher relaying: each device (group, below) holds a contiguous run of
//    blocks, runs their teacher forwards once per micro-batch and passes the
//    last activation on to the next group, so no device re-runs a teacher
//    prefix (the DNA-style data-parallel baseline does: `dp` here runs every
//    block on every device, on a share of the batch);
//  - decoupled parameter update: the blocks share nothing, so each device
//    steps its own blocks as soon as its backward ends, with no barrier
//    between devices or iterations.
//  - automatic hybrid distribution: the blocks are cut into contiguous runs,
//    one per group of devices; a group of several devices runs its blocks
//    data parallel (a share of the micro-batches each, gradients all-reduced
//    inside the group only). Cuts and group sizes minimise the slowest
//    group's time per iteration, (its blocks' teacher forward + student
//    forward + backward per micro-batch, from SchedulerOptions::costs; unit
//    costs when unknown) x (micro-batches of its busiest replica), found
//    exactly by dynamic programming. Any device count from 1 to blocks x
//    micro-batches (the reference supports 4 GPUs only). With one group of
//    every device this is data parallelism; with groups of one, plain
//    relaying.
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "core/scheduler.h"

namespace tspipe {
namespace {

// Blocks [first, end) on `devices` devices.
struct Group {
  int first = 0;
  int end = 0;
  int devices = 1;
};

// The cut and group sizes described above. `prefix[i]` is the cost of
// blocks [0, i) per micro-batch; a replicated group also pays an all-reduce
// per block, and every group after the first a message per micro-batch.
// The slowest group's time is minimal; among the cuts that reach it, the
// search prefers smaller sums of squared group times (the other groups
// balanced too), which is a heuristic, not a guaranteed minimum.
std::vector<Group> ChooseGroups(const std::vector<double>& prefix, int m, int devices,
                                const CostModel& c) {
  const int n = static_cast<int>(prefix.size()) - 1;
  struct Best {
    double worst = std::numeric_limits<double>::infinity();
    double squares = 0;
    int from = -1;  // Previous cut.
    int group = 0;  // Devices of the last group.
  };
  // best[i][d]: blocks [0, i) on d devices.
  std::vector<std::vector<Best>> best(n + 1, std::vector<Best>(devices + 1));
  best[0][0].worst = 0;
  for (int i = 1; i <= n; ++i) {
    for (int d = 1; d <= devices; ++d) {
      for (int j = 0; j < i; ++j) {
        for (int g = 1; g <= std::min(d, m); ++g) {
          const Best& before = best[j][d - g];
          if (!std::isfinite(before.worst)) continue;  // Blocks [0, j) cannot use d - g devices.
          const int rounds = (m + g - 1) / g;  // Micro-batches of the busiest replica.
          const double time = (prefix[i] - prefix[j]) * rounds +
                              (g > 1 ? (i - j) * c.all_reduce : 0.0) +
                              (j > 0 ? rounds * c.message : 0.0);
          const double worst = std::max(before.worst, time);
          const double squares = before.squares + time * time;
          Best& here = best[i][d];
          if (worst < here.worst || (worst == here.worst && squares < here.squares)) {
            here = {worst, squares, j, g};
          }
        }
      }
    }
  }
  std::vector<Group> groups;
  for (int i = n, d = devices; i > 0;) {
    const Best& b = best[i][d];
    groups.push_back({b.from, i, b.group});
    d -= b.group;
    i = b.from;
  }
  std::reverse(groups.begin(), groups.end());
  return groups;
}

class PipeBdScheduler : public Scheduler {
 public:
  Schedule Build(const SchedulerOptions& o) const override {
    if (!o.workload.blockwise) {
      throw std::invalid_argument(
          "pipebd schedules blockwise distillation (each student block learns its teacher "
          "block); this algorithm trains end to end: use tspipe, gpipe or dp");
    }
    const int n = o.num_stages, m = o.num_microbatches;
    const int devices = o.num_devices > 0 ? o.num_devices : o.num_stages;
    if (devices > n * m) {
      throw std::invalid_argument("pipebd gives every device at least one block and micro-batch: " +
                                  std::to_string(devices) + " devices for " + std::to_string(n) +
                                  " blocks x " + std::to_string(m) + " micro-batches");
    }
    const CostModel& c = o.costs;
    std::vector<double> prefix(n + 1, 0.0);  // Cost of blocks [0, i) per micro-batch.
    for (int s = 0; s < n; ++s) {
      prefix[s + 1] = prefix[s] + c.Cost({s, 0, Op::kTeacherForward}) +
                      c.Cost({s, 0, Op::kForward}) + c.Cost({s, 0, Op::kBackward});
    }
    const std::vector<Group> groups = ChooseGroups(prefix, m, devices, c);
    Schedule s;
    s.num_stages = n;
    s.num_microbatches = m;
    s.workload = o.workload;
    s.ranks.resize(devices);
    int rank = 0;
    for (const Group& g : groups) {
      std::vector<int> members;
      for (int i = 0; i < g.devices; ++i) members.push_back(rank + i);
      for (int st = g.first; st < g.end; ++st) s.placement.push_back(members);
      for (int i = 0; i < g.devices; ++i) {
        auto& actions = s.ranks[members[i]];
        int begin, end;
        ReplicaShare(m, g.devices, i, &begin, &end);
        for (int mb = begin; mb < end; ++mb) {
          // Teacher first, so its activation leaves for the next group
          // (LowerCommunication puts the send right after the last teacher
          // forward) while this device trains its students on the same
          // micro-batch.
          for (int st = g.first; st < g.end; ++st) actions.push_back({st, mb, Op::kTeacherForward});
          for (int st = g.first; st < g.end; ++st) {
            actions.push_back({st, mb, Op::kForward});
            actions.push_back({st, mb, Op::kLoss});
            // Lowering starts a replicated block's all-reduce right after
            // its last backward; the step waits for the sums.
            actions.push_back({st, mb, Op::kBackward});
          }
        }
        for (int st = g.first; st < g.end; ++st) {
          actions.push_back({st, kAllMicrobatches, Op::kOptimizerStep});
        }
      }
      rank += g.devices;
    }
    return s;
  }
};

TSPIPE_REGISTER_SCHEDULER("pipebd",
                          "Pipe-BD for blockwise distillation: contiguous blocks per device, "
                          "teacher activations relayed, each device steps on its own",
                          [] { return std::make_unique<PipeBdScheduler>(); });

}  // namespace
}  // namespace tspipe
