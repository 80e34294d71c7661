#include "cli/result_table.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace tspipe {
namespace {

TEST(ResultTableTest, AlignsColumnsAndWritesMarkdown) {
  ResultTable t({{"run", "run"}, {"scheduler", "scheduler"}, {"test_accuracy", "test accuracy"}});
  t.AddRow({"kd student", "tspipe", Fixed(0.81234, 4)});
  t.AddRow({"teacher", "-", Fixed(0.9, 4)});
  EXPECT_EQ(t.Console(),
            "run        scheduler test_accuracy\n"
            "kd student tspipe           0.8123\n"
            "teacher    -                0.9000\n");
  EXPECT_EQ(t.Markdown(),
            "| run | scheduler | test accuracy |\n|---|---|---|\n"
            "| kd student | tspipe | 0.8123 |\n| teacher | - | 0.9000 |\n");
  EXPECT_THROW(t.AddRow({"short"}), std::invalid_argument);
}

}  // namespace
}  // namespace tspipe
