#include "core/update_policy.h"

#include <gtest/gtest.h>

#include "core/scheduler.h"

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

Schedule MomentumSchedule(const std::string& scheduler, int stages, int microbatches) {
  SchedulerOptions o;
  o.num_stages = stages;
  o.num_microbatches = microbatches;
  o.workload.teacher = TeacherKind::kMomentum;
  return BuildSchedule(scheduler, o);
}

// GPipe, sequential and dp run batch b's teacher forwards after step b-1's
// update: the standard version b-1. TSPipe runs them during step b-1, before
// its update: version b-2. The check derives this from the action order.
TEST(CheckPolicyTest, SchedulersHonourTheirNaturalPolicy) {
  SynchronousPolicy sync;
  DelayedTeacherPolicy delayed;
  for (int n : {1, 2, 4}) {
    for (int m : {1, 3, 4}) {
      for (const char* name : {"gpipe", "sequential", "dp"}) {
        if (std::string(name) == "dp" && m < n) continue;
        Schedule s = MomentumSchedule(name, n, m);
        EXPECT_EQ(CheckPolicy(s, sync), "") << name << n << m;
        EXPECT_NE(CheckPolicy(s, delayed), "") << name << n << m;
        EXPECT_EQ(NaturalPolicy(s), "sync");
      }
      Schedule t = MomentumSchedule("tspipe", n, m);
      EXPECT_EQ(CheckPolicy(t, delayed), "") << "tspipe" << n << m;
      EXPECT_NE(CheckPolicy(t, sync), "");
      EXPECT_EQ(NaturalPolicy(t), "tspipe_delayed");
      // A frozen teacher has one version: any policy holds.
      Schedule frozen = t;
      frozen.workload.teacher = TeacherKind::kFrozen;
      EXPECT_EQ(CheckPolicy(frozen, sync), "");
    }
  }
}

TEST(CheckPolicyTest, NamesTheOffendingAction) {
  Schedule s = MomentumSchedule("gpipe", 2, 2);
  EXPECT_EQ(CheckPolicy(s, DelayedTeacherPolicy()),
            "rank 0: 0T0 (teacher forward of batch b during step b) sees target version b-1, "
            "but policy 'tspipe_delayed' wants version b-2");
  // A teacher forward moved after the update sees the new version.
  std::vector<Action>& r0 = s.ranks[0];
  Action t = r0.front();
  r0.erase(r0.begin());
  r0.push_back(t);
  EXPECT_NE(CheckPolicy(s, SynchronousPolicy()).find("sees target version b,"),
            std::string::npos);
}

}  // namespace
}  // namespace tspipe
