#include "core/update_policy.h"

#include <gtest/gtest.h>

namespace tspipe {
namespace {

TEST(UpdatePolicyTest, SynchronousUsesPreviousVersions) {
  SynchronousPolicy p;
  for (int b = 1; b <= 5; ++b) {
    EXPECT_EQ(p.StudentVersion(b), b - 1);
    EXPECT_EQ(p.TeacherVersion(b, TeacherKind::kMomentum), b - 1);
    EXPECT_EQ(p.TeacherVersion(b, TeacherKind::kFrozen), 0);
  }
  EXPECT_TRUE(p.IsSynchronous(TeacherKind::kMomentum));
}

TEST(UpdatePolicyTest, DelayedTeacherIsOneStepStalerOnlyForMomentum) {
  DelayedTeacherPolicy p;
  SynchronousPolicy sync;
  EXPECT_EQ(p.TeacherVersion(1, TeacherKind::kMomentum), 0);
  for (int b = 2; b <= 6; ++b) {
    EXPECT_EQ(p.TeacherVersion(b, TeacherKind::kMomentum),
              sync.TeacherVersion(b, TeacherKind::kMomentum) - 1);
    EXPECT_EQ(p.TeacherVersion(b, TeacherKind::kFrozen), 0);
    EXPECT_EQ(p.StudentVersion(b), sync.StudentVersion(b));
  }
  EXPECT_FALSE(p.IsSynchronous(TeacherKind::kMomentum));
  EXPECT_TRUE(p.IsSynchronous(TeacherKind::kFrozen));
}

TEST(UpdatePolicyTest, RejectsBatchZero) {
  SynchronousPolicy p;
  EXPECT_THROW(p.TeacherVersion(0, TeacherKind::kMomentum), std::invalid_argument);
}

TEST(UpdatePolicyTest, RegistryListsBoth) {
  auto& r = UpdatePolicyRegistry::Global();
  EXPECT_TRUE(r.Contains("sync"));
  EXPECT_TRUE(r.Contains("tspipe_delayed"));
  EXPECT_EQ(r.Create("tspipe_delayed")->name(), "tspipe_delayed");
  EXPECT_THROW(r.Create("nope"), std::invalid_argument);
}

}  // namespace
}  // namespace tspipe
