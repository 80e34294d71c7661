#include "core/schedule.h"

#include <gtest/gtest.h>

#include "io/file_util.h"
#include "core/scheduler.h"
#include "core/validator.h"

namespace tspipe {
namespace {

Schedule Gpipe(int stages, int mbs) {
  SchedulerOptions o;
  o.num_stages = stages;
  o.num_microbatches = mbs;
  return BuildSchedule("gpipe", o);
}

TEST(ScheduleTest, CsvRoundTrip) {
  SchedulerOptions o;
  o.num_stages = 3;
  o.num_microbatches = 4;
  o.workload.teacher = TeacherKind::kMomentum;
  Schedule s = BuildSchedule("gpipe", o);
  Schedule back;
  std::string error;
  ASSERT_TRUE(FromCsv(ToCsv(s), &back, &error)) << error;
  EXPECT_EQ(back.scheduler, "gpipe");
  EXPECT_EQ(back.num_stages, 3);
  EXPECT_EQ(back.num_microbatches, 4);
  EXPECT_EQ(back.workload.teacher, TeacherKind::kMomentum);
  EXPECT_EQ(back.placement, s.placement);
  EXPECT_EQ(back.ranks, s.ranks);
}

TEST(ScheduleTest, GpipeMatchesHandWrittenGolden) {
  Schedule golden;
  std::string error;
  ASSERT_TRUE(FromCsv(ReadFile("tests/golden/gpipe_s2_m2.csv"), &golden, &error)) << error;
  EXPECT_TRUE(Validate(golden).ok()) << Validate(golden).ToString();
  Schedule built = Gpipe(2, 2);
  ASSERT_EQ(built.num_ranks(), golden.num_ranks());
  for (int r = 0; r < built.num_ranks(); ++r) {
    std::string got, want;
    for (const Action& a : built.ranks[r]) got += ToString(a) + " ";
    for (const Action& a : golden.ranks[r]) want += ToString(a) + " ";
    EXPECT_EQ(got, want) << "rank " << r;
  }
  EXPECT_EQ(built.placement, golden.placement);
}

TEST(ScheduleTest, CsvErrorsNameTheLine) {
  Schedule s;
  std::string error;
  EXPECT_FALSE(FromCsv("# stages=1\n# placement=0\n0,0F0,0Q\n", &s, &error));
  EXPECT_NE(error.find("line 3"), std::string::npos) << error;
  EXPECT_NE(error.find("'0Q'"), std::string::npos) << error;
  EXPECT_FALSE(FromCsv("# stages=2\n# placement=0\n", &s, &error));
  EXPECT_NE(error.find("placement"), std::string::npos) << error;
}

TEST(ScheduleTest, ReplicaShareCoversAllMicrobatchesOnce) {
  for (int n = 1; n <= 9; ++n) {
    for (int reps = 1; reps <= n; ++reps) {
      int next = 0;
      for (int i = 0; i < reps; ++i) {
        int b, e;
        ReplicaShare(n, reps, i, &b, &e);
        EXPECT_EQ(b, next);
        EXPECT_GE(e - b, n / reps);
        EXPECT_LE(e - b, n / reps + 1);
        next = e;
      }
      EXPECT_EQ(next, n);
    }
  }
}

TEST(ScheduleTest, SequentialHasNoCommunication) {
  SchedulerOptions o;
  o.num_stages = 4;
  o.num_microbatches = 3;
  Schedule s = BuildSchedule("sequential", o);
  ASSERT_EQ(s.num_ranks(), 1);
  for (const Action& a : s.ranks[0]) EXPECT_FALSE(IsCommunication(a.op)) << ToString(a);
}

}  // namespace
}  // namespace tspipe

namespace tspipe {
namespace {

Workload PeerWorkload() {
  Workload w;
  w.teacher = TeacherKind::kMomentum;
  return w;
}

TEST(ReplicateModelsTest, EachModelGetsItsOwnRanksAndShareOfMicrobatches) {
  SchedulerOptions o;
  o.num_stages = 2;
  o.num_microbatches = 2;
  o.workload = PeerWorkload();
  const Schedule one = BuildSchedule("gpipe", o);
  const Schedule s = ReplicateModels(one, 2);
  EXPECT_TRUE(s.workload.independent_replicas);
  EXPECT_EQ(s.num_microbatches, 4);
  EXPECT_EQ(s.num_ranks(), 4);
  EXPECT_EQ(s.placement, (std::vector<std::vector<int>>{{0, 2}, {1, 3}}));
  EXPECT_EQ(FormatPlacement(s), "0|2;1|3");
  // Model 1 (ranks 2, 3) runs model 0's actions on micro-batches 2 and 3,
  // talking to its own ranks, written out by hand for rank 2.
  std::vector<std::string> rank2;
  for (const Action& a : s.ranks[2]) rank2.push_back(ToString(a));
  EXPECT_EQ(rank2,
            (std::vector<std::string>{"0T2", "0ST2>3", "0F2", "0SA2>3", "0T3", "0ST3>3", "0F3",
                                      "0SA3>3", "0RG2<3", "0B2", "0RG3<3", "0B3", "0O", "0U"}))
      << ToCsv(s);
  EXPECT_EQ(s.MicrobatchesOf(1, 3), (std::vector<int>{2, 3}));
  EXPECT_TRUE(Validate(s).ok()) << Validate(s).ToString();
  Schedule back;
  std::string error;
  ASSERT_TRUE(FromCsv(ToCsv(s), &back, &error)) << error;
  EXPECT_TRUE(back.workload.independent_replicas);
}

TEST(ReplicateModelsTest, RefusesReplicatedStagesAndTeachersThatNeverChange) {
  SchedulerOptions o;
  o.num_stages = 2;
  o.num_microbatches = 2;
  o.workload = PeerWorkload();
  EXPECT_THROW(ReplicateModels(BuildSchedule("dp", o), 2), std::invalid_argument);
  EXPECT_THROW(ReplicateModels(BuildSchedule("gpipe", o), 1), std::invalid_argument);
  o.workload.teacher = TeacherKind::kFrozen;
  EXPECT_THROW(ReplicateModels(BuildSchedule("gpipe", o), 2), std::invalid_argument);
}

TEST(ReplicateModelsTest, ValidatorRefusesGradientAllReduceBetweenSeparateModels) {
  SchedulerOptions o;
  o.num_stages = 1;
  o.num_microbatches = 2;
  o.workload = PeerWorkload();
  Schedule s = ReplicateModels(BuildSchedule("sequential", o), 2);
  ASSERT_TRUE(Validate(s).ok());
  for (int r = 0; r < 2; ++r) {
    auto& actions = s.ranks[r];
    actions.insert(actions.end() - 2, Action{0, kAllMicrobatches, Op::kAllReduceGradients});
  }
  const ValidationResult v = Validate(s);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.ToString().find("unexpected action 0AR on rank 0"), std::string::npos)
      << v.ToString();
}

}  // namespace
}  // namespace tspipe
