#include "engine/cut_search.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace tspipe {
namespace {

BlockCosts Costs(int student, int teacher) {
  BlockCosts c;
  for (int i = 0; i < student; ++i) {
    c.student_forward.push_back(1.0 + i);
    c.student_backward.push_back(2.0 + 2 * i);
  }
  for (int i = 0; i < teacher; ++i) c.teacher_forward.push_back(0.5 + i);
  return c;
}

CutSearch Search(const std::string& scheduler, CutRule rule, bool teacher = true) {
  CutSearch s;
  s.scheduler = scheduler;
  s.stages = 2;
  s.microbatches = 3;
  s.workload.teacher = teacher ? TeacherKind::kFrozen : TeacherKind::kNone;
  s.rule = rule;
  return s;
}

TEST(CutSearchTest, SharedCutsGiveTheStudentsExtraBlocksToTheLastStage) {
  const std::vector<BalancePlan> plans =
      PlanBalances(Search("gpipe", {CutRule::Kind::kShared, 1}), Costs(5, 4), 100, 1e9);
  ASSERT_EQ(plans.size(), 3u);  // Cuts of the 4 shared blocks into 2 stages.
  for (const BalancePlan& p : plans) {
    ASSERT_EQ(p.student.size(), 2u);
    EXPECT_EQ(p.teacher[0], p.student[0]);
    EXPECT_EQ(p.teacher[1], p.student[1] - 1);
  }
}

TEST(CutSearchTest, AFixedTeacherCutStays) {
  CutSearch s = Search("gpipe", {});
  s.teacher_cut = {3, 1};
  const std::vector<BalancePlan> plans = PlanBalances(s, Costs(5, 4), 100, 1e9);
  ASSERT_EQ(plans.size(), 4u);  // Only the student's 4 cuts vary.
  for (const BalancePlan& p : plans) EXPECT_EQ(p.teacher, (std::vector<int>{3, 1}));
}

TEST(CutSearchTest, PaperScaleCutsAreNotEnumerated) {
  // ResNet-152 (52 blocks) under ViT-L (26) over 8 and 16 stages: 115
  // million and more student cuts alone, which would exhaust memory if
  // listed; the search takes the work-balancing cut instead.
  const BlockCosts costs = Costs(52, 26);
  for (int stages : {8, 16}) {
    CutSearch s = Search("tspipe", {});
    s.stages = stages;
    s.microbatches = stages - 1;
    const std::vector<BalancePlan> plans = PlanBalances(s, costs, 1, 0.1);
    ASSERT_EQ(plans.size(), 1u);
    ASSERT_EQ(static_cast<int>(plans[0].student.size()), stages);
    ASSERT_EQ(static_cast<int>(plans[0].teacher.size()), stages);
    int blocks = 0;
    for (int b : plans[0].student) blocks += b;
    EXPECT_EQ(blocks, 52);
    EXPECT_LE(plans[0].period_ms, plans[0].even_period_ms);
    // A teacher cut the caller fixed stays in the fallback too.
    s.teacher_cut = std::vector<int>(stages, 0);
    for (int i = 0; i < 26; ++i) ++s.teacher_cut[i % stages];
    EXPECT_EQ(PlanBalances(s, costs, 1, 0)[0].teacher, s.teacher_cut);
  }
}

TEST(CutSearchTest, OneDeviceRunsEverythingWhateverTheCut) {
  // Sequential: one device runs every block's forward, backward and teacher
  // forward for each of the 3 micro-batches, so the period is their sum.
  const BlockCosts c = Costs(5, 4);
  double total = 0;
  for (double x : c.student_forward) total += x;
  for (double x : c.student_backward) total += x;
  for (double x : c.teacher_forward) total += x;
  for (const BalancePlan& p : PlanBalances(Search("sequential", {}), c, 100, 1e9)) {
    EXPECT_DOUBLE_EQ(p.period_ms, 3 * total);
  }
}

TEST(CutSearchTest, OnePerBlockCutsNothingAndSpreadsOverTheDevices) {
  const CutRule rule{CutRule::Kind::kOnePerBlock, 0};
  CutSearch s = Search("pipebd", rule);
  s.workload.local_losses = true;
  s.workload.blockwise = true;
  const std::vector<BalancePlan> plans = PlanBalances(s, Costs(4, 4), 5, 0.1);
  ASSERT_EQ(plans.size(), 1u);
  EXPECT_EQ(plans[0].student, (std::vector<int>{1, 1, 1, 1}));
  EXPECT_EQ(DevicesFor("pipebd", rule, 3), 3);
  EXPECT_EQ(DevicesFor("sequential", rule, 3), 0);  // Always one device.
  EXPECT_EQ(DevicesFor("gpipe", CutRule{}, 3), 0);  // One per stage, its own count.
}

TEST(CutSearchTest, MoreStagesThanBlocksIsRefused) {
  CutSearch s = Search("gpipe", {}, false);
  s.stages = 6;
  EXPECT_THROW(PlanBalances(s, Costs(5, 0), 1, 0), std::invalid_argument);
}

}  // namespace
}  // namespace tspipe
