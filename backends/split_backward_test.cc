// SplitBackward against the truth it replaces: one whole backward of the
// same graph (torch::autograd::backward), in float64.
#include "backends/split_backward.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>

namespace tspipe {
namespace {

using Forward = std::function<std::vector<torch::Tensor>(const torch::Tensor&)>;

struct Grads {
  torch::Tensor input;
  std::vector<torch::Tensor> params;
};

std::vector<torch::Tensor> OutputGrads(const std::vector<torch::Tensor>& outs) {
  std::vector<torch::Tensor> g;
  for (size_t i = 0; i < outs.size(); ++i) {
    torch::manual_seed(100 + i);
    g.push_back(torch::randn_like(outs[i]));
  }
  return g;
}

void ZeroGrads(const std::vector<torch::Tensor>& params) {
  for (const torch::Tensor& p : params) {
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
  }
}

Grads Whole(const Forward& f, const torch::Tensor& x0, const std::vector<torch::Tensor>& params,
            bool input_grad) {
  ZeroGrads(params);
  torch::Tensor x = x0.detach().clone().requires_grad_(input_grad);
  std::vector<torch::Tensor> outs = f(x);
  torch::autograd::backward(outs, OutputGrads(outs));
  Grads g;
  if (input_grad) g.input = x.grad();
  for (const torch::Tensor& p : params) g.params.push_back(p.grad().defined() ? p.grad().clone() : p.grad());
  return g;
}

Grads Split(const Forward& f, const torch::Tensor& x0, const std::vector<torch::Tensor>& params,
            bool input_grad, int* boundary, int* fallback) {
  ZeroGrads(params);
  torch::Tensor x = x0.detach().clone().requires_grad_(input_grad);
  std::vector<torch::Tensor> outs = f(x);
  std::vector<torch::Tensor> inputs;
  if (input_grad) inputs.push_back(x);
  SplitBackward split(outs, OutputGrads(outs), inputs, params);
  outs.clear();  // The split backward alone keeps the graph alive.
  Grads g;
  std::vector<torch::Tensor> got = split.InputGradients();
  if (input_grad) g.input = got.at(0);
  // Nothing reaches the parameters before the weight pass.
  for (const torch::Tensor& p : params) EXPECT_FALSE(p.grad().defined());
  split.AccumulateWeightGradients();
  for (const torch::Tensor& p : params) g.params.push_back(p.grad().defined() ? p.grad().clone() : p.grad());
  *boundary = split.boundary_params();
  *fallback = split.fallback_params();
  return g;
}

void ExpectSame(const Grads& a, const Grads& b) {
  ASSERT_EQ(a.input.defined(), b.input.defined());
  if (a.input.defined()) {
    EXPECT_TRUE(torch::allclose(a.input, b.input, 1e-12, 1e-12));
  }
  ASSERT_EQ(a.params.size(), b.params.size());
  for (size_t i = 0; i < a.params.size(); ++i) {
    ASSERT_EQ(a.params[i].defined(), b.params[i].defined()) << "parameter " << i;
    if (a.params[i].defined()) {
      EXPECT_TRUE(torch::allclose(a.params[i], b.params[i], 1e-12, 1e-12))
          << "parameter " << i << " differs by "
          << (a.params[i] - b.params[i]).abs().max().item<double>();
    }
  }
}

class SplitBackwardTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(0); }
};

// Linear, ReLU, batch norm, linear: every parameter behind a boundary node
// (addmm, batch norm), none recomputed from the outputs.
TEST_F(SplitBackwardTest, MlpWithBatchNormUsesBoundaryNodes) {
  torch::nn::Sequential net(torch::nn::Linear(6, 8), torch::nn::ReLU(),
                            torch::nn::BatchNorm1d(8), torch::nn::Linear(8, 3));
  net->to(torch::kFloat64);
  net->train();
  torch::Tensor x = torch::randn({5, 6}, torch::kFloat64);
  Forward f = [&](const torch::Tensor& in) { return std::vector<torch::Tensor>{net->forward(in)}; };
  int boundary = 0, fallback = 0;
  Grads whole = Whole(f, x, net->parameters(), true);
  Grads split = Split(f, x, net->parameters(), true, &boundary, &fallback);
  ExpectSame(whole, split);
  EXPECT_EQ(boundary, 6);
  EXPECT_EQ(fallback, 0);
}

TEST_F(SplitBackwardTest, ConvolutionBlock) {
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(3, 4, 3).padding(1).bias(false));
  torch::nn::BatchNorm2d bn(4);
  conv->to(torch::kFloat64);
  bn->to(torch::kFloat64);
  torch::Tensor x = torch::randn({2, 3, 5, 5}, torch::kFloat64);
  Forward f = [&](const torch::Tensor& in) {
    torch::Tensor y = torch::relu(bn->forward(conv->forward(in)));
    return std::vector<torch::Tensor>{y + in.mean()};
  };
  std::vector<torch::Tensor> params = conv->parameters();
  for (const auto& p : bn->parameters()) params.push_back(p);
  int boundary = 0, fallback = 0;
  ExpectSame(Whole(f, x, params, true), Split(f, x, params, true, &boundary, &fallback));
  EXPECT_EQ(boundary, 3);
  EXPECT_EQ(fallback, 0);
}

// A second output that depends on a parameter but not on the input: that
// parameter's gradient partly bypasses the input pass, so it is computed
// from the outputs; the others still use boundary nodes.
TEST_F(SplitBackwardTest, ParameterOffTheInputPathFallsBack) {
  torch::nn::Linear lin(4, 4);
  lin->to(torch::kFloat64);
  torch::Tensor scale = torch::randn({4}, torch::kFloat64).requires_grad_(true);
  torch::Tensor x = torch::randn({3, 4}, torch::kFloat64);
  Forward f = [&](const torch::Tensor& in) {
    return std::vector<torch::Tensor>{lin->forward(in) * scale, scale * 2};
  };
  std::vector<torch::Tensor> params = lin->parameters();
  params.push_back(scale);
  int boundary = 0, fallback = 0;
  ExpectSame(Whole(f, x, params, true), Split(f, x, params, true, &boundary, &fallback));
  EXPECT_EQ(boundary, 2);
  EXPECT_EQ(fallback, 1);
}

// One weight applied twice: its boundary nodes feed each other, and a
// weight pass from both would count the inner one twice.
TEST_F(SplitBackwardTest, TiedWeightFallsBack) {
  torch::Tensor w = torch::randn({4, 4}, torch::kFloat64).requires_grad_(true);
  torch::Tensor b = torch::randn({4}, torch::kFloat64).requires_grad_(true);
  torch::Tensor x = torch::randn({3, 4}, torch::kFloat64);
  Forward f = [&](const torch::Tensor& in) {
    return std::vector<torch::Tensor>{torch::tanh(torch::tanh(in.matmul(w)).matmul(w) + b)};
  };
  int boundary = 0, fallback = 0;
  ExpectSame(Whole(f, x, {w, b}, true), Split(f, x, {w, b}, true, &boundary, &fallback));
  EXPECT_EQ(fallback, 1);
  EXPECT_EQ(boundary, 1);
}

// One weight on two parallel branches: two boundary nodes in one group,
// so the weight pass starts from several roots at once.
TEST_F(SplitBackwardTest, WeightOnParallelBranches) {
  torch::Tensor w = torch::randn({4, 4}, torch::kFloat64).requires_grad_(true);
  torch::Tensor x = torch::randn({3, 4}, torch::kFloat64);
  Forward f = [&](const torch::Tensor& in) {
    return std::vector<torch::Tensor>{torch::tanh(in.matmul(w)) + torch::sin(in * 2).matmul(w)};
  };
  int boundary = 0, fallback = 0;
  ExpectSame(Whole(f, x, {w}, true), Split(f, x, {w}, true, &boundary, &fallback));
  EXPECT_EQ(boundary, 1);
  EXPECT_EQ(fallback, 0);
}

// A boundary node whose recorded gradient is partly undefined: half of a
// linear layer's output is never used.
TEST_F(SplitBackwardTest, PartlyUnusedOutput) {
  torch::nn::Linear lin(4, 6);
  lin->to(torch::kFloat64);
  torch::Tensor x = torch::randn({3, 4}, torch::kFloat64);
  Forward f = [&](const torch::Tensor& in) {
    std::vector<torch::Tensor> parts = lin->forward(in).chunk(2, 1);
    return std::vector<torch::Tensor>{parts[0] * 3};
  };
  int boundary = 0, fallback = 0;
  ExpectSame(Whole(f, x, lin->parameters(), true),
             Split(f, x, lin->parameters(), true, &boundary, &fallback));
  EXPECT_EQ(boundary, 2);
}

// The first stage: its input is data, so there is no input pass and the
// weight pass is the whole backward.
TEST_F(SplitBackwardTest, NoInputGradient) {
  torch::nn::Sequential net(torch::nn::Linear(6, 8), torch::nn::Tanh(), torch::nn::Linear(8, 2));
  net->to(torch::kFloat64);
  torch::Tensor x = torch::randn({4, 6}, torch::kFloat64);
  Forward f = [&](const torch::Tensor& in) { return std::vector<torch::Tensor>{net->forward(in)}; };
  int boundary = 0, fallback = 0;
  ExpectSame(Whole(f, x, net->parameters(), false),
             Split(f, x, net->parameters(), false, &boundary, &fallback));
  EXPECT_EQ(fallback, 4);
}

TEST_F(SplitBackwardTest, PassesRunInOrderOnce) {
  torch::nn::Linear lin(3, 3);
  lin->to(torch::kFloat64);
  torch::Tensor x = torch::randn({2, 3}, torch::kFloat64).requires_grad_(true);
  torch::Tensor y = lin->forward(x);
  SplitBackward split({y}, {torch::ones_like(y)}, {x}, lin->parameters());
  EXPECT_THROW(split.AccumulateWeightGradients(), c10::Error);
  split.InputGradients();
  EXPECT_THROW(split.InputGradients(), c10::Error);
  split.AccumulateWeightGradients();
  EXPECT_THROW(split.AccumulateWeightGradients(), c10::Error);
  // Inputs computed inside the graph are refused.
  torch::Tensor inner = lin->forward(x);
  EXPECT_THROW(SplitBackward({lin->forward(inner)}, {torch::ones_like(inner)}, {inner},
                             lin->parameters()),
               c10::Error);
}

}  // namespace
}  // namespace tspipe
