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
  return kind == TeacherKind::kMomentum ? batch - 1 : 0;
}

int DelayedTeacherPolicy::TeacherVersion(int batch, TeacherKind kind) const {
  CheckBatch(batch);
  return kind == TeacherKind::kMomentum ? std::max(0, batch - 2) : 0;
}

static const bool kSyncRegistered = UpdatePolicyRegistry::Global().Register(
    "sync", "student b-1, momentum teacher b-1 (standard)",
    [] { return std::unique_ptr<UpdatePolicy>(new SynchronousPolicy()); });
static const bool kDelayedRegistered = UpdatePolicyRegistry::Global().Register(
    "tspipe_delayed", "student b-1, momentum teacher b-2 (TSPipe)",
    [] { return std::unique_ptr<UpdatePolicy>(new DelayedTeacherPolicy()); });

}  // namespace tspipe
