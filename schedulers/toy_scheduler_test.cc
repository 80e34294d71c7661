// A new scheduler, defined and registered entirely in this file: "toy_1f1b",
// a one-forward-one-backward pipeline (PipeDream-flush). It emits compute
// actions only; BuildSchedule lowers them (sends, receives, tied sums,
// clipping) and validates the result. No other file changes but a BUILD
// line: the proof that a scheduler is one module (docs/ADDING_A_SCHEDULER.md).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/scheduler.h"
#include "core/simulator.h"

namespace tspipe {
namespace {

// Stage s on rank s, N stages, M micro-batches. Stage s runs
//   warm-up:   F0 .. F(w-1), w = min(N - s - 1, M);
//   steady:    F(w+i), B(i) for i = 0 .. M-w-1;
//   cool-down: B(M-w) .. B(M-1);
//   then O, and U when the teacher updates.
// Each F is preceded by its micro-batch's T when there is a teacher, and on
// the last stage followed by its own loss L (per micro-batch: the loss must
// be per sample, so full-batch losses are refused). Stage s thus holds at
// most min(N - s, M) micro-batches awaiting their backward: the stash bound.
class Toy1F1BScheduler : public Scheduler {
 public:
  Schedule Build(const SchedulerOptions& o) const override {
    CheckOneStagePerDevice("toy_1f1b", o);
    if (o.workload.full_batch_loss || o.workload.local_losses) {
      throw std::invalid_argument("toy_1f1b needs one per-sample loss on the last stage");
    }
    const int n = o.num_stages, m = o.num_microbatches;
    Schedule s;
    s.num_stages = n;
    s.num_microbatches = m;
    s.workload = o.workload;
    s.ranks.resize(n);
    for (int st = 0; st < n; ++st) {
      s.placement.push_back({st});
      s.stash_bound.push_back(std::min(n - st, m));
      auto& out = s.ranks[st];
      auto forward = [&](int mb) {
        if (o.workload.has_teacher()) out.push_back({st, mb, Op::kTeacherForward});
        out.push_back({st, mb, Op::kForward});
        if (st == n - 1) out.push_back({st, mb, Op::kLoss});
      };
      const int w = std::min(n - st - 1, m);
      for (int mb = 0; mb < w; ++mb) forward(mb);
      for (int i = 0; i < m - w; ++i) {
        forward(w + i);
        out.push_back({st, i, Op::kBackward});
      }
      for (int mb = m - w; mb < m; ++mb) out.push_back({st, mb, Op::kBackward});
      out.push_back({st, kAllMicrobatches, Op::kOptimizerStep});
      if (o.workload.teacher_updates()) out.push_back({st, kAllMicrobatches, Op::kTeacherUpdate});
    }
    return s;
  }
};

TSPIPE_REGISTER_SCHEDULER("toy_1f1b", "one forward one backward, one stage per device (a test)",
                          [] { return std::make_unique<Toy1F1BScheduler>(); });

// Breaks the contract: emits its own send.
class SendingScheduler : public Scheduler {
 public:
  Schedule Build(const SchedulerOptions& o) const override {
    Schedule s;
    s.num_stages = 2;
    s.num_microbatches = 1;
    s.workload = o.workload;
    s.placement = {{0}, {1}};
    s.ranks = {{{0, 0, Op::kForward}, {0, 0, Op::kSendActivation, 0, 1}, {0, 0, Op::kBackward},
                {0, kAllMicrobatches, Op::kOptimizerStep}},
               {{1, 0, Op::kForward}, {1, 0, Op::kLoss}, {1, 0, Op::kBackward},
                {1, kAllMicrobatches, Op::kOptimizerStep}}};
    return s;
  }
};

TSPIPE_REGISTER_SCHEDULER("toy_sends_itself", "invalid: emits communication",
                          [] { return std::make_unique<SendingScheduler>(); });

SchedulerOptions Options(int stages, int microbatches, TeacherKind teacher = TeacherKind::kNone) {
  SchedulerOptions o;
  o.num_stages = stages;
  o.num_microbatches = microbatches;
  o.workload.teacher = teacher;
  return o;
}

std::vector<std::string> Strings(const std::vector<Action>& actions) {
  std::vector<std::string> out;
  for (const Action& a : actions) out.push_back(ToString(a));
  return out;
}

int CountOp(const std::vector<Action>& actions, Op op) {
  return static_cast<int>(std::count_if(actions.begin(), actions.end(),
                                        [op](const Action& a) { return a.op == op; }));
}

TEST(ToySchedulerTest, IsRegistered) {
  const std::vector<std::string> names = SchedulerRegistry::Global().Names();
  EXPECT_NE(std::find(names.begin(), names.end(), "toy_1f1b"), names.end());
  EXPECT_NE(SchedulerRegistry::Global().Describe().find("toy_1f1b: one forward one backward"),
            std::string::npos);
}

// BuildSchedule lowers and validates (it throws otherwise), stash bound
// included; the peaks are exactly 1F1B's min(N - s, M).
TEST(ToySchedulerTest, ValidatesForEveryShapeAndWorkload) {
  for (TeacherKind t : {TeacherKind::kNone, TeacherKind::kFrozen, TeacherKind::kMomentum}) {
    for (int sync = 0; sync < 4; ++sync) {  // Bit 0: tie stages 0 and N-1; bit 1: clip.
      for (int n = 1; n <= 5; ++n) {
        for (int m = 1; m <= 6; ++m) {
          SCOPED_TRACE("teacher " + std::to_string(static_cast<int>(t)) + " sync " +
                       std::to_string(sync) + " N=" + std::to_string(n) +
                       " M=" + std::to_string(m));
          SchedulerOptions o = Options(n, m, t);
          const bool tied = sync & 1, clip = sync & 2;
          if (tied) o.workload.tied_stages = {{0, n - 1}};
          o.workload.clip_gradients = clip;
          Schedule s;
          ASSERT_NO_THROW(s = BuildSchedule("toy_1f1b", o));
          ASSERT_EQ(s.num_ranks(), n);
          const StashPeaks peaks = PeakStashes(s);
          for (int st = 0; st < n; ++st) EXPECT_EQ(peaks.student[st], std::min(n - st, m));
          for (int r = 0; r < n; ++r) {
            const auto& a = s.ranks[r];
            EXPECT_EQ(CountOp(a, Op::kForward), m);
            EXPECT_EQ(CountOp(a, Op::kTeacherForward), t == TeacherKind::kNone ? 0 : m);
            EXPECT_EQ(CountOp(a, Op::kTeacherUpdate), t == TeacherKind::kMomentum ? 1 : 0);
            EXPECT_EQ(CountOp(a, Op::kLoss), r == n - 1 ? m : 0);
            // The lowering's additions: one TG on each end of the tie (a
            // local one when N = 1), one GN everywhere when clipping.
            const bool tied_end = r == 0 || r == n - 1;
            EXPECT_EQ(CountOp(a, Op::kSumTiedGradients), tied && tied_end ? 1 : 0);
            EXPECT_EQ(CountOp(a, Op::kClipGradients), clip ? 1 : 0);
            EXPECT_EQ(CountOp(a, Op::kAllReduceGradients), 0);
          }
        }
      }
    }
  }
}

// N = 3, M = 2, stage 1 (w = 1): F0 F1 B0 B1 O from the rules above; the
// lowering puts RA from rank 0 before each F, SA to rank 2 after it, RG
// from rank 2 before each B, SG to rank 0 after it.
TEST(ToySchedulerTest, LoweringAddsCommunication) {
  const Schedule s = BuildSchedule("toy_1f1b", Options(3, 2));
  EXPECT_EQ(Strings(s.ranks[1]),
            (std::vector<std::string>{"1RA0<0", "1F0", "1SA0>2", "1RA1<0", "1F1", "1SA1>2",
                                      "1RG0<2", "1B0", "1SG0>0", "1RG1<2", "1B1", "1SG1>0",
                                      "1O"}));
  // Stage 2 (w = 0) alternates, its loss right after each forward.
  EXPECT_EQ(Strings(s.ranks[2]),
            (std::vector<std::string>{"2RA0<1", "2F0", "2L0", "2B0", "2SG0>1", "2RA1<1", "2F1",
                                      "2L1", "2B1", "2SG1>1", "2O"}));
  // Every rank pair: as many sends one way as receives the other.
  std::map<std::pair<int, int>, int> sends, recvs;
  for (int r = 0; r < s.num_ranks(); ++r) {
    for (const Action& a : s.ranks[r]) {
      if (IsCommunication(a.op)) ++(IsSend(a.op) ? sends[{r, a.peer}] : recvs[{a.peer, r}]);
    }
  }
  EXPECT_EQ(sends, recvs);
  // 0->1 and 1->2 carry 2 activations, 2->1 and 1->0 carry 2 gradients.
  EXPECT_EQ(sends, (std::map<std::pair<int, int>, int>{{{0, 1}, 2}, {{1, 0}, 2}, {{1, 2}, 2},
                                                       {{2, 1}, 2}}));
}

// Unit costs F = 1, B = 2 (L, O, messages free), N = 2, M = 2:
//   rank 0: F0 [0,1] F1 [1,2], B0 waits for rank 1's B0, B1 for its B1;
//   rank 1: F0 [1,2] L0 B0 [2,4] F1 [4,5] L1 B1 [5,7];
//   rank 0: B0 [4,6] B1 [7,9].  Makespan 9, busy 6 of 9 on each rank.
// In general: the first forward reaches the last rank after (N - 1) F, that
// rank is then busy M (F + B) without a gap (rank N - 2's next forward is
// done before the last rank's backward ends), and the last backward drains
// back through N - 1 ranks: (N - 1) F + M (F + B) + (N - 1) B = (M + N - 1)
// (F + B), GPipe's, bubble (N - 1) / (M + N - 1). With a teacher (T = 1)
// the T chain runs one stage ahead of the F chain (stage s's T0 while stage
// s - 1 runs F0), so the fill is still (N - 1) F while the last rank is
// busy M (T + F + B): (N - 1)(F + B) + M (T + F + B).
TEST(ToySchedulerTest, SimulatedMakespanMatchesHandDerivation) {
  const CostModel unit;
  const Schedule s = BuildSchedule("toy_1f1b", Options(2, 2));
  SimulationResult r = Simulate(s, unit);
  ASSERT_FALSE(r.deadlocked);
  EXPECT_DOUBLE_EQ(r.makespan, 9.0);
  // Rank 1: RA0 posted at 0, its message (rank 0's F0) in at 1; F0 at [1, 2].
  EXPECT_EQ(ToString(s.ranks[1][1]), "1F0");
  EXPECT_DOUBLE_EQ(r.timings[1][0].end, 1.0);
  EXPECT_DOUBLE_EQ(r.timings[1][1].start, 1.0);
  EXPECT_DOUBLE_EQ(r.busy[0], 6.0);
  EXPECT_NEAR(r.BubbleFraction(), 1.0 / 3, 1e-12);
  for (int n = 1; n <= 4; ++n) {
    for (int m = 1; m <= 5; ++m) {
      SCOPED_TRACE("N=" + std::to_string(n) + " M=" + std::to_string(m));
      r = Simulate(BuildSchedule("toy_1f1b", Options(n, m)), unit);
      EXPECT_DOUBLE_EQ(r.makespan, 3.0 * (m + n - 1));
      EXPECT_NEAR(r.BubbleFraction(), (n - 1.0) / (m + n - 1), 1e-12);
      r = Simulate(BuildSchedule("toy_1f1b", Options(n, m, TeacherKind::kFrozen)), unit);
      EXPECT_DOUBLE_EQ(r.makespan, 3.0 * (n - 1) + 4.0 * m);
    }
  }
}

TEST(ToySchedulerTest, RefusesWhatItCannotSchedule) {
  SchedulerOptions o = Options(3, 4);
  o.num_devices = 2;
  EXPECT_THROW(BuildSchedule("toy_1f1b", o), std::invalid_argument);
  o.num_devices = 3;  // The natural count is accepted when named.
  EXPECT_NO_THROW(BuildSchedule("toy_1f1b", o));
  o.workload.full_batch_loss = true;
  EXPECT_THROW(BuildSchedule("toy_1f1b", o), std::invalid_argument);
  o = Options(3, 0);  // CheckSchedulerOptions, before the scheduler runs.
  EXPECT_THROW(BuildSchedule("toy_1f1b", o), std::invalid_argument);
}

TEST(ToySchedulerTest, SchedulerThatSendsItselfIsRefused) {
  try {
    BuildSchedule("toy_sends_itself", Options(2, 1));
    FAIL() << "BuildSchedule accepted a scheduler's own send";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("compute actions only"), std::string::npos) << what;
    EXPECT_NE(what.find("0SA0>1"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace tspipe
