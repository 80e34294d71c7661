#include "core/update_policy.h"

#include <algorithm>
#include <stdexcept>

namespace tspipe {
namespace {

void CheckBatch(int batch) {
  if (batch < 1) {
    throw std::invalid_argument("mini-batches are numbered from 1, got " +
                                std::to_string(batch));
  }
}

}  // namespace

int SynchronousPolicy::TeacherVersion(int batch, TeacherKind kind) const {
  CheckBatch(batch);
  return IsVersioned(kind) ? batch - 1 : 0;
}

int DelayedTeacherPolicy::TeacherVersion(int batch, TeacherKind kind) const {
  CheckBatch(batch);
  return IsVersioned(kind) ? std::max(0, batch - 2) : 0;
}

std::string CheckPolicy(const Schedule& schedule, const UpdatePolicy& policy) {
  const TeacherKind kind = schedule.workload.teacher;
  if (!IsVersioned(kind)) return "";
  // Iteration b = 3 is far enough from the start for no version to clamp.
  const int b = 3;
  for (int r = 0; r < schedule.num_ranks(); ++r) {
    const std::vector<Action>& actions = schedule.ranks[r];
    std::vector<bool> updated(schedule.num_stages, false);
    for (const Action& a : actions) {
      if (a.op == Op::kTeacherUpdate) updated[a.stage] = true;
      if (a.op != Op::kTeacherForward) continue;
      const int batch = b + a.batch_offset;
      const int seen = updated[a.stage] ? b : b - 1;
      const int wanted = policy.TeacherVersion(batch, kind);
      if (seen != wanted) {
        auto rel = [b](int v) {
          return "b" + (v == b ? std::string() : (v > b ? "+" : "") + std::to_string(v - b));
        };
        return "rank " + std::to_string(r) + ": " + ToString(a) + " (teacher forward of batch " +
               rel(batch) + " during step b) sees target version " + rel(seen) +
               ", but policy '" + policy.name() + "' wants version " + rel(wanted);
      }
    }
  }
  return "";
}

std::string NaturalPolicy(const Schedule& schedule) {
  for (const char* name : {"sync", "tspipe_delayed"}) {
    if (CheckPolicy(schedule, *UpdatePolicyRegistry::Global().Create(name)).empty()) {
      return name;
    }
  }
  return "";
}

static const bool kSyncRegistered = UpdatePolicyRegistry::Global().Register(
    "sync", "student b-1, momentum teacher b-1 (standard)",
    [] { return std::unique_ptr<UpdatePolicy>(new SynchronousPolicy()); });
static const bool kDelayedRegistered = UpdatePolicyRegistry::Global().Register(
    "tspipe_delayed", "student b-1, momentum teacher b-2 (TSPipe)",
    [] { return std::unique_ptr<UpdatePolicy>(new DelayedTeacherPolicy()); });

}  // namespace tspipe
