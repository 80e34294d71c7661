#include <gtest/gtest.h>

#include <algorithm>

#include "core/file_util.h"
#include "core/scheduler.h"
#include "core/simulator.h"
#include "core/validator.h"

namespace tspipe {
namespace {

SchedulerOptions KdOptions(int stages, int mbs) {
  SchedulerOptions o;
  o.num_stages = stages;
  o.num_microbatches = mbs;
  o.workload.has_teacher = true;
  o.workload.full_batch_loss = false;
  return o;
}

std::string Joined(const std::vector<Action>& actions) {
  std::string out;
  for (const Action& a : actions) out += ToString(a) + " ";
  return out;
}

TEST(TSPipeTest, ValidForAnyStagesAndMicrobatches) {
  for (int n = 1; n <= 6; ++n) {
    for (int m = 1; m <= 8; ++m) {
      for (bool updates : {false, true}) {
        SchedulerOptions o = KdOptions(n, m);
        o.workload.teacher_updates = updates;
        Schedule s = BuildSchedule("tspipe", o);  // Throws if invalid.
        EXPECT_TRUE(Validate(s).ok());
        EXPECT_FALSE(Simulate(s, o.costs).deadlocked);
      }
    }
  }
}

TEST(TSPipeTest, MatchesHandDerivedGolden) {
  Schedule golden;
  std::string error;
  ASSERT_TRUE(FromCsv(ReadFile("tests/golden/tspipe_s2_m2.csv"), &golden, &error)) << error;
  ASSERT_TRUE(Validate(golden).ok()) << Validate(golden).ToString();
  Schedule built = BuildSchedule("tspipe", KdOptions(2, 2));
  ASSERT_EQ(built.num_ranks(), 2);
  for (int r = 0; r < 2; ++r) EXPECT_EQ(Joined(built.ranks[r]), Joined(golden.ranks[r])) << r;
  SimulationResult sim = Simulate(built, CostModel{});
  EXPECT_DOUBLE_EQ(sim.makespan, 9.0);
}

TEST(TSPipeTest, TeacherForwardsAreForTheNextBatch) {
  Schedule s = BuildSchedule("tspipe", KdOptions(3, 4));
  for (const auto& rank : s.ranks) {
    for (const Action& a : rank) {
      if (a.op == Op::kTeacherForward) {
        EXPECT_EQ(a.batch_offset, 1) << ToString(a);
      }
    }
  }
}

// With teacher forward = student forward = 1 and backward = 2, in steady
// state (iterations back to back, as the executor runs them). A synchronous
// student bounds any schedule: stage 0 cannot start batch b+1 before its
// backward of b, so period >= (M+N-1)(F+B); and a rank cannot do more than
// its work M(F+T+B) per period. TSPipe reaches that bound; GPipe, whose
// teacher forwards sit inside the fill-drain, does not.
TEST(TSPipeTest, SteadyBubbleReachesTheSynchronousBoundAndBeatsGpipe) {
  for (auto [n, m] : {std::pair<int, int>{4, 3}, {2, 4}, {2, 2}, {4, 8}, {8, 7}, {3, 16}}) {
    SchedulerOptions o = KdOptions(n, m);
    const double f = 1, t = 1, b = 2;
    double work = m * (f + t + b);
    double period_bound = std::max(work, (m + n - 1) * (f + b));
    double bound = 1.0 - work / period_bound;
    SteadyState ts = SimulateSteadyState(BuildSchedule("tspipe", o), o.costs);
    SteadyState gp = SimulateSteadyState(BuildSchedule("gpipe", o), o.costs);
    ASSERT_FALSE(ts.deadlocked);
    EXPECT_NEAR(ts.bubble_fraction, bound, 1e-9) << "n=" << n << " m=" << m;
    EXPECT_LT(ts.period, gp.period) << "n=" << n << " m=" << m;
  }
  // Where the student's own pipeline leaves room (N=2, M=4), the teacher
  // fills the bubble completely, against GPipe's 3/19.
  SchedulerOptions o = KdOptions(2, 4);
  EXPECT_NEAR(SimulateSteadyState(BuildSchedule("tspipe", o), o.costs).bubble_fraction, 0.0, 1e-9);
  EXPECT_NEAR(SimulateSteadyState(BuildSchedule("gpipe", o), o.costs).bubble_fraction, 3.0 / 19,
              1e-9);
}

TEST(TSPipeTest, PrologueRunsEachTeacherForwardOnce) {
  Schedule s = BuildSchedule("tspipe", KdOptions(3, 4));
  Schedule p = TeacherPrologue(s);
  int forwards = 0;
  for (const auto& rank : p.ranks) {
    for (const Action& a : rank) {
      EXPECT_EQ(a.batch_offset, 0);
      EXPECT_TRUE(a.op == Op::kTeacherForward || a.op == Op::kSendTeacherActivation ||
                  a.op == Op::kRecvTeacherActivation)
          << ToString(a);
      forwards += a.op == Op::kTeacherForward;
    }
  }
  EXPECT_EQ(forwards, 3 * 4);
  EXPECT_FALSE(Simulate(p, CostModel{}).deadlocked);
  // GPipe needs no prologue.
  for (const auto& rank : TeacherPrologue(BuildSchedule("gpipe", KdOptions(3, 4))).ranks) {
    EXPECT_TRUE(rank.empty());
  }
}

TEST(TSPipeTest, RefusesBlockwiseWorkloads) {
  SchedulerOptions o = KdOptions(2, 2);
  o.workload.local_losses = true;
  EXPECT_THROW(BuildSchedule("tspipe", o), std::invalid_argument);
}

}  // namespace
}  // namespace tspipe
