#include "core/action.h"

#include <gtest/gtest.h>

namespace tspipe {
namespace {

TEST(ActionTest, CompactForm) {
  EXPECT_EQ(ToString({1, 3, Op::kForward}), "1F3");
  EXPECT_EQ(ToString({3, kAllMicrobatches, Op::kLoss}), "3L");
  EXPECT_EQ(ToString({0, kAllMicrobatches, Op::kOptimizerStep}), "0O");
  EXPECT_EQ(ToString({1, 2, Op::kTeacherForward, 1}), "1T2+1");
  EXPECT_EQ(ToString({0, 3, Op::kSendActivation, 0, 1}), "0SA3>1");
  EXPECT_EQ(ToString({1, 3, Op::kRecvActivation, 0, 0}), "1RA3<0");
}

TEST(ActionTest, RoundTripsEveryOp) {
  for (int i = 0; i < kNumOps; ++i) {
    Op op = static_cast<Op>(i);
    Action a{2, 5, op, IsCommunication(op) ? 0 : 1, IsCommunication(op) ? 3 : kNoPeer};
    Action parsed;
    std::string error;
    ASSERT_TRUE(ParseAction(ToString(a), &parsed, &error)) << error;
    EXPECT_EQ(parsed, a) << ToString(a);
  }
}

TEST(ActionTest, RejectsMalformedText) {
  Action a;
  std::string error;
  EXPECT_FALSE(ParseAction("F3", &a, &error));
  EXPECT_NE(error.find("'F3'"), std::string::npos);
  EXPECT_FALSE(ParseAction("1X3", &a, &error));
  EXPECT_FALSE(ParseAction("1SA3", &a, &error));    // Send without a peer.
  EXPECT_FALSE(ParseAction("1F3>2", &a, &error));   // Compute with a peer.
  EXPECT_FALSE(ParseAction("1SA3<2", &a, &error));  // Send marked as receive.
  EXPECT_FALSE(ParseAction("1F3x", &a, &error));
}

}  // namespace
}  // namespace tspipe
