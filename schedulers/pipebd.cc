// Pipe-BD (Jang et al., DATE 2023; reference hongsunjang/pipe-bd) for
// blockwise distillation (Workload::blockwise, one stage per block pair):
//  - teacher relaying: each device holds a contiguous run of blocks, runs
//    their teacher forwards once per micro-batch and passes the last
//    activation on to the next device, so no device re-runs a teacher
//    prefix (the DNA-style data-parallel baseline does: `dp` here runs every
//    block on every device, on a share of the batch);
//  - decoupled parameter update: the blocks share nothing, so each device
//    steps its own blocks as soon as its backward ends, with no barrier
//    between devices or iterations.
// The run of blocks per device minimises the slowest device: each block
// costs its teacher forward plus its student forward and backward
// (SchedulerOptions::costs; unit costs when unknown), cut exactly by
// SolveBalance. Any device count from 1 to the block count works (the
// reference supports 4 GPUs only). Replicating a stage over a group of
// devices (the paper's hybrid distribution) is not done yet.
#include <stdexcept>

#include "core/balance.h"
#include "core/scheduler.h"

namespace tspipe {
namespace {

class PipeBdScheduler : public Scheduler {
 public:
  int NumDevices(const SchedulerOptions& o) const override {
    return o.num_devices > 0 ? o.num_devices : o.num_stages;
  }

  Schedule Build(const SchedulerOptions& o) const override {
    if (!o.workload.blockwise) {
      throw std::invalid_argument(
          "pipebd schedules blockwise distillation (each student block learns its teacher "
          "block); this algorithm trains end to end: use tspipe, gpipe or dp");
    }
    const int n = o.num_stages, devices = NumDevices(o);
    if (devices > n) {
      throw std::invalid_argument("pipebd gives every device at least one block: " +
                                  std::to_string(devices) + " devices for " + std::to_string(n) +
                                  " blocks");
    }
    const CostModel& c = o.costs;
    auto per_stage = [&](const std::vector<double>& v, double unit, int s) {
      return v.empty() ? unit : v.at(s);
    };
    std::vector<double> block_costs;
    for (int s = 0; s < n; ++s) {
      block_costs.push_back(per_stage(c.teacher_forward_per_stage, c.teacher_forward, s) +
                            per_stage(c.forward_per_stage, c.forward, s) +
                            per_stage(c.backward_per_stage, c.backward, s));
    }
    const std::vector<int> runs = SolveBalance(block_costs, {}, devices).student;

    Schedule s;
    s.num_stages = n;
    s.num_microbatches = o.num_microbatches;
    s.workload = o.workload;
    s.ranks.resize(devices);
    int first = 0;
    for (int r = 0; r < devices; ++r) {
      const int end = first + runs[r];
      for (int st = first; st < end; ++st) s.placement.push_back({r});
      auto& actions = s.ranks[r];
      for (int mb = 0; mb < o.num_microbatches; ++mb) {
        // Teacher first, so its activation leaves for the next device
        // (LowerCommunication puts the send right after the last teacher
        // forward) while this device trains its students on the same
        // micro-batch.
        for (int st = first; st < end; ++st) actions.push_back({st, mb, Op::kTeacherForward});
        for (int st = first; st < end; ++st) {
          actions.push_back({st, mb, Op::kForward});
          actions.push_back({st, mb, Op::kLoss});
          actions.push_back({st, mb, Op::kBackward});
        }
      }
      for (int st = first; st < end; ++st) {
        actions.push_back({st, kAllMicrobatches, Op::kOptimizerStep});
      }
      first = end;
    }
    LowerCommunication(&s);
    return s;
  }
};

TSPIPE_REGISTER_SCHEDULER("pipebd",
                          "Pipe-BD for blockwise distillation: contiguous blocks per device, "
                          "teacher activations relayed, each device steps on its own",
                          PipeBdScheduler);

}  // namespace
}  // namespace tspipe
