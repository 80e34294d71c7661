// The arithmetic of the executor's loss handler, apart from tensors: each
// loss action weights each term's mean by the term's units in its samples
// over the term's units in the whole mini-batch (a separate model's: its
// share), so that the sum over every loss action (loss stages, replicas,
// micro-batches) is each term's mean over the mini-batch, however the
// samples were split. Torch-free.
#ifndef TSPIPE_BACKENDS_LOSS_WEIGHTS_H_
#define TSPIPE_BACKENDS_LOSS_WEIGHTS_H_

#include <string>
#include <vector>

namespace tspipe {

// `reported[t]`: the units term t says it averaged over in the action's
// samples (LossTerm::units). `mine`: Algorithm::LossUnits of each of the
// action's micro-batches; `all`: of every micro-batch the mean is over.
// Returns weight[t] = reported[t] / sum over `all` of units[t] (0 where
// reported[t] <= 0: the term had nothing to average here). Throws
// std::logic_error naming `algorithm` when the micro-batches count
// different numbers of terms, the term count differs from `reported`'s, or
// a term's reported units differ from what LossUnits counts in the same
// samples (beyond 1e-9 relative): the weights would not sum to one.
std::vector<double> LossTermWeights(const std::string& algorithm,
                                    const std::vector<double>& reported,
                                    const std::vector<std::vector<double>>& mine,
                                    const std::vector<std::vector<double>>& all);

}  // namespace tspipe

#endif  // TSPIPE_BACKENDS_LOSS_WEIGHTS_H_
