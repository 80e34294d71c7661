// The reference schedule: every stage on one device, micro-batch by
// micro-batch, with the same gradient accumulation as the pipelines. Its
// throughput is the baseline that "ideal" speed-ups are measured against.
#include "core/scheduler.h"

namespace tspipe {
namespace {

class SequentialScheduler : public Scheduler {
 public:
  bool RunsOnOneDevice() const override { return true; }

  Schedule Build(const SchedulerOptions& o) const override {
    if (o.num_devices > 1) {
      throw std::invalid_argument("sequential runs on one device, got " +
                                  std::to_string(o.num_devices));
    }
    Schedule s;
    s.num_stages = o.num_stages;
    s.num_microbatches = o.num_microbatches;
    s.workload = o.workload;
    s.ranks.resize(1);
    auto& actions = s.ranks[0];
    const int last = o.num_stages - 1;
    for (int st = 0; st < o.num_stages; ++st) s.placement.push_back({0});
    for (int mb = 0; mb < o.num_microbatches; ++mb) {
      for (int st = 0; st < o.num_stages; ++st) {
        if (o.workload.has_teacher()) actions.push_back({st, mb, Op::kTeacherForward});
        actions.push_back({st, mb, Op::kForward});
      }
    }
    for (int st = 0; st < o.num_stages; ++st) {
      if (st == last || o.workload.local_losses) {
        actions.push_back({st, kAllMicrobatches, Op::kLoss});
      }
    }
    for (int mb = 0; mb < o.num_microbatches; ++mb) {
      for (int st = last; st >= 0; --st) actions.push_back({st, mb, Op::kBackward});
    }
    for (int st = 0; st < o.num_stages; ++st) {
      actions.push_back({st, kAllMicrobatches, Op::kOptimizerStep});
      if (o.workload.teacher_updates()) {
        actions.push_back({st, kAllMicrobatches, Op::kTeacherUpdate});
      }
    }
    return s;
  }
};

TSPIPE_REGISTER_SCHEDULER("sequential",
                          "all stages on one device, micro-batch by micro-batch "
                          "(the baseline)",
                          [] { return std::make_unique<SequentialScheduler>(); });

}  // namespace
}  // namespace tspipe
