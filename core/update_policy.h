// Update policies: which parameter version each pass of mini-batch b uses, and
// when each side is updated. Version k = parameters after k optimizer steps
// (version 0 = initial); mini-batch b (b >= 1) produces student version b.
//
// Schedulers promise a policy, executors honour it, and tests check it
// against a plain sequential run that applies the same policy.
#ifndef TSPIPE_CORE_UPDATE_POLICY_H_
#define TSPIPE_CORE_UPDATE_POLICY_H_

#include <memory>
#include <string>

#include "core/registry.h"
#include "core/schedule.h"

namespace tspipe {

// TeacherKind and IsVersioned: core/schedule.h.

class UpdatePolicy {
 public:
  virtual ~UpdatePolicy() = default;
  virtual std::string name() const = 0;
  // Student version used by forward and backward of mini-batch b >= 1.
  virtual int StudentVersion(int batch) const = 0;
  // Teacher (target) version used by the teacher forward of mini-batch b.
  virtual int TeacherVersion(int batch, TeacherKind kind) const = 0;
  // True when the math equals plain sequential training with the standard
  // algorithm (no staleness anywhere).
  virtual bool IsSynchronous(TeacherKind kind) const = 0;
};

// GPipe-like: student b-1, momentum teacher b-1 (standard BYOL/MoCo).
class SynchronousPolicy : public UpdatePolicy {
 public:
  std::string name() const override { return "sync"; }
  int StudentVersion(int batch) const override { return batch - 1; }
  int TeacherVersion(int batch, TeacherKind kind) const override;
  bool IsSynchronous(TeacherKind kind) const override { return true; }
};

// TSPipe's relaxed dependency: the teacher forward of mini-batch b runs during
// step b-1, so a momentum teacher is target version b-2 (clamped at 0). The
// student stays synchronous; a frozen teacher has no staleness at all.
class DelayedTeacherPolicy : public UpdatePolicy {
 public:
  std::string name() const override { return "tspipe_delayed"; }
  int StudentVersion(int batch) const override { return batch - 1; }
  int TeacherVersion(int batch, TeacherKind kind) const override;
  bool IsSynchronous(TeacherKind kind) const override { return !IsVersioned(kind); }
};

using UpdatePolicyRegistry = Registry<UpdatePolicy>;

// Checks that running `schedule` iteration after iteration gives every
// teacher forward the target version `policy` asks for, given that a
// TeacherUpdate action of iteration b makes version b. In iteration b, a
// teacher forward of batch b + offset sees version b-1 if it runs before
// its stage's TeacherUpdate and b after it. Returns "" when it does, else a
// message naming the first action that sees another version. Frozen and
// absent teachers (schedule.workload.teacher) satisfy every policy.
std::string CheckPolicy(const Schedule& schedule, const UpdatePolicy& policy);

// The first registered policy `schedule` honours ("sync" before
// "tspipe_delayed"), or "" if none.
std::string NaturalPolicy(const Schedule& schedule);

}  // namespace tspipe

#endif  // TSPIPE_CORE_UPDATE_POLICY_H_
