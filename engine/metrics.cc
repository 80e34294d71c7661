#include "engine/metrics.h"

#include <stdexcept>

namespace tspipe {

double MetricValue(const Metrics& metrics, const std::string& name) {
  std::string names;
  for (const auto& [n, v] : metrics) {
    if (n == name) return v;
    names += (names.empty() ? "" : ", ") + n;
  }
  throw std::invalid_argument("the evaluation reports no '" + name + "' (it reports: " +
                              (names.empty() ? "nothing" : names) + ")");
}

}  // namespace tspipe
