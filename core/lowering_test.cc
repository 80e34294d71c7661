// The lowering passes: every cross-rank step is an action the validator
// checks and the simulator times (gradient all-reduces, tied sums,
// clipping), and both sides of every rank pair post their messages in one
// order.
#include "core/lowering.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "core/message.h"
#include "core/scheduler.h"
#include "core/simulator.h"
#include "core/validator.h"

namespace tspipe {
namespace {

bool Mentions(const ValidationResult& v, const std::string& text) {
  return v.ToString().find(text) != std::string::npos;
}

// Actions from their compact forms, one rank per list (local losses: a
// loss per stage, so no gradient crosses ranks).
Schedule HandMade(int stages, const std::vector<std::vector<std::string>>& ranks,
                  std::vector<std::vector<int>> placement) {
  Schedule s;
  s.scheduler = "hand-made";
  s.num_stages = stages;
  s.num_microbatches = 1;
  s.workload.local_losses = true;
  s.placement = std::move(placement);
  for (const auto& list : ranks) {
    s.ranks.emplace_back();
    for (const std::string& text : list) {
      Action a;
      std::string error;
      EXPECT_TRUE(ParseAction(text, &a, &error)) << error;
      s.ranks.back().push_back(a);
    }
  }
  return s;
}

int Find(const Schedule& s, int rank, const std::string& text) {
  for (size_t i = 0; i < s.ranks[rank].size(); ++i) {
    if (ToString(s.ranks[rank][i]) == text) return static_cast<int>(i);
  }
  return -1;
}

// Tied stages 0 and 3 and clipping: each rank's TG and GN sit right after
// its last backward (or gradient send), the tie's two ranks pair their TGs,
// every rank joins the GN, and the pipelines' own schedules run without
// deadlock.
TEST(LoweringTest, PipelinesSumTiesAndClipAfterTheirLastBackward) {
  for (const std::string name : {"gpipe", "tspipe", "tspipe_1f1b", "tspipe_zb"}) {
    SchedulerOptions so;
    so.num_stages = 4;
    so.num_microbatches = 6;
    so.workload.teacher = TeacherKind::kFrozen;
    so.workload.tied_stages = {{0, 3}};
    so.workload.clip_gradients = true;
    const Schedule s = BuildSchedule(name, so);  // Validated: no deadlock.
    for (int r = 0; r < s.num_ranks(); ++r) {
      const auto& list = s.ranks[r];
      int last = -1;
      for (int i = 0; i < static_cast<int>(list.size()); ++i) {
        const Op op = list[i].op;
        if (op == Op::kBackward || op == Op::kBackwardInput || op == Op::kBackwardWeight ||
            op == Op::kSendGradient) {
          last = i;
        }
      }
      int at = last + 1;
      if (r == 0 || r == 3) {
        EXPECT_EQ(ToString(list.at(at)), r == 0 ? "0TG~3" : "3TG~0") << name;
        ++at;
      }
      EXPECT_EQ(ToString(list.at(at)), std::to_string(r) + "GN") << name << " rank " << r;
    }
  }
}

// Rank 0 sends its output only after its backward (local losses need no
// gradient from rank 1): with clipping, rank 0 waits at its GN for rank 1,
// which waits for that send. The validator names both waits; sending
// first is fine. (This was a separate dry run in the executor; now the one
// simulator finds it.)
TEST(LoweringTest, TheValidatorFindsADeadlockAtAClippingStep) {
  Schedule s = HandMade(2, {{"0F0", "0L", "0B0", "0SA0>1", "0O"}, {"1RA0<0", "1F0", "1L", "1B0", "1O"}},
                        {{0}, {1}});
  EXPECT_TRUE(Validate(s).ok()) << Validate(s).ToString();  // Nothing waits without it.
  s.workload.clip_gradients = true;
  AddGradientSync(&s);
  EXPECT_EQ(Find(s, 0, "0GN"), 3);
  ValidationResult v = Validate(s);
  ASSERT_FALSE(v.ok());
  EXPECT_TRUE(Mentions(v, "deadlock")) << v.ToString();
  EXPECT_TRUE(Mentions(v, "rank 0 blocked at step 3 on 0GN (not every member of the collective "
                          "reaches it)"))
      << v.ToString();
  EXPECT_TRUE(Mentions(v, "rank 1 blocked at step 0 on 1RA0<0")) << v.ToString();
  Schedule ok = HandMade(2, {{"0F0", "0SA0>1", "0L", "0B0", "0O"}, {"1RA0<0", "1F0", "1L", "1B0", "1O"}},
                         {{0}, {1}});
  ok.workload.clip_gradients = true;
  ok.workload.tied_stages = {{0, 1}};
  AddGradientSync(&ok);
  EXPECT_TRUE(Validate(ok).ok()) << Validate(ok).ToString();
}

TEST(LoweringTest, TheValidatorRefusesAStepBeforeTheRanksSync) {
  Schedule s = HandMade(2, {{"0F0", "1F0", "0L", "1L", "1B0", "1O", "0B0", "0O"}}, {{0}, {0}});
  s.workload.clip_gradients = true;
  AddGradientSync(&s);
  ValidationResult v = Validate(s);
  ASSERT_FALSE(v.ok());
  EXPECT_TRUE(Mentions(v, "rank 0: 1O at step 5 runs before 0GN: tied gradients and clipping need "
                          "every gradient of the rank first"))
      << v.ToString();
}

// Every cross-rank step the workload needs is checked: a gradient
// reduction, a tied sum, a clipping step.
TEST(LoweringTest, TheValidatorRefusesAScheduleLackingItsGradientReduction) {
  SchedulerOptions so;
  so.num_stages = 2;
  so.num_microbatches = 4;
  Schedule dp = BuildSchedule("dp", so);
  ASSERT_GE(Find(dp, 1, "0AR"), 0);
  dp.ranks[1].erase(dp.ranks[1].begin() + Find(dp, 1, "0AR"));
  ValidationResult v = Validate(dp);
  EXPECT_TRUE(Mentions(v, "missing action 0AR on rank 1")) << v.ToString();

  so.workload.tied_stages = {{0, 1}};
  so.workload.clip_gradients = true;
  Schedule gpipe = BuildSchedule("gpipe", so);
  Schedule no_tie = gpipe;
  no_tie.ranks[0].erase(no_tie.ranks[0].begin() + Find(no_tie, 0, "0TG~1"));
  v = Validate(no_tie);
  EXPECT_TRUE(Mentions(v, "missing action TG~1 on rank 0: the tied gradients of stages 0 and 1 are "
                          "never summed"))
      << v.ToString();
  EXPECT_TRUE(Mentions(v, "rank 1: 1TG~0 has no matching TG~1 on rank 0")) << v.ToString();
  Schedule no_clip = gpipe;
  no_clip.ranks[1].erase(no_clip.ranks[1].begin() + Find(no_clip, 1, "1GN"));
  EXPECT_TRUE(Mentions(Validate(no_clip), "missing action GN on rank 1"));
  Schedule unasked = gpipe;
  unasked.workload.clip_gradients = false;
  EXPECT_TRUE(Mentions(Validate(unasked), "unexpected action GN on rank 0"));
}

// A GN's group is one replica's ranks: replicas of a stage that are not
// whole models, one per rank, would scale by different norms. The
// validator refuses such a schedule however it was made (AddGradientSync
// already refuses to build one).
TEST(LoweringTest, TheValidatorRefusesClippingAcrossUnevenReplicas) {
  SchedulerOptions so;
  so.num_stages = 2;
  so.num_microbatches = 2;
  so.num_devices = 3;
  so.workload.teacher = TeacherKind::kFrozen;
  so.workload.local_losses = so.workload.blockwise = true;
  Schedule s = BuildSchedule("pipebd", so);  // Stage 0 on ranks 0|1, stage 1 on 2.
  ASSERT_NE(s.placement[0].size(), s.placement[1].size());
  s.workload.clip_gradients = true;
  EXPECT_THROW(AddGradientSync(&s), std::invalid_argument);
  for (auto& list : s.ranks) {
    for (size_t i = 0; i < list.size(); ++i) {
      if (list[i].op == Op::kOptimizerStep) {
        list.insert(list.begin() + i, Action{list[i].stage, kAllMicrobatches, Op::kClipGradients});
        break;
      }
    }
  }
  EXPECT_TRUE(Mentions(Validate(s), "gradient clipping needs every stage with the same replica "
                                    "count; stage 1 has 1, stage 0 2"))
      << Validate(s).ToString();
}

// Data parallel's all-reduce of each stage follows the stage's last
// backward on every replica, so the backward of earlier stages overlaps it.
TEST(LoweringTest, AllReducesFollowTheStagesLastBackward) {
  SchedulerOptions so;
  so.num_stages = 3;
  so.num_microbatches = 4;
  const Schedule dp = BuildSchedule("dp", so);
  for (int r = 0; r < 3; ++r) {
    for (int st = 0; st < 3; ++st) {
      const int ar = Find(dp, r, std::to_string(st) + "AR");
      ASSERT_GE(ar, 1);
      EXPECT_TRUE(EndsBackward(dp.ranks[r][ar - 1].op)) << ToString(dp.ranks[r][ar - 1]);
      EXPECT_EQ(dp.ranks[r][ar - 1].stage, st);
    }
  }
}

// NCCL matches a rank pair's messages in posting order. tspipe_1f1b at 2
// stages with a teacher once sent the next batch's teacher activation
// before a student activation its peer takes first, so NCCL would have
// refused README's job; now every built-in schedule posts in one order,
// which BuildSchedule's validation checks.
TEST(LoweringTest, SendsGoOutInTheOrderThePeerReceives) {
  SchedulerOptions so;
  so.num_stages = 2;
  so.num_microbatches = 4;
  so.workload.teacher = TeacherKind::kFrozen;
  const Schedule s = BuildSchedule("tspipe_1f1b", so);
  EXPECT_EQ(CheckMessageOrder(s), "");
  EXPECT_EQ(CheckMessageOrder(TeacherPrologue(s)), "");
  for (const std::string& name : SchedulerRegistry::Global().Names()) {
    for (int n = 1; n <= 5; ++n) {
      for (int m = 1; m <= 6; ++m) {
        for (TeacherKind kind : {TeacherKind::kNone, TeacherKind::kFrozen, TeacherKind::kMomentum}) {
          SchedulerOptions o;
          o.num_stages = n;
          o.num_microbatches = m;
          o.workload.teacher = kind;
          Schedule built;
          try {
            built = BuildSchedule(name, o);
          } catch (const std::invalid_argument&) {
            continue;  // Options this scheduler refuses.
          }
          EXPECT_EQ(CheckMessageOrder(built), "") << name << " n=" << n << " m=" << m;
        }
      }
    }
  }
}

// Schedulers emit compute actions; a scheduler that lowers by itself is
// told so.
TEST(LoweringTest, CheckComputeOnlyNamesTheFirstCrossRankAction) {
  Schedule s = HandMade(2, {{"0F0", "0SA0>1"}, {"1RA0<0", "1F0"}}, {{0}, {1}});
  try {
    CheckComputeOnly(s);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("emitted 0SA0>1 on rank 0"), std::string::npos);
  }
}

// A one-model schedule with a peer teacher (codistillation's, before
// ReplicateModels) keeps its teacher kind through CSV.
TEST(LoweringTest, PeerTeachersSurviveTheCsvRoundTrip) {
  SchedulerOptions so;
  so.num_stages = 2;
  so.num_microbatches = 2;
  so.workload.teacher = TeacherKind::kPeers;
  const Schedule s = BuildSchedule("gpipe", so);
  Schedule back;
  std::string error;
  ASSERT_TRUE(FromCsv(ToCsv(s), &back, &error)) << error;
  EXPECT_EQ(back.workload.teacher, TeacherKind::kPeers);
  ASSERT_TRUE(FromCsv(ToCsv(ReplicateModels(s, 2)), &back, &error)) << error;
  EXPECT_EQ(back.workload.teacher, TeacherKind::kPeers);
}

// One identity per message and collective: what both sides name.
TEST(MessageTest, BothSidesNameOneMessageAndCollectivesAreTyped) {
  Action send, recv;
  std::string error;
  ASSERT_TRUE(ParseAction("1SG2+1>0", &send, &error));
  ASSERT_TRUE(ParseAction("0RG2+1<1", &recv, &error));
  const Message m = MessageOf(send, 1, 5);
  EXPECT_EQ(m, MessageOf(recv, 0, 5));
  EXPECT_EQ(m.key.channel, Channel::kGradient);
  EXPECT_EQ(m.key.stage, 0);
  EXPECT_EQ(m.key.batch, 6);
  EXPECT_EQ(Describe(m.key), "gradient of stage 0, micro-batch 2, mini-batch 7");
  Action tg;
  ASSERT_TRUE(ParseAction("0TG~3", &tg, &error)) << error;
  EXPECT_EQ(tg.peer, 3);
  EXPECT_EQ(ToString(tg), "0TG~3");
  EXPECT_FALSE(ParseAction("0AR~3", &tg, &error));
  EXPECT_EQ(CollectiveOf(tg, 4).kind, CollectiveId::Kind::kTiedGradients);
  EXPECT_EQ(Describe(CollectiveId{CollectiveId::Kind::kCheckpointBarrier, 0, 3}),
            "the checkpoint barrier (every process's file written)");
}

}  // namespace
}  // namespace tspipe
