// Codistillation (Anil et al., ICLR 2018; Sodhani et al., "A Closer Look at
// Codistillation for Distributed Training"): n >= 2 models of one
// architecture, each trained on its own batches, each also learning from
// stale copies of the others:
//   loss_i = CE(y, f_i(x)) + alpha * 1/(n-1) * sum_{j != i} D(f_i(x), f~_j(x)),
// f~_j model j's parameters as of the last exchange; models exchange
// parameters (not gradients) every K steps. In tspipe the stale copies are
// model i's teacher (forward only: TeacherKind::kPeers), so their forwards
// fill pipeline bubbles like TSPipe's teacher forwards, and the exchange is
// the stage's TeacherUpdate (an all-gather among the stage's replicas).
//
// D, by default, is KL(softmax(f~_j / T) || softmax(f_i / T)) * T^2: the
// peer's softened prediction is the target, as in Hinton et al.'s
// distillation and Anil et al.'s formulation, so each model is pulled
// towards what its peers predict (the T^2 keeps the gradient scale
// independent of T). pfnet's code uses the reverse KL(f_i || f~_j), which is
// mode-seeking; "mse" gives Anil et al.'s alternative, the mean squared
// distance of the logits.
#ifndef TSPIPE_ALGORITHMS_CODISTILL_H_
#define TSPIPE_ALGORITHMS_CODISTILL_H_

#include <string>
#include <vector>

#include "core/algorithm.h"

namespace tspipe {

struct CodistillOptions {
  int models = 2;
  // K: exchange after every K-th optimizer step (Anil et al.: 50).
  int exchange_every = 50;
  double alpha = 1.0;
  double temperature = 1.0;
  std::string divergence = "kl";  // "kl" or "mse".
  // Steps 1..burn_in train with alpha = 0 (Anil et al. use a burn-in;
  // Sodhani et al. found no benefit).
  int burn_in = 0;
};

// The loss above for one model: its logits, each peer's logits, labels,
// and the alpha in force.
torch::Tensor CodistillLoss(const torch::Tensor& logits, const std::vector<torch::Tensor>& peers,
                            const torch::Tensor& labels, const CodistillOptions& options,
                            double alpha);

class Codistillation : public Algorithm {
 public:
  explicit Codistillation(const CodistillOptions& options) : options_(options) {}
  std::string name() const override { return "codistill"; }
  Workload workload() const override;
  // (*student)[0]: this model's logits; (*teacher): one peer's logits per
  // other model; (*targets)[0]: labels.
  torch::Tensor Loss(const LossInputs& inputs) const override;
  bool ExchangesAt(int step) const override { return step % options_.exchange_every == 0; }
  const CodistillOptions& options() const { return options_; }

 private:
  CodistillOptions options_;
};

}  // namespace tspipe

#endif  // TSPIPE_ALGORITHMS_CODISTILL_H_
