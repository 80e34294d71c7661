// GPipe (Huang et al. 2019): fill-drain with a synchronous flush. Stage s runs
// on rank s: all micro-batch forwards, the loss over the whole mini-batch on
// the last stage, all backwards, then its optimizer step. With unit costs
// its bubble is (p-1)/(m+p-1).
//
// With a teacher (KD), the teacher is pipelined over the same ranks and its
// forward of micro-batch k runs just before the student's: the teacher
// shares the student's fill and drain bubbles instead of filling them (that is
// what TSPipe changes).
#include "core/scheduler.h"

namespace tspipe {
namespace {

class GPipeScheduler : public Scheduler {
 public:
  Schedule Build(const SchedulerOptions& o) const override {
    CheckOneStagePerDevice("gpipe", o);
    Schedule s;
    s.num_stages = o.num_stages;
    s.num_microbatches = o.num_microbatches;
    s.workload = o.workload;
    s.ranks.resize(o.num_stages);
    const int last = o.num_stages - 1;
    for (int st = 0; st < o.num_stages; ++st) {
      s.placement.push_back({st});
      auto& actions = s.ranks[st];
      for (int mb = 0; mb < o.num_microbatches; ++mb) {
        if (o.workload.has_teacher()) actions.push_back({st, mb, Op::kTeacherForward});
        actions.push_back({st, mb, Op::kForward});
      }
      if (st == last || o.workload.local_losses) {
        actions.push_back({st, kAllMicrobatches, Op::kLoss});
      }
      for (int mb = 0; mb < o.num_microbatches; ++mb) {
        actions.push_back({st, mb, Op::kBackward});
      }
      actions.push_back({st, kAllMicrobatches, Op::kOptimizerStep});
      if (o.workload.teacher_updates()) {
        actions.push_back({st, kAllMicrobatches, Op::kTeacherUpdate});
      }
    }
    return s;
  }
};

TSPIPE_REGISTER_SCHEDULER("gpipe",
                          "GPipe fill-drain pipeline, one stage per device, "
                          "synchronous flush",
                          [] { return std::make_unique<GPipeScheduler>(); });

}  // namespace
}  // namespace tspipe
