#include "core/balance.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace tspipe {
namespace {

// Every way to split `total` blocks into `parts` stages of at least `min_part`.
std::vector<std::vector<int>> Compositions(int total, int parts, int min_part) {
  std::vector<std::vector<int>> out;
  std::vector<int> cur;
  std::function<void(int, int)> rec = [&](int left, int stages_left) {
    if (stages_left == 0) {
      if (left == 0) out.push_back(cur);
      return;
    }
    for (int take = min_part; take <= left - min_part * (stages_left - 1); ++take) {
      cur.push_back(take);
      rec(left - take, stages_left - 1);
      cur.pop_back();
    }
  };
  rec(total, parts);
  return out;
}

// Stage costs of a cut, computed independently of the solver but in the
// order its contract names: the stage's student costs in block order, plus
// its teacher costs in block order.
std::vector<double> StageCosts(const std::vector<double>& student, const std::vector<int>& sb,
                               const std::vector<double>& teacher, const std::vector<int>& tb) {
  std::vector<double> costs;
  size_t a = 0, c = 0;
  for (size_t s = 0; s < sb.size(); ++s) {
    double ss = 0, ts = 0;
    for (int x = 0; x < sb[s]; ++x) ss += student[a++];
    if (!tb.empty()) {
      for (int x = 0; x < tb[s]; ++x) ts += teacher[c++];
    }
    costs.push_back(ss + ts);
  }
  return costs;
}

double Max(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

double SumSq(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return s;
}

struct Brute {
  double bottleneck = std::numeric_limits<double>::infinity();
  double sum_sq = std::numeric_limits<double>::infinity();  // Among the optimal cuts.
};

Brute BruteForce(const std::vector<double>& student, const std::vector<double>& teacher,
                 int stages) {
  Brute b;
  auto student_cuts = Compositions(student.size(), stages, 1);
  auto teacher_cuts = teacher.empty() ? std::vector<std::vector<int>>{{}}
                                      : Compositions(teacher.size(), stages, 1);
  for (const auto& sb : student_cuts) {
    for (const auto& tb : teacher_cuts) {
      auto costs = StageCosts(student, sb, teacher, tb);
      double m = Max(costs), q = SumSq(costs);
      if (m < b.bottleneck || (m == b.bottleneck && q < b.sum_sq)) {
        b.bottleneck = m;
        b.sum_sq = q;
      }
    }
  }
  return b;
}

void CheckValid(const BalanceResult& r, const std::vector<double>& student,
                const std::vector<double>& teacher, int stages) {
  ASSERT_EQ(r.student.size(), static_cast<size_t>(stages));
  int sum = 0;
  for (int x : r.student) {
    EXPECT_GE(x, 1);
    sum += x;
  }
  EXPECT_EQ(sum, static_cast<int>(student.size()));
  if (teacher.empty()) {
    EXPECT_TRUE(r.teacher.empty());
  } else {
    ASSERT_EQ(r.teacher.size(), static_cast<size_t>(stages));
    sum = 0;
    for (int x : r.teacher) {
      EXPECT_GE(x, 1);
      sum += x;
    }
    EXPECT_EQ(sum, static_cast<int>(teacher.size()));
  }
  auto costs = StageCosts(student, r.student, teacher, r.teacher);
  EXPECT_EQ(r.stage_costs, costs);
  EXPECT_EQ(r.bottleneck, Max(costs));
}

std::vector<double> RandomCosts(std::mt19937& rng, int n, bool integral) {
  std::vector<double> v(n);
  std::uniform_real_distribution<double> real(0.0, 10.0);
  std::uniform_int_distribution<int> small(0, 4);  // Many ties.
  for (double& x : v) x = integral ? small(rng) : real(rng);
  return v;
}

TEST(SolveBalanceTest, MatchesBruteForce) {
  int cases = 0;
  for (unsigned seed = 1; seed <= 8; ++seed) {
    std::mt19937 rng(seed);
    for (bool integral : {false, true}) {
      for (int k = 1; k <= 7; ++k) {
        for (int t = 0; t <= 7; ++t) {
          for (int stages = 1; stages <= std::min(4, k); ++stages) {
            if (t > 0 && stages > t) continue;
            auto student = RandomCosts(rng, k, integral);
            auto teacher = RandomCosts(rng, t, integral);
            SCOPED_TRACE("seed " + std::to_string(seed) + " K=" + std::to_string(k) +
                         " T=" + std::to_string(t) + " N=" + std::to_string(stages) +
                         (integral ? " integral" : " real"));
            BalanceResult r = SolveBalance(student, teacher, stages);
            CheckValid(r, student, teacher, stages);
            Brute b = BruteForce(student, teacher, stages);
            EXPECT_EQ(r.bottleneck, b.bottleneck);
            EXPECT_EQ(SumSq(r.stage_costs), b.sum_sq);
            // The same inputs give the same cut.
            BalanceResult again = SolveBalance(student, teacher, stages);
            EXPECT_EQ(again.student, r.student);
            EXPECT_EQ(again.teacher, r.teacher);
            ++cases;
          }
        }
      }
    }
  }
  EXPECT_GT(cases, 1000);
}

TEST(SolveBalanceTest, HandExamples) {
  BalanceResult r = SolveBalance({1, 1, 1, 1}, {}, 2);
  EXPECT_EQ(r.student, (std::vector<int>{2, 2}));
  EXPECT_TRUE(r.teacher.empty());
  EXPECT_EQ(r.stage_costs, (std::vector<double>{2, 2}));
  EXPECT_EQ(r.bottleneck, 2);

  r = SolveBalance({3, 1, 1, 1}, {}, 2);
  EXPECT_EQ(r.student, (std::vector<int>{1, 3}));
  EXPECT_EQ(r.bottleneck, 3);

  // The teacher's heavy first block pushes student blocks to the later stage.
  r = SolveBalance({1, 1, 1, 1}, {4, 1}, 2);
  EXPECT_EQ(r.student, (std::vector<int>{1, 3}));
  EXPECT_EQ(r.teacher, (std::vector<int>{1, 1}));
  EXPECT_EQ(r.stage_costs, (std::vector<double>{5, 4}));
  EXPECT_EQ(r.bottleneck, 5);
}

TEST(SolveBalanceTest, SumOfSquaresBreaksTies) {
  // The 5 is the bottleneck wherever it goes; among the cuts with max 5 the
  // most even rest is {5}, {1,1}, {1,1}.
  BalanceResult r = SolveBalance({5, 1, 1, 1, 1}, {}, 3);
  EXPECT_EQ(r.bottleneck, 5);
  EXPECT_EQ(r.student, (std::vector<int>{1, 2, 2}));
}

template <typename F>
std::string InvalidArgumentOf(F f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  ADD_FAILURE() << "no std::invalid_argument thrown";
  return "";
}

TEST(SolveBalanceTest, Errors) {
  EXPECT_EQ(InvalidArgumentOf([] { SolveBalance({1, 2, 3}, {}, 4); }),
            "4 stages but the student has only 3 blocks");
  EXPECT_EQ(InvalidArgumentOf([] { SolveBalance({1, 2, 3}, {1, 1}, 3); }),
            "3 stages but the teacher has only 2 blocks");
  EXPECT_EQ(InvalidArgumentOf([] { SolveBalance({1, 2, 3}, {}, 0); }),
            "num_stages must be at least 1, got 0");
  std::string msg = InvalidArgumentOf([] { SolveBalance({1, -2, 3}, {}, 2); });
  EXPECT_NE(msg.find("student cost of block 1 is -2"), std::string::npos) << msg;
  msg = InvalidArgumentOf([] { SolveBalance({1, 2}, {1, std::nan("")}, 2); });
  EXPECT_NE(msg.find("teacher cost of block 1 is nan"), std::string::npos) << msg;
  msg = InvalidArgumentOf(
      [] { SolveBalance({std::numeric_limits<double>::infinity()}, {}, 1); });
  EXPECT_NE(msg.find("student cost of block 0 is inf"), std::string::npos) << msg;
}

TEST(FormatBalanceTest, CommaSeparated) {
  EXPECT_EQ(FormatBalance({2, 3}), "2,3");
  EXPECT_EQ(FormatBalance({7}), "7");
  EXPECT_EQ(FormatBalance({}), "");
}

}  // namespace
}  // namespace tspipe
