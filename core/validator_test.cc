#include "core/validator.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "core/scheduler.h"

namespace tspipe {
namespace {

Schedule Gpipe(int stages, int mbs, bool teacher = false) {
  SchedulerOptions o;
  o.num_stages = stages;
  o.num_microbatches = mbs;
  o.workload.teacher = teacher ? TeacherKind::kFrozen : TeacherKind::kNone;
  return BuildSchedule("gpipe", o);
}

// Index of the action printed `text` on `rank`.
size_t Find(const Schedule& s, int rank, const std::string& text) {
  for (size_t i = 0; i < s.ranks[rank].size(); ++i) {
    if (ToString(s.ranks[rank][i]) == text) return i;
  }
  ADD_FAILURE() << text << " not found on rank " << rank;
  return 0;
}

bool Mentions(const ValidationResult& v, const std::string& text) {
  return v.ToString().find(text) != std::string::npos;
}

// Every registered scheduler, for every workload it accepts (BuildSchedule
// validates too; this checks the validator itself accepts what comes out,
// and that each scheduler builds for some of the shapes).
TEST(ValidatorTest, AcceptsBuiltInSchedules) {
  for (const std::string& name : SchedulerRegistry::Global().Names()) {
    int built = 0;
    for (int p = 1; p <= 5; ++p) {
      for (int m = 1; m <= 6; ++m) {
        for (int w = 0; w < 4; ++w) {
          SchedulerOptions o;
          o.num_stages = p;
          o.num_microbatches = m;
          o.workload.teacher = w == 0 ? TeacherKind::kNone
                               : w == 2 ? TeacherKind::kMomentum
                                        : TeacherKind::kFrozen;
          o.workload.local_losses = o.workload.blockwise = w == 3;
          Schedule s;
          try {
            s = BuildSchedule(name, o);
          } catch (const std::invalid_argument&) {
            continue;  // Options this scheduler refuses.
          }
          ++built;
          EXPECT_TRUE(Validate(s).ok()) << name << " p=" << p << " m=" << m << " w=" << w;
        }
      }
    }
    EXPECT_GT(built, 10) << name;
  }
}

TEST(ValidatorTest, RejectsMissingReceive) {
  Schedule s = Gpipe(3, 2);
  auto& r1 = s.ranks[1];
  r1.erase(r1.begin() + Find(s, 1, "1RA1<0"));
  ValidationResult v = Validate(s);
  ASSERT_FALSE(v.ok());
  EXPECT_TRUE(Mentions(v, "send 0SA1>1 has no matching receive 1RA1<0 on rank 1")) << v.ToString();
  EXPECT_TRUE(Mentions(v, "1F1")) << v.ToString();
}

TEST(ValidatorTest, RejectsBackwardBeforeForward) {
  Schedule s = Gpipe(2, 2);
  auto& r0 = s.ranks[0];
  size_t b = Find(s, 0, "0B1");
  Action backward = r0[b];
  r0.erase(r0.begin() + b);
  r0.insert(r0.begin(), backward);
  ValidationResult v = Validate(s);
  ASSERT_FALSE(v.ok());
  EXPECT_TRUE(Mentions(v, "rank 0: 0B1 at step 0 runs before its forward 0F1")) << v.ToString();
}

TEST(ValidatorTest, RejectsDuplicatedAction) {
  Schedule s = Gpipe(2, 3);
  auto& r1 = s.ranks[1];
  r1.push_back(r1[Find(s, 1, "1F2")]);
  ValidationResult v = Validate(s);
  ASSERT_FALSE(v.ok());
  EXPECT_TRUE(Mentions(v, "duplicate action 1F2 on rank 1")) << v.ToString();
}

TEST(ValidatorTest, RejectsMissingComputeAction) {
  Schedule s = Gpipe(2, 3);
  auto& r0 = s.ranks[0];
  r0.erase(r0.begin() + Find(s, 0, "0B2"));
  ValidationResult v = Validate(s);
  ASSERT_FALSE(v.ok());
  EXPECT_TRUE(Mentions(v, "missing action 0B2")) << v.ToString();
}

TEST(ValidatorTest, RejectsMissingOptimizerStepAndLoss) {
  Schedule s = Gpipe(2, 2);
  auto& r1 = s.ranks[1];
  r1.erase(r1.begin() + Find(s, 1, "1O"));
  r1.erase(r1.begin() + Find(s, 1, "1L"));
  ValidationResult v = Validate(s);
  EXPECT_TRUE(Mentions(v, "missing action 1O on rank 1")) << v.ToString();
  EXPECT_TRUE(Mentions(v, "missing action 1L")) << v.ToString();
}

TEST(ValidatorTest, RejectsDeadlock) {
  Schedule s = Gpipe(2, 2);
  // Rank 1 receives micro-batch 1 before micro-batch 0, but rank 0 waits for
  // a gradient first... build a real cycle: rank 0 waits for the gradient of
  // micro-batch 0 before sending micro-batch 1; rank 1 needs micro-batch 1
  // before its loss.
  auto& r0 = s.ranks[0];
  Action recv = r0[Find(s, 0, "0RG0<1")];
  r0.erase(r0.begin() + Find(s, 0, "0RG0<1"));
  r0.insert(r0.begin() + Find(s, 0, "0F1"), recv);
  ValidationResult v = Validate(s);
  ASSERT_FALSE(v.ok());
  EXPECT_TRUE(Mentions(v, "deadlock")) << v.ToString();
  EXPECT_TRUE(Mentions(v, "rank 0 blocked at step 2 on 0RG0<1")) << v.ToString();
}

TEST(ValidatorTest, RejectsActionOnWrongRank) {
  Schedule s = Gpipe(2, 1);
  s.ranks[0].push_back({1, 0, Op::kTeacherForward});
  ValidationResult v = Validate(s);
  EXPECT_TRUE(Mentions(v, "rank 0: 1T0 at step")) << v.ToString();
  EXPECT_TRUE(Mentions(v, "stage 1 is not placed on this rank")) << v.ToString();
}

// NCCL-style transports need both sides of a pair to post in one order.
Schedule PipeBd(int stages, int devices, int mbs) {
  SchedulerOptions o;
  o.num_stages = stages;
  o.num_microbatches = mbs;
  o.num_devices = devices;
  o.workload.teacher = TeacherKind::kFrozen;
  o.workload.local_losses = o.workload.blockwise = true;
  return BuildSchedule("pipebd", o);
}

// Neighbouring groups of different sizes pair by micro-batch: with blocks
// 0 | 1-4 on ranks 0 | 1,2 (unit costs), rank 1 runs micro-batches 0-1 and
// rank 2 runs 2-3, so rank 0 relays each teacher activation to its owner.
TEST(ValidatorTest, BlockwiseGroupsOfDifferentSizesPairByMicrobatch) {
  Schedule s = PipeBd(5, 3, 4);
  ASSERT_EQ(s.placement[0], std::vector<int>{0});
  ASSERT_EQ(s.placement[1], (std::vector<int>{1, 2}));
  Find(s, 0, "0ST1>1");
  Find(s, 0, "0ST2>2");
  Find(s, 1, "1RT1<0");
  Find(s, 2, "1RT3<0");
  // The student's own activations and gradients never travel.
  for (const auto& actions : s.ranks) {
    for (const Action& a : actions) {
      EXPECT_NE(a.op, Op::kSendActivation) << ToString(a);
      EXPECT_NE(a.op, Op::kSendGradient) << ToString(a);
    }
  }
  EXPECT_TRUE(Validate(s).ok()) << Validate(s).ToString();
}

TEST(ValidatorTest, RejectsStudentTrafficInABlockwiseSchedule) {
  Schedule s = PipeBd(4, 2, 1);  // Blocks 0-1 | 2-3.
  auto& r0 = s.ranks[0];
  r0.insert(r0.begin() + Find(s, 0, "1F0") + 1, Action{1, 0, Op::kSendActivation, 0, 1});
  auto& r1 = s.ranks[1];
  r1.insert(r1.begin() + Find(s, 1, "2F0"), Action{2, 0, Op::kRecvActivation, 0, 0});
  ValidationResult v = Validate(s);
  ASSERT_FALSE(v.ok());
  EXPECT_TRUE(Mentions(v, "rank 1: 2RA0<0 is not allowed: a blockwise student reads the "
                          "teacher's activations"))
      << v.ToString();
}

TEST(ValidatorTest, RejectsABlockwiseStudentBeforeItsTeacher) {
  Schedule s = PipeBd(4, 2, 1);
  auto& r1 = s.ranks[1];
  Action forward = r1[Find(s, 1, "2F0")];
  r1.erase(r1.begin() + Find(s, 1, "2F0"));
  r1.insert(r1.begin() + Find(s, 1, "2T0"), forward);
  ValidationResult v = Validate(s);
  ASSERT_FALSE(v.ok());
  EXPECT_TRUE(Mentions(v, "2F0 at step 1 runs before the teacher forward 2T0")) << v.ToString();
  s = PipeBd(4, 2, 1);
  s.workload.teacher = TeacherKind::kNone;
  EXPECT_TRUE(Mentions(Validate(s), "a blockwise workload needs a teacher and local losses"));
}

TEST(MessageOrderTest, FillDrainSchedulesMatchAndASwapIsNamed) {
  for (const char* name : {"gpipe", "sequential"}) {
    for (int n : {2, 4}) {
      SchedulerOptions o;
      o.num_stages = n;
      o.num_microbatches = 3;
      o.workload.teacher = TeacherKind::kFrozen;
      EXPECT_EQ(CheckMessageOrder(BuildSchedule(name, o)), "") << name << n;
    }
  }
  SchedulerOptions o;
  o.num_stages = 2;
  o.num_microbatches = 2;
  Schedule s = BuildSchedule("gpipe", o);
  // Rank 1 receives micro-batch 1's activation first.
  std::vector<Action>& r1 = s.ranks[1];
  std::vector<size_t> recvs;
  for (size_t i = 0; i < r1.size(); ++i) {
    if (r1[i].op == Op::kRecvActivation) recvs.push_back(i);
  }
  ASSERT_EQ(recvs.size(), 2u);
  std::swap(r1[recvs[0]], r1[recvs[1]]);
  EXPECT_EQ(CheckMessageOrder(s),
            "rank 0's sends to rank 1 and rank 1's receives from rank 0 differ at message 1: "
            "0SA0>1 vs 1RA1<0");
}

}  // namespace
}  // namespace tspipe
