// Data parallelism: every device holds a replica of the whole model (teacher
// and student, all stages), takes a contiguous share of the micro-batches,
// runs them like the sequential schedule does, then the replicas all-reduce
// their gradients (summed: each replica's loss is already weighted by its
// share of the mini-batch) and step their optimizers. Replicas start equal (the
// executor broadcasts the first replica's state) and see equal gradients, so
// their parameters stay equal. Batch-norm running statistics are not synced:
// each replica's come from its own share of the micro-batches, and the
// first replica's are the ones evaluated (as torch DDP's broadcast_buffers).
//
// Same schedule data for the single-process backend (replicas are threads)
// and for c10d (replicas are processes).
#include "core/scheduler.h"

namespace tspipe {
namespace {

class DataParallelScheduler : public Scheduler {
 public:
  Schedule Build(const SchedulerOptions& o) const override {
    // The same device count as the pipelines by default, so that
    // throughputs compare on equal hardware.
    const int devices = o.num_devices > 0 ? o.num_devices : o.num_stages;
    if (devices > o.num_microbatches) {
      throw std::invalid_argument(
          "dp splits the micro-batches over the devices: " + std::to_string(devices) +
          " devices need at least " + std::to_string(devices) + " micro-batches, got " +
          std::to_string(o.num_microbatches));
    }
    if (o.workload.full_batch_loss && devices > 1) {
      // Each replica's loss covers its own share only; MoCo's negatives
      // would then span a share, not the batch.
      throw std::invalid_argument(
          "dp splits the mini-batch over " + std::to_string(devices) +
          " replicas, but this algorithm's loss needs the whole mini-batch at once "
          "(e.g. contrastive negatives); use a pipeline scheduler");
    }
    Schedule s;
    s.num_stages = o.num_stages;
    s.num_microbatches = o.num_microbatches;
    s.workload = o.workload;
    std::vector<int> all(devices);
    for (int r = 0; r < devices; ++r) all[r] = r;
    s.placement.assign(o.num_stages, all);
    s.ranks.resize(devices);
    const int last = o.num_stages - 1;
    for (int r = 0; r < devices; ++r) {
      int begin, end;
      ReplicaShare(o.num_microbatches, devices, r, &begin, &end);
      auto& actions = s.ranks[r];
      for (int mb = begin; mb < end; ++mb) {
        for (int st = 0; st < o.num_stages; ++st) {
          if (o.workload.has_teacher()) actions.push_back({st, mb, Op::kTeacherForward});
          actions.push_back({st, mb, Op::kForward});
        }
      }
      // Per-stage losses (blockwise distillation): every replica runs every
      // block on its share, the DNA-style baseline Pipe-BD is measured
      // against (minus its re-running of teacher prefixes).
      for (int st = o.workload.local_losses ? 0 : last; st <= last; ++st) {
        actions.push_back({st, kAllMicrobatches, Op::kLoss});
      }
      // Lowering adds each stage's all-reduce right after its last
      // backward, so the backward of the earlier stages overlaps it (the
      // executor waits for the sums only at the optimizer step).
      for (int mb = begin; mb < end; ++mb) {
        for (int st = last; st >= 0; --st) actions.push_back({st, mb, Op::kBackward});
      }
      for (int st = 0; st < o.num_stages; ++st) {
        actions.push_back({st, kAllMicrobatches, Op::kOptimizerStep});
        if (o.workload.teacher_updates()) {
          actions.push_back({st, kAllMicrobatches, Op::kTeacherUpdate});
        }
      }
    }
    return s;
  }
};

TSPIPE_REGISTER_SCHEDULER("dp",
                          "data parallel: a full replica per device, micro-batches "
                          "split across replicas, gradients all-reduced",
                          [] { return std::make_unique<DataParallelScheduler>(); });

}  // namespace
}  // namespace tspipe
