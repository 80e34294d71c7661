// Links against :metrics alone: MetricValue is defined by the target that
// declares it (it used to live in the trainer, so this did not link).
#include "engine/metrics.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace tspipe {
namespace {

TEST(MetricsTest, FindsAFigureByNameOrListsTheOnesThereAre) {
  const Metrics m = {{"top1", 0.75}, {"loss", 1.5}};
  EXPECT_DOUBLE_EQ(MetricValue(m, "loss"), 1.5);
  try {
    MetricValue(m, "top5");
    FAIL() << "no throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), "the evaluation reports no 'top5' (it reports: top1, loss)");
  }
  EXPECT_THROW(MetricValue({}, "top1"), std::invalid_argument);
}

}  // namespace
}  // namespace tspipe
