#include "backends/loss_weights.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

namespace tspipe {
namespace {

// Term-wise sums of `units`, all of one length.
std::vector<double> Sum(const std::string& algorithm, const std::vector<std::vector<double>>& units,
                        size_t terms) {
  std::vector<double> sum(terms, 0.0);
  for (const std::vector<double>& u : units) {
    if (u.size() != terms) {
      throw std::logic_error("algorithm '" + algorithm +
                             "' counts a different number of loss terms per micro-batch");
    }
    for (size_t t = 0; t < terms; ++t) sum[t] += u[t];
  }
  return sum;
}

}  // namespace

std::vector<double> LossTermWeights(const std::string& algorithm,
                                    const std::vector<double>& reported,
                                    const std::vector<std::vector<double>>& mine,
                                    const std::vector<std::vector<double>>& all) {
  const size_t terms = all.empty() ? 0 : all.front().size();
  const std::vector<double> totals = Sum(algorithm, all, terms);
  if (reported.size() != terms) {
    throw std::logic_error("algorithm '" + algorithm + "' returned " +
                           std::to_string(reported.size()) + " loss terms but counts units for " +
                           std::to_string(terms));
  }
  const std::vector<double> here = Sum(algorithm, mine, terms);
  std::vector<double> weights(terms, 0.0);
  for (size_t t = 0; t < terms; ++t) {
    if (std::abs(reported[t] - here[t]) > 1e-9 * std::max(1.0, here[t])) {
      std::ostringstream out;
      out << "algorithm '" << algorithm << "': loss term " << t << " averages over "
          << reported[t] << " units, but LossUnits counts " << here[t] << " in the same samples";
      throw std::logic_error(out.str());
    }
    if (reported[t] > 0) weights[t] = reported[t] / totals[t];
  }
  return weights;
}

}  // namespace tspipe
