#include <gtest/gtest.h>

#include <algorithm>
#include <tuple>

#include "io/file_util.h"
#include "core/scheduler.h"
#include "core/simulator.h"
#include "core/validator.h"

namespace tspipe {
namespace {

SchedulerOptions KdOptions(int stages, int mbs) {
  SchedulerOptions o;
  o.num_stages = stages;
  o.num_microbatches = mbs;
  o.workload.teacher = TeacherKind::kFrozen;
  // The split backward in two unit halves everywhere (the costs;
  // by default stage 0's I is free and its W the whole backward).
  o.costs.backward_input = 1;
  o.costs.backward_weight = 1;
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
        o.workload.teacher = updates ? TeacherKind::kMomentum : TeacherKind::kFrozen;
        Schedule s = BuildSchedule("tspipe", o);  // Throws if invalid.
        EXPECT_TRUE(Validate(s).ok());
        EXPECT_FALSE(Simulate(s, o.costs).deadlocked);
      }
    }
  }
}

// `scheduler` at N = 2, M = 2 (KD) against the hand-derived golden `file`;
// returns what it built.
Schedule ExpectGolden(const std::string& scheduler, const std::string& file) {
  Schedule golden;
  std::string error;
  EXPECT_TRUE(FromCsv(ReadFile(file), &golden, &error)) << error;
  EXPECT_TRUE(Validate(golden).ok()) << Validate(golden).ToString();
  Schedule built = BuildSchedule(scheduler, KdOptions(2, 2));
  EXPECT_EQ(built.num_ranks(), golden.num_ranks());
  for (int r = 0; r < std::min(built.num_ranks(), golden.num_ranks()); ++r) {
    EXPECT_EQ(Joined(built.ranks[r]), Joined(golden.ranks[r])) << r;
  }
  return built;
}

TEST(TSPipeTest, MatchesHandDerivedGolden) {
  Schedule built = ExpectGolden("tspipe", "tests/golden/tspipe_s2_m2.csv");
  SimulationResult sim = Simulate(built, CostModel{});
  EXPECT_DOUBLE_EQ(sim.makespan, 9.0);
}

TEST(TSPipeTest, TeacherForwardsAreForTheNextBatch) {
  Schedule s = BuildSchedule("tspipe", KdOptions(3, 4));
  int teacher_forwards = 0;
  for (const auto& rank : s.ranks) {
    for (const Action& a : rank) {
      if (a.op == Op::kTeacherForward) {
        EXPECT_EQ(a.batch_offset, 1) << ToString(a);
        ++teacher_forwards;
      }
    }
  }
  // Every stage's teacher forward of every micro-batch (a schedule without
  // any would pass the loop above).
  EXPECT_EQ(teacher_forwards, 3 * 4);
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
  Schedule built = ExpectGolden("tspipe_1f1b", "tests/golden/tspipe_1f1b_s2_m2.csv");
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
        o.workload.teacher = updates ? TeacherKind::kMomentum : TeacherKind::kFrozen;
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

namespace tspipe {
namespace {

// Every (stage, micro-batch) has an I and a W and no whole backward.
void ExpectSplit(const Schedule& s) {
  int inputs = 0, weights = 0;
  for (const auto& rank : s.ranks) {
    for (const Action& a : rank) {
      EXPECT_NE(a.op, Op::kBackward) << ToString(a);
      inputs += a.op == Op::kBackwardInput;
      weights += a.op == Op::kBackwardWeight;
    }
  }
  EXPECT_EQ(inputs, s.num_stages * s.num_microbatches);
  EXPECT_EQ(weights, s.num_stages * s.num_microbatches);
}

TEST(TSPipeZeroBubbleTest, ValidForAnyStagesAndMicrobatches) {
  for (int n = 1; n <= 6; ++n) {
    for (int m = 1; m <= 8; ++m) {
      for (bool updates : {false, true}) {
        for (bool whole_batch : {false, true}) {
          SchedulerOptions o = KdOptions(n, m);
          o.workload.teacher = updates ? TeacherKind::kMomentum : TeacherKind::kFrozen;
          o.workload.full_batch_loss = whole_batch;
          Schedule s = BuildSchedule("tspipe_zb", o);  // Throws if invalid.
          ExpectSplit(s);
          EXPECT_FALSE(SimulateSteadyState(s, o.costs).deadlocked);
        }
      }
    }
  }
}

TEST(TSPipeZeroBubbleTest, MatchesHandDerivedGolden) {
  Schedule built = ExpectGolden("tspipe_zb", "tests/golden/tspipe_zb_s2_m2.csv");
  SteadyState steady = SimulateSteadyState(built, KdOptions(2, 2).costs);
  EXPECT_DOUBLE_EQ(steady.period, 8.0);
  EXPECT_DOUBLE_EQ(steady.bubble_fraction, 0.0);
}

// Worked by hand for N = 2, M = 1 (F = T = 1, B = 2 or I = W = 1). tspipe:
// stage 0 runs F0 (0-1) and T0+1 (1-2), stage 1 F0 (1-2) and B0 (2-4),
// stage 0 B0 (4-6), then the next F0: a period of 6 for 4 units of work
// per rank, bubble 1 - 8/12 = 1/3. tspipe_zb: stage 1's I0 ends at 3, so
// stage 0 runs I0 (3-4) and W0 (4-5) and the next F0 at 5, while stage 1
// does W0 (3-4) and T0+1 (4-5): period 5, bubble 1 - 8/10 = 1/5.
TEST(TSPipeZeroBubbleTest, HandWorkedBubbleAtTwoStagesOneMicrobatch) {
  SchedulerOptions o = KdOptions(2, 1);
  SteadyState ts = SimulateSteadyState(BuildSchedule("tspipe", o), o.costs);
  SteadyState zb = SimulateSteadyState(BuildSchedule("tspipe_zb", o), o.costs);
  EXPECT_DOUBLE_EQ(ts.period, 6.0);
  EXPECT_NEAR(ts.bubble_fraction, 1.0 / 3, 1e-12);
  EXPECT_DOUBLE_EQ(zb.period, 5.0);
  EXPECT_NEAR(zb.bubble_fraction, 0.2, 1e-12);
}

// The targets, with F = T = 1 and the backward split into unit
// halves, for a momentum teacher (the harder case: updates wait for the
// look-ahead teacher forwards): steady bubble <= 0.02 at N = 4, M = 6
// (tspipe: 0.111) and <= 0.05 at N = 16, M = 15 (tspipe: 0.333).
TEST(TSPipeZeroBubbleTest, MeetsTheSimulatedBubbleTargets) {
  for (auto [n, m, target] : {std::tuple{4, 6, 0.02}, std::tuple{16, 15, 0.05}}) {
    SchedulerOptions o = KdOptions(n, m);
    o.workload.teacher = TeacherKind::kMomentum;
    SteadyState zb = SimulateSteadyState(BuildSchedule("tspipe_zb", o), o.costs);
    SteadyState ts = SimulateSteadyState(BuildSchedule("tspipe", o), o.costs);
    EXPECT_LE(zb.bubble_fraction, target) << "n=" << n << " m=" << m;
    EXPECT_GT(ts.bubble_fraction, zb.bubble_fraction + 0.05) << "n=" << n << " m=" << m;
  }
}

// What keeping the graph until the W costs: PeakStashes counts a
// micro-batch until its W, and its weight count those between I and W.
TEST(TSPipeZeroBubbleTest, StashCountsUntilTheWeightGradient) {
  SchedulerOptions o = KdOptions(4, 6);
  StashPeaks zb = PeakStashes(BuildSchedule("tspipe_zb", o));
  StashPeaks ts = PeakStashes(BuildSchedule("tspipe", o));
  for (int st = 0; st < 4; ++st) {
    EXPECT_EQ(zb.student[st], ts.student[st]) << st;  // All M, as tspipe.
    EXPECT_GE(zb.weight[st], 1) << st;
    EXPECT_EQ(ts.weight[st], 0) << st;
  }
}

// Schedules with the split backward out of order, or in both forms.
TEST(TSPipeZeroBubbleTest, ValidatorRefusesMisorderedOrDoubledSplits) {
  const Schedule built = BuildSchedule("tspipe_zb", KdOptions(2, 2));
  auto find = [](const std::vector<Action>& list, const std::string& text) {
    for (size_t i = 0; i < list.size(); ++i) {
      if (ToString(list[i]) == text) return i;
    }
    ADD_FAILURE() << text << " not found";
    return size_t{0};
  };
  // W before its I.
  Schedule s = built;
  auto& r0 = s.ranks[0];
  std::swap(r0[find(r0, "0I0")], r0[find(r0, "0W0")]);
  ValidationResult v = Validate(s);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.ToString().find("0W0 at step 7 runs before its input-gradient action 0I0"),
            std::string::npos)
      << v.ToString();
  // A whole backward besides the split one.
  s = built;
  s.ranks[1].insert(s.ranks[1].begin() + find(s.ranks[1], "1W1"), Action{1, 1, Op::kBackward});
  v = Validate(s);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.ToString().find("micro-batch 1 of stage 1 has both a whole backward 1B1 and a split "
                              "one"),
            std::string::npos)
      << v.ToString();
  // A W missing.
  s = built;
  s.ranks[1].erase(s.ranks[1].begin() + find(s.ranks[1], "1W0"));
  v = Validate(s);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.ToString().find("missing action 1W0"), std::string::npos) << v.ToString();
  // Sending the input gradient before the I computed it.
  s = built;
  auto& r1 = s.ranks[1];
  std::swap(r1[find(r1, "1I0")], r1[find(r1, "1SG0>0")]);
  v = Validate(s);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.ToString().find("runs before the backward it sends 1I0"), std::string::npos)
      << v.ToString();
}

// Whatever the stage costs, tspipe_zb is planned no slower than tspipe.
// With I + W = B this holds by construction (one variant is tspipe's order
// with each B written as I, W): a guard that the variant stays, and that
// its rewriting and lowering keep tspipe's timing.
TEST(TSPipeZeroBubbleTest, NeverSlowerThanTspipeOnUnevenCosts) {
  uint32_t seed = 12345;
  auto uniform = [&](double lo, double hi) {
    seed = seed * 1664525u + 1013904223u;
    return lo + (hi - lo) * (seed >> 8) / double(1u << 24);
  };
  for (int n = 2; n <= 4; ++n) {
    for (int m : {2, 3, 5, 8}) {
      for (int trial = 0; trial < 4; ++trial) {
        SchedulerOptions o = KdOptions(n, m);
        o.workload.teacher = trial % 2 == 1 ? TeacherKind::kMomentum : TeacherKind::kFrozen;
        // The executor's split of each stage's B (stage 0: I free, W = B).
        o.costs.backward_input = o.costs.backward_weight = -1;
        for (int st = 0; st < n; ++st) {
          o.costs.forward_per_stage.push_back(uniform(0.5, 2));
          o.costs.backward_per_stage.push_back(uniform(1, 4));
          o.costs.teacher_forward_per_stage.push_back(uniform(0.5, 4));
        }
        const double zb = SimulateSteadyState(BuildSchedule("tspipe_zb", o), o.costs).period;
        const double ts = SimulateSteadyState(BuildSchedule("tspipe", o), o.costs).period;
        EXPECT_LE(zb, ts + 1e-9) << "n=" << n << " m=" << m << " trial " << trial;
      }
    }
  }
}

TEST(TSPipeZeroBubbleTest, RefusesBlockwiseWorkloads) {
  SchedulerOptions o = KdOptions(2, 2);
  o.workload.local_losses = true;
  EXPECT_THROW(BuildSchedule("tspipe_zb", o), std::invalid_argument);
}

}  // namespace
}  // namespace tspipe
