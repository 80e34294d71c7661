// Named figures of an evaluation, in the order a recipe reports them.
#ifndef TSPIPE_ENGINE_METRICS_H_
#define TSPIPE_ENGINE_METRICS_H_

#include <string>
#include <utility>
#include <vector>

namespace tspipe {

using Metrics = std::vector<std::pair<std::string, double>>;

// The figure called `name`; throws std::invalid_argument listing the ones
// there are.
double MetricValue(const Metrics& metrics, const std::string& name);

}  // namespace tspipe

#endif  // TSPIPE_ENGINE_METRICS_H_
