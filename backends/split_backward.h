// A stage's backward in two passes, for zero-bubble pipelines: first the
// gradient with respect to the stage's inputs (what the previous stage
// waits for), later the gradients of its parameters.
//
// Computing the parameter gradients by a second full backward would redo
// the activation gradients of every layer. Instead, as PyTorch's
// pipelining does (torch/distributed/pipelining/_backward.py), the first
// pass records the gradient flowing into each "boundary" node of the
// autograd graph: a node that depends on the stage's input and through
// which a parameter's gradient flows (a linear layer's addmm, a
// convolution, a batch norm). The second pass starts at those nodes with
// the recorded gradients and runs only the parameter side of them. A
// parameter whose gradient also flows along a path that avoids the input
// (or where one boundary node feeds another of the same parameter, which
// would count a path twice) is computed by a backward from the outputs
// restricted to it: always correct, only slower.
#ifndef TSPIPE_BACKENDS_SPLIT_BACKWARD_H_
#define TSPIPE_BACKENDS_SPLIT_BACKWARD_H_

#include <torch/torch.h>

#include <memory>
#include <vector>

namespace tspipe {

class SplitBackward {
 public:
  // `outputs` with `output_grads` (same length, defined, outputs requiring
  // grad); `inputs` the stage inputs to differentiate for (each requires
  // grad; may be empty); `params` the stage's parameters.
  SplitBackward(std::vector<torch::Tensor> outputs, std::vector<torch::Tensor> output_grads,
                const std::vector<torch::Tensor>& inputs, const std::vector<torch::Tensor>& params);
  ~SplitBackward();
  SplitBackward(const SplitBackward&) = delete;
  SplitBackward& operator=(const SplitBackward&) = delete;

  // The input-gradient pass: d loss / d inputs[i] (undefined where the
  // input does not reach the outputs). Keeps the graph for the second pass.
  // Call once.
  std::vector<torch::Tensor> InputGradients();

  // The weight-gradient pass: accumulates every parameter's gradient into
  // its .grad, as one full backward would, then frees the graph. Call once,
  // after InputGradients.
  void AccumulateWeightGradients();

  // Parameters the second pass computes from recorded boundary gradients,
  // and those it computes by a restricted backward from the outputs (for
  // tests and reports).
  int boundary_params() const;
  int fallback_params() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace tspipe

#endif  // TSPIPE_BACKENDS_SPLIT_BACKWARD_H_
