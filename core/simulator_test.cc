#include "core/simulator.h"

#include <gtest/gtest.h>

#include "core/render.h"
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

// The textbook GPipe bubble, (p-1)/(m+p-1), for any forward/backward costs.
TEST(SimulatorTest, GpipeBubbleMatchesFormula) {
  for (double backward : {1.0, 2.0}) {
    for (int p = 1; p <= 6; ++p) {
      for (int m = 1; m <= 10; ++m) {
        CostModel costs;
        costs.forward = 1.0;
        costs.backward = backward;
        SimulationResult r = Simulate(Gpipe(p, m), costs);
        ASSERT_FALSE(r.deadlocked);
        double formula = static_cast<double>(p - 1) / (m + p - 1);
        EXPECT_NEAR(r.BubbleFraction(), formula, 1e-12) << "p=" << p << " m=" << m;
        EXPECT_NEAR(r.makespan, (m + p - 1) * (1.0 + backward), 1e-12);
      }
    }
  }
}

TEST(SimulatorTest, MessageLatencyDelaysTheReceiver) {
  CostModel costs;
  costs.message = 0.5;
  SimulationResult r = Simulate(Gpipe(2, 1), costs);
  // F0 (1) + msg (.5) + F1 (1) + B1 (2) + msg (.5) + B0 (2)
  EXPECT_NEAR(r.makespan, 7.0, 1e-12);
}

TEST(SimulatorTest, SequentialHasNoBubble) {
  SchedulerOptions o;
  o.num_stages = 3;
  o.num_microbatches = 4;
  SimulationResult r = Simulate(BuildSchedule("sequential", o), CostModel{});
  EXPECT_NEAR(r.BubbleFraction(), 0.0, 1e-12);
  EXPECT_NEAR(r.makespan, 3 * 4 * 3.0, 1e-12);
}

TEST(SimulatorTest, ReportsDeadlock) {
  Schedule s = Gpipe(2, 1);
  // Rank 0 waits for the gradient before sending the activation: a cycle.
  auto& r0 = s.ranks[0];
  std::swap(r0[1], r0[2]);  // 0F0, 0RG0<1, 0SA0>1, ...
  SimulationResult r = Simulate(s, CostModel{});
  EXPECT_TRUE(r.deadlocked);
  EXPECT_NE(r.deadlock_report.find("rank 0 blocked at step 1 on 0RG0<1"), std::string::npos)
      << r.deadlock_report;
  EXPECT_NE(r.deadlock_report.find("1RA0<0"), std::string::npos) << r.deadlock_report;
}

TEST(SimulatorTest, GridShowsEachComputeActionInItsSlot) {
  Schedule s = Gpipe(2, 2);
  std::string grid = FormatGrid(s, Simulate(s, CostModel{}));
  // Slot 0: rank 0 runs 0F0, rank 1 idles; slot 1: 0F1 and 1F0.
  EXPECT_NE(grid.find("   0  0F0  .   \n"), std::string::npos) << grid;
  EXPECT_NE(grid.find("   1  0F1  1F0 \n"), std::string::npos) << grid;
  EXPECT_NE(TimelineSvg(s, Simulate(s, CostModel{})).find("</svg>"), std::string::npos);
}

}  // namespace
}  // namespace tspipe

namespace tspipe {
namespace {

TEST(SimulatorTest, AllReduceOverlapsComputationUntilTheOptimizerStep) {
  // dp, 2 replicas, 2 stages, one micro-batch each; by hand with F = 1,
  // B = 2, all-reduce 5: F0 0-1, F1 1-2, B1 2-4 (AR1 4-9), B0 4-6 (AR0
  // 6-11), O0 waits until 11, O1 (AR1 done at 9) at 11. Makespan 11, where
  // all-reduces that held the rank would give 16.
  SchedulerOptions o;
  o.num_stages = 2;
  o.num_microbatches = 2;
  Schedule s = BuildSchedule("dp", o);
  CostModel c;
  c.all_reduce = 5;
  SimulationResult r = Simulate(s, c);
  ASSERT_FALSE(r.deadlocked) << r.deadlock_report;
  EXPECT_DOUBLE_EQ(r.makespan, 11.0) << ToCsv(s);
  // Back to back, each iteration's steps wait for that iteration's
  // all-reduces: a replica's next F0 starts when its O1 ends (11), so the
  // period is 11 (the steady state once took every iteration's step for
  // the first one's and deadlocked).
  const SteadyState steady = SimulateSteadyState(s, c);
  ASSERT_FALSE(steady.deadlocked);
  EXPECT_DOUBLE_EQ(steady.period, 11.0);
}

// A clipping step waits, as the executor does, for the all-reduces its rank
// started. dp, 2 replicas of 2 stages, one micro-batch each, by hand with
// F = 1, B = 2, all-reduce 5, GN 1: B1 2-4 starts AR1 (4-9), B0 4-6 starts
// AR0 (6-11); GN joins at 11 and ends at 12; the steps follow. Makespan 12
// (a GN that ignored the all-reduces ran at 6-7 and gave 11).
TEST(SimulatorTest, ClippingWaitsForTheRanksAllReduces) {
  SchedulerOptions o;
  o.num_stages = 2;
  o.num_microbatches = 2;
  o.workload.clip_gradients = true;
  Schedule s = BuildSchedule("dp", o);
  CostModel c;
  c.all_reduce = 5;
  c.gradient_sync = 1;
  SimulationResult r = Simulate(s, c);
  ASSERT_FALSE(r.deadlocked) << r.deadlock_report;
  EXPECT_DOUBLE_EQ(r.makespan, 12.0) << ToCsv(s);
}

// GPipe runs every forward before any backward: each stage holds all M
// micro-batches, and the loss stage the teacher's M outputs (a KD workload).
TEST(PeakStashesTest, GpipeHoldsEveryMicrobatch) {
  for (int m : {1, 3, 6}) {
    SchedulerOptions o;
    o.num_stages = 3;
    o.num_microbatches = m;
    o.workload.teacher = TeacherKind::kFrozen;
    StashPeaks p = PeakStashes(BuildSchedule("gpipe", o));
    EXPECT_EQ(p.student, (std::vector<int>{m, m, m})) << m;
    EXPECT_EQ(p.teacher, (std::vector<int>{0, 0, m})) << m;
  }
}

// One stage on one rank, two micro-batches, from compact actions.
Schedule OneStage(const std::vector<std::string>& text, bool teacher) {
  Schedule s;
  s.scheduler = "hand";
  s.num_stages = 1;
  s.num_microbatches = 2;
  s.workload.teacher = teacher ? TeacherKind::kFrozen : TeacherKind::kNone;
  s.placement = {{0}};
  s.ranks.resize(1);
  for (const std::string& t : text) {
    Action a;
    std::string error;
    EXPECT_TRUE(ParseAction(t, &a, &error)) << error;
    s.ranks[0].push_back(a);
  }
  return s;
}

// One rank, one stage, two micro-batches, worked by hand. The look-ahead
// teacher forwards (+1) of the previous iteration are held at the start;
// run before the loss, the next batch's outputs sit on top of this one's.
TEST(PeakStashesTest, LookAheadTeacherOutputsCountOnTop) {
  auto build = [](const std::vector<std::string>& text) { return OneStage(text, true); };
  // Student: F0 F1 -> 2 held; L; B1 B0 -> 0. Teacher: 2 carried, L uses
  // them (0), then the next batch's two (2).
  StashPeaks after = PeakStashes(build({"0F0", "0F1", "0L", "0B1", "0B0", "0T0+1", "0T1+1", "0O"}));
  EXPECT_EQ(after.student, std::vector<int>{2});
  EXPECT_EQ(after.teacher, std::vector<int>{2});
  // The next batch's teacher forwards first: 2 carried + 2 = 4 before L.
  StashPeaks before = PeakStashes(build({"0T0+1", "0T1+1", "0F0", "0F1", "0L", "0B1", "0B0", "0O"}));
  EXPECT_EQ(before.teacher, std::vector<int>{4});
  // Per-micro-batch losses free as they go: F0 L0 B0 F1 L1 B1 holds one.
  StashPeaks one = PeakStashes(build({"0T0", "0F0", "0L0", "0B0", "0T1", "0F1", "0L1", "0B1", "0O"}));
  EXPECT_EQ(one.student, std::vector<int>{1});
  EXPECT_EQ(one.teacher, std::vector<int>{1});
}

}  // namespace
}  // namespace tspipe

namespace tspipe {
namespace {

// In bytes: each stash count times the bytes one micro-batch keeps there.
// GPipe at 3 stages, 2 micro-batches: {2, 2, 2} student, {0, 0, 2} teacher.
TEST(PeakStashesTest, BytesAreCountsTimesMeasuredSizes) {
  SchedulerOptions o;
  o.num_stages = 3;
  o.num_microbatches = 2;
  o.workload.teacher = TeacherKind::kFrozen;
  const Schedule s = BuildSchedule("gpipe", o);
  const std::vector<double> bytes = StashBytes(PeakStashes(s), {100, 200, 300}, {0, 0, 7});
  EXPECT_EQ(bytes, (std::vector<double>{200, 400, 614}));
  // Missing sizes count nothing.
  EXPECT_EQ(StashBytes(PeakStashes(s), {100}, {}), (std::vector<double>{200, 0, 0}));
  const std::string stats =
      FormatStats(s, Simulate(s, CostModel{}), CostModel{}, {100, 200, 300}, {0, 0, 7});
  EXPECT_NE(stats.find("stash_bytes_stage2=614\n"), std::string::npos) << stats;
  EXPECT_EQ(FormatStats(s, Simulate(s, CostModel{}), CostModel{}).find("stash_bytes"),
            std::string::npos);
}

// A split backward keeps the micro-batch until its W; `weight` counts
// those between their I and W.
TEST(PeakStashesTest, SplitBackwardHoldsUntilTheWeightGradient) {
  const Schedule s =
      OneStage({"0F0", "0F1", "0L", "0I0", "0I1", "0W0", "0W1", "0O"}, /*teacher=*/false);
  ASSERT_TRUE(Validate(s).ok()) << Validate(s).ToString();
  const StashPeaks p = PeakStashes(s);
  EXPECT_EQ(p.student, std::vector<int>{2});
  EXPECT_EQ(p.weight, std::vector<int>{2});
  EXPECT_NE(FormatStats(s, Simulate(s, CostModel{}), CostModel{}).find(
                "weight_stash_peak_stage0=2\n"),
            std::string::npos);
}

}  // namespace
}  // namespace tspipe
