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

// tspipe_1f1b: the hand-derived order for N = 2, M = 2 (derivation in the
// golden file's header), with tspipe's makespan.
TEST(TSPipe1F1BTest, MatchesHandDerivedGolden) {
  Schedule golden;
  std::string error;
  ASSERT_TRUE(FromCsv(ReadFile("tests/golden/tspipe_1f1b_s2_m2.csv"), &golden, &error)) << error;
  ASSERT_TRUE(Validate(golden).ok()) << Validate(golden).ToString();
  Schedule built = BuildSchedule("tspipe_1f1b", KdOptions(2, 2));
  ASSERT_EQ(built.num_ranks(), 2);
  for (int r = 0; r < 2; ++r) EXPECT_EQ(Joined(built.ranks[r]), Joined(golden.ranks[r])) << r;
  EXPECT_DOUBLE_EQ(Simulate(built, CostModel{}).makespan, 9.0);
}

// Valid for any N and M, with and without momentum teachers, and stage s
// never holds more than min(N, N - s + 1) micro-batches for a backward
// (tspipe, like GPipe, holds all M), which it declares and the validator
// checks.
TEST(TSPipe1F1BTest, HoldsAtMostNMinusSMicrobatchesForAnyM) {
  for (int n = 1; n <= 6; ++n) {
    for (int m = 1; m <= 13; m += 2) {
      for (bool updates : {false, true}) {
        SchedulerOptions o = KdOptions(n, m);
        o.workload.teacher_updates = updates;
        Schedule s = BuildSchedule("tspipe_1f1b", o);
        ASSERT_TRUE(Validate(s).ok()) << Validate(s).ToString();
        ASSERT_EQ(s.stash_bound.size(), static_cast<size_t>(n));
        StashPeaks peaks = PeakStashes(s);
        StashPeaks ts = PeakStashes(BuildSchedule("tspipe", o));
        for (int st = 0; st < n; ++st) {
          EXPECT_EQ(s.stash_bound[st], std::min(n, n - st + 1));
          EXPECT_LE(peaks.student[st], std::min(m, std::min(n, n - st + 1)))
              << "n=" << n << " m=" << m;
          EXPECT_EQ(ts.student[st], m) << "n=" << n << " m=" << m;
        }
      }
    }
  }
}

// The target: with F = T = 1 and B = 2, tspipe_1f1b's steady bubble
// is within 0.02 of tspipe's at N = 2, 4, 8 with M = 2N.
TEST(TSPipe1F1BTest, SteadyBubbleWithinTwoPointsOfTspipe) {
  for (int n : {2, 4, 8}) {
    SchedulerOptions o = KdOptions(n, 2 * n);
    SteadyState one = SimulateSteadyState(BuildSchedule("tspipe_1f1b", o), o.costs);
    SteadyState ts = SimulateSteadyState(BuildSchedule("tspipe", o), o.costs);
    ASSERT_FALSE(one.deadlocked);
    EXPECT_LE(one.bubble_fraction, ts.bubble_fraction + 0.02) << "n=" << n;
  }
}

TEST(TSPipe1F1BTest, RefusesFullBatchLossesAndBlockwise) {
  SchedulerOptions o = KdOptions(2, 2);
  o.workload.full_batch_loss = true;
  EXPECT_THROW(BuildSchedule("tspipe_1f1b", o), std::invalid_argument);
  o = KdOptions(2, 2);
  o.workload.local_losses = true;
  EXPECT_THROW(BuildSchedule("tspipe_1f1b", o), std::invalid_argument);
}

// The validator holds a schedule to its declared memory: GPipe's order
// (every forward first) under a 1F1B bound is refused, naming the stage.
TEST(TSPipe1F1BTest, ValidatorRefusesAScheduleOverItsDeclaredBound) {
  Schedule s = BuildSchedule("gpipe", KdOptions(2, 4));
  s.stash_bound = {2, 2};
  ValidationResult v = Validate(s);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.ToString().find("stage 0 holds 4 micro-batches awaiting their backward, over its "
                              "declared bound of 2"),
            std::string::npos)
      << v.ToString();
  s.stash_bound = {4, 4};
  EXPECT_TRUE(Validate(s).ok()) << Validate(s).ToString();
}

}  // namespace
}  // namespace tspipe
