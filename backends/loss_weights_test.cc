#include "backends/loss_weights.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace tspipe {
namespace {

std::string LogicErrorOf(const std::vector<double>& reported,
                         const std::vector<std::vector<double>>& mine,
                         const std::vector<std::vector<double>>& all) {
  try {
    LossTermWeights("toy", reported, mine, all);
  } catch (const std::logic_error& e) {
    return e.what();
  }
  return "";
}

// A per-sample term (units = samples) and a masked-token term over four
// micro-batches of 8 samples with 3, 0, 5 and 2 masked tokens.
const std::vector<std::vector<double>> kAll = {{8, 3}, {8, 0}, {8, 5}, {8, 2}};

TEST(LossWeightsTest, EachTermWeighsItsShareOfTheMiniBatch) {
  // One micro-batch: 8 of 32 samples, 5 of 10 tokens.
  std::vector<double> w = LossTermWeights("toy", {8, 5}, {{8, 5}}, kAll);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_DOUBLE_EQ(w[0], 0.25);
  EXPECT_DOUBLE_EQ(w[1], 0.5);
  // Two micro-batches gathered (a whole-batch loss over a replica's share).
  w = LossTermWeights("toy", {16, 3}, {{8, 3}, {8, 0}}, kAll);
  EXPECT_DOUBLE_EQ(w[0], 0.5);
  EXPECT_DOUBLE_EQ(w[1], 0.3);
}

TEST(LossWeightsTest, WeightsOverEverySplitSumToOne) {
  double samples = 0, tokens = 0;
  for (const auto& mb : kAll) {
    const std::vector<double> w = LossTermWeights("toy", mb, {mb}, kAll);
    samples += w[0];
    tokens += w[1];
  }
  EXPECT_DOUBLE_EQ(samples, 1.0);
  EXPECT_DOUBLE_EQ(tokens, 1.0);
}

TEST(LossWeightsTest, ATermWithNothingToAverageWeighsNothing) {
  // The second micro-batch has no masked token: its token term's mean is
  // undefined (NaN) and must not count.
  const std::vector<double> w = LossTermWeights("toy", {8, 0}, {{8, 0}}, kAll);
  EXPECT_DOUBLE_EQ(w[0], 0.25);
  EXPECT_EQ(w[1], 0.0);
}

TEST(LossWeightsTest, RefusesCountsThatDisagree) {
  EXPECT_NE(LogicErrorOf({8, 4}, {{8, 5}}, kAll).find("loss term 1 averages over 4 units, but "
                                                      "LossUnits counts 5"),
            std::string::npos);
  EXPECT_NE(LogicErrorOf({8}, {{8, 5}}, kAll).find("returned 1 loss terms but counts units for 2"),
            std::string::npos);
  EXPECT_NE(LogicErrorOf({8, 5}, {{8, 5}}, {{8, 5}, {8}})
                .find("counts a different number of loss terms per micro-batch"),
            std::string::npos);
  // Within 1e-9 relative is the same count (sums of fractional units).
  EXPECT_EQ(LogicErrorOf({8, 5 + 1e-12}, {{8, 5}}, kAll), "");
}

}  // namespace
}  // namespace tspipe
