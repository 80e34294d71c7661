#include "core/balance.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace tspipe {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::string Num(double x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

void CheckCosts(const std::vector<double>& costs, const char* model) {
  for (size_t i = 0; i < costs.size(); ++i) {
    if (!std::isfinite(costs[i]) || costs[i] < 0) {
      throw std::invalid_argument(std::string(model) + " cost of block " + std::to_string(i) +
                                  " is " + Num(costs[i]) + "; costs must be finite and >= 0");
    }
  }
}

// seg[a][b] = costs[a] + ... + costs[b-1], summed in block order. Both DP
// passes and the result read stage costs from here, so they agree bit for bit
// (prefix-sum differences would not).
std::vector<std::vector<double>> SegmentSums(const std::vector<double>& costs) {
  size_t n = costs.size();
  std::vector<std::vector<double>> seg(n + 1, std::vector<double>(n + 1, 0.0));
  for (size_t a = 0; a < n; ++a) {
    double sum = 0;
    for (size_t b = a + 1; b <= n; ++b) {
      sum += costs[b - 1];
      seg[a][b] = sum;
    }
  }
  return seg;
}

}  // namespace

BalanceResult SolveBalance(const std::vector<double>& student_costs,
                           const std::vector<double>& teacher_costs, int num_stages) {
  const int n = num_stages;
  const int k = static_cast<int>(student_costs.size());
  const int t = static_cast<int>(teacher_costs.size());
  if (n < 1) {
    throw std::invalid_argument("num_stages must be at least 1, got " + std::to_string(n));
  }
  if (n > k) {
    throw std::invalid_argument(std::to_string(n) + " stages but the student has only " +
                                std::to_string(k) + " blocks");
  }
  if (t > 0 && n > t) {
    throw std::invalid_argument(std::to_string(n) + " stages but the teacher has only " +
                                std::to_string(t) + " blocks");
  }
  CheckCosts(student_costs, "student");
  CheckCosts(teacher_costs, "teacher");

  // Without a teacher every stage takes zero teacher blocks and the teacher
  // index stays 0.
  const int min_t = t > 0 ? 1 : 0;
  const auto seg_s = SegmentSums(student_costs);
  const auto seg_t = SegmentSums(teacher_costs);
  const int cols = t + 1;
  auto at = [cols](int i, int j) { return i * cols + j; };
  const size_t cells = static_cast<size_t>(k + 1) * cols;

  // Pass 1: best[i][j] = the smallest bottleneck of s stages covering the
  // first i student and j teacher blocks.
  std::vector<double> best(cells, kInf), next(cells);
  best[at(0, 0)] = 0;
  for (int s = 1; s <= n; ++s) {
    std::fill(next.begin(), next.end(), kInf);
    for (int i = s; i <= k; ++i) {
      for (int j = s * min_t; j <= t; ++j) {
        double v = kInf;
        for (int a = s - 1; a < i; ++a) {
          for (int c = (s - 1) * min_t; c <= j - min_t; ++c) {
            double prev = best[at(a, c)];
            if (prev == kInf) continue;
            v = std::min(v, std::max(prev, seg_s[a][i] + seg_t[c][j]));
          }
        }
        next[at(i, j)] = v;
      }
    }
    std::swap(best, next);
  }
  const double bottleneck = best[at(k, t)];

  // Pass 2: among cuts whose every stage costs at most `bottleneck`, the
  // smallest sum of squared stage costs. A single lexicographic (max, sum of
  // squares) pass would not be exact: a prefix with a larger max but smaller
  // sum of squares can win once a later stage dominates the max.
  std::vector<double> sq(cells, kInf), sq_next(cells);
  std::vector<std::vector<std::pair<int, int>>> parent(
      n + 1, std::vector<std::pair<int, int>>(cells, {-1, -1}));
  sq[at(0, 0)] = 0;
  for (int s = 1; s <= n; ++s) {
    std::fill(sq_next.begin(), sq_next.end(), kInf);
    for (int i = s; i <= k; ++i) {
      for (int j = s * min_t; j <= t; ++j) {
        double v = kInf;
        std::pair<int, int> from{-1, -1};
        for (int a = s - 1; a < i; ++a) {
          for (int c = (s - 1) * min_t; c <= j - min_t; ++c) {
            double prev = sq[at(a, c)];
            if (prev == kInf) continue;
            double cost = seg_s[a][i] + seg_t[c][j];
            if (cost > bottleneck) continue;
            double cand = prev + cost * cost;
            if (cand < v) {
              v = cand;
              from = {a, c};
            }
          }
        }
        sq_next[at(i, j)] = v;
        parent[s][at(i, j)] = from;
      }
    }
    std::swap(sq, sq_next);
  }

  BalanceResult result;
  result.student.assign(n, 0);
  if (t > 0) result.teacher.assign(n, 0);
  result.stage_costs.assign(n, 0);
  int i = k, j = t;
  for (int s = n; s >= 1; --s) {
    auto [a, c] = parent[s][at(i, j)];
    // Pass 1's optimal cut satisfies pass 2's bound, so a path always exists.
    if (a < 0) throw std::logic_error("SolveBalance: no cut within the optimal bottleneck");
    result.student[s - 1] = i - a;
    if (t > 0) result.teacher[s - 1] = j - c;
    result.stage_costs[s - 1] = seg_s[a][i] + seg_t[c][j];
    i = a;
    j = c;
  }
  result.bottleneck = *std::max_element(result.stage_costs.begin(), result.stage_costs.end());
  return result;
}

std::string FormatBalance(const std::vector<int>& balance) {
  std::string s;
  for (size_t i = 0; i < balance.size(); ++i) {
    if (i > 0) s += ",";
    s += std::to_string(balance[i]);
  }
  return s;
}

void CheckBalance(const std::vector<int>& balance, int num_blocks) {
  if (balance.empty()) throw std::invalid_argument("balance is empty");
  int sum = 0;
  std::string text;
  for (size_t i = 0; i < balance.size(); ++i) {
    text += (i ? "," : "") + std::to_string(balance[i]);
    sum += balance[i];
  }
  if (static_cast<int>(balance.size()) > num_blocks) {
    throw std::invalid_argument("balance [" + text + "] asks for " +
                                std::to_string(balance.size()) +
                                " stages but the model has only " +
                                std::to_string(num_blocks) + " blocks");
  }
  for (size_t i = 0; i < balance.size(); ++i) {
    if (balance[i] < 1) {
      throw std::invalid_argument("balance [" + text + "] gives stage " + std::to_string(i) +
                                  " " + std::to_string(balance[i]) +
                                  " blocks; every stage needs at least one");
    }
  }
  if (sum != num_blocks) {
    throw std::invalid_argument("balance [" + text + "] sums to " + std::to_string(sum) +
                                " but the model has " + std::to_string(num_blocks) + " blocks");
  }
}

std::vector<int> EvenBalance(int num_blocks, int num_stages) {
  if (num_stages < 1) {
    throw std::invalid_argument("stage count must be at least 1, got " +
                                std::to_string(num_stages));
  }
  if (num_stages > num_blocks) {
    throw std::invalid_argument(std::to_string(num_stages) + " stages requested but the model has only " +
                                std::to_string(num_blocks) + " blocks");
  }
  std::vector<int> balance(num_stages, num_blocks / num_stages);
  for (int i = 0; i < num_blocks % num_stages; ++i) ++balance[i];
  return balance;
}

}  // namespace tspipe
