#include "core/schedule.h"

#include <gtest/gtest.h>

#include "core/file_util.h"
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
  o.workload.has_teacher = true;
  o.workload.teacher_updates = true;
  Schedule s = BuildSchedule("gpipe", o);
  Schedule back;
  std::string error;
  ASSERT_TRUE(FromCsv(ToCsv(s), &back, &error)) << error;
  EXPECT_EQ(back.scheduler, "gpipe");
  EXPECT_EQ(back.num_stages, 3);
  EXPECT_EQ(back.num_microbatches, 4);
  EXPECT_TRUE(back.workload.has_teacher);
  EXPECT_TRUE(back.workload.teacher_updates);
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
