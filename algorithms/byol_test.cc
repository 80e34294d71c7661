// BYOL's pieces against independent computations: the momentum schedule
// against its closed form, the EMA recursion against the unrolled sum, the
// loss against the squared distance of normalised vectors, and the
// augmentations against their identity and flip cases.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "data/augment.h"
#include "algorithms/byol.h"
#include "algorithms/momentum.h"
#include "algorithms/mocov3.h"
#include "models/resnet.h"
#include "models/vit.h"

namespace tspipe {
namespace {

TEST(ByolTest, MomentumRampsFromBaseToOne) {
  ByolOptions o;
  o.base_momentum = 0.99;
  o.total_steps = 100;
  EXPECT_DOUBLE_EQ(ByolMomentum(o, 0), 0.99);
  EXPECT_NEAR(ByolMomentum(o, 50), 0.995, 1e-12);  // cos(pi/2) = 0: halfway.
  EXPECT_DOUBLE_EQ(ByolMomentum(o, 100), 1.0);
  EXPECT_NEAR(ByolMomentum(o, 25), 1 - 0.01 * (std::sqrt(0.5) + 1) / 2, 1e-12);
  o.total_steps = 0;
  EXPECT_DOUBLE_EQ(ByolMomentum(o, 7), 0.99);
}

// target_K = (prod_k m_k) target_0 + sum_k (1 - m_k) (prod_{j>k} m_j) online_k.
TEST(ByolTest, EmaMatchesUnrolledRecursion) {
  torch::manual_seed(1);
  torch::nn::Linear online(4, 3), target(4, 3);
  const torch::Tensor target0 = target->weight.detach().clone().to(torch::kFloat64);
  const std::vector<double> m = {0.9, 0.5, 0.75};
  std::vector<torch::Tensor> onlines;
  for (double mk : m) {
    {
      torch::NoGradGuard g;
      online->weight.add_(torch::randn({3, 4}));  // A training step.
    }
    onlines.push_back(online->weight.detach().clone().to(torch::kFloat64));
    EmaUpdate(*online, *target, mk);
  }
  torch::Tensor expected = target0 * (m[0] * m[1] * m[2]);
  for (size_t k = 0; k < m.size(); ++k) {
    double tail = 1;
    for (size_t j = k + 1; j < m.size(); ++j) tail *= m[j];
    expected = expected + onlines[k] * ((1 - m[k]) * tail);
  }
  EXPECT_TRUE(torch::allclose(target->weight.to(torch::kFloat64), expected, 1e-6, 1e-6));
}

TEST(ByolTest, EmaRefusesMismatchedNetworks) {
  torch::nn::Linear online(4, 3), target(4, 2);
  EXPECT_THROW(EmaUpdate(*online, *target, 0.9), std::invalid_argument);
}

// 2 - 2 cos(p, z) = |p/|p| - z/|z||^2.
TEST(ByolTest, LossIsSquaredDistanceOfNormalisedVectors) {
  torch::manual_seed(2);
  torch::Tensor p1 = torch::randn({5, 8}, torch::kFloat64), p2 = torch::randn({5, 8}, torch::kFloat64);
  torch::Tensor z1 = torch::randn({5, 8}, torch::kFloat64), z2 = torch::randn({5, 8}, torch::kFloat64);
  auto dist = [](const torch::Tensor& a, const torch::Tensor& b) {
    torch::Tensor an = a / a.norm(2, 1, true), bn = b / b.norm(2, 1, true);
    return (an - bn).pow(2).sum(1).mean();
  };
  torch::Tensor expected = dist(p1, z2) + dist(p2, z1);
  EXPECT_NEAR(ByolLoss(p1, p2, z1, z2).item<double>(), expected.item<double>(), 1e-12);
  // Identical directions: zero loss.
  EXPECT_NEAR(ByolLoss(z2 * 3, z1 * 2, z1, z2).item<double>(), 0.0, 1e-12);
}

TEST(ByolTest, TargetStartsAsACopyOfTheOnlineNetworkWithoutPredictor) {
  ByolNetOptions o;
  o.encoder.widths = {4, 8};
  o.encoder.blocks_per_group = {1, 1};
  o.hidden = 16;
  o.projection = 8;
  torch::nn::Sequential online = MakeByolOnline(o);
  torch::nn::Sequential target = MakeMomentumTarget(online);
  EXPECT_EQ(online->size(), static_cast<size_t>(ByolEncoderBlocks(o) + 2));
  EXPECT_EQ(target->size(), online->size() - 1);
  auto tp = target->named_parameters();
  auto op = online->named_parameters();
  for (const auto& p : tp) {
    ASSERT_NE(op.find(p.key()), nullptr) << p.key();
    EXPECT_TRUE(torch::equal(p.value(), op[p.key()])) << p.key();
    EXPECT_NE(p.value().data_ptr(), op[p.key()].data_ptr()) << "shares storage: " << p.key();
  }
}

// InfoNCE written out sample by sample: -log softmax of the positive among
// all keys of the batch, times 2 tau, for both view pairings.
TEST(MocoV3Test, LossIsInfoNceOverTheWholeBatch) {
  torch::manual_seed(6);
  const double tau = 0.2;
  const int n = 6;
  torch::Tensor q1 = torch::randn({n, 5}, torch::kFloat64), q2 = torch::randn({n, 5}, torch::kFloat64);
  torch::Tensor k1 = torch::randn({n, 5}, torch::kFloat64), k2 = torch::randn({n, 5}, torch::kFloat64);
  auto ctr = [&](const torch::Tensor& q, const torch::Tensor& k) {
    double total = 0;
    for (int i = 0; i < n; ++i) {
      auto cos = [&](int j) {
        return (q[i] * k[j]).sum().item<double>() /
               (q[i].norm().item<double>() * k[j].norm().item<double>());
      };
      double denominator = 0;
      for (int j = 0; j < n; ++j) denominator += std::exp(cos(j) / tau);
      total += -std::log(std::exp(cos(i) / tau) / denominator);
    }
    return total / n * 2 * tau;
  };
  EXPECT_NEAR(MocoV3Loss(q1, q2, k1, k2, tau).item<double>(), ctr(q1, k2) + ctr(q2, k1), 1e-10);
  // Halving the batch removes negatives and changes the loss: it is not a
  // per-sample mean.
  EXPECT_GT(std::abs(MocoV3Loss(q1, q2, k1, k2, tau).item<double>() -
                     MocoV3Loss(q1.slice(0, 0, 3), q2.slice(0, 0, 3), k1.slice(0, 0, 3),
                                k2.slice(0, 0, 3), tau)
                         .item<double>()),
            1e-3);
}

TEST(MocoV3Test, VitNetworksHaveTheirShapes) {
  MocoNetOptions o;
  o.encoder.dim = 16;
  o.encoder.depth = 2;
  o.encoder.heads = 2;
  o.hidden = 32;
  o.projection = 8;
  torch::nn::Sequential online = MakeMocoV3Online(o);
  EXPECT_EQ(online->size(), static_cast<size_t>(MocoEncoderBlocks(o) + 2));
  torch::Tensor x = torch::randn({3, 1, 28, 28});
  EXPECT_EQ(online->forward(x).sizes(), (std::vector<int64_t>{3, 8}));
  torch::nn::Sequential target = MakeMomentumTarget(online);
  EXPECT_EQ(target->size(), online->size() - 1);
  for (const auto& p : target->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), online->named_parameters()[p.key()])) << p.key();
  }
  o.encoder.patch = 5;
  EXPECT_THROW(MakeMocoV3Online(o), std::invalid_argument);
}

TEST(AugmentTest, IdentitySettingsReturnTheInputAndFlipMirrors) {
  torch::manual_seed(3);
  torch::Tensor x = torch::randn({6, 1, 28, 28});
  AugmentOptions none;
  none.min_scale = 1;
  none.aspect = 1;
  none.flip_probability = 0;
  none.brightness = none.contrast = none.noise = 0;
  at::Generator gen = at::detail::createCPUGenerator(5);
  EXPECT_TRUE(torch::allclose(Augment(x, none, gen), x, 1e-5, 1e-5));
  AugmentOptions flip = none;
  flip.flip_probability = 1;
  EXPECT_TRUE(torch::allclose(Augment(x, flip, gen), x.flip({3}), 1e-5, 1e-5));
}

TEST(AugmentTest, SeededAndPerSample) {
  torch::manual_seed(4);
  torch::Tensor x = torch::randn({6, 1, 28, 28});
  AugmentOptions o;
  at::Generator a = at::detail::createCPUGenerator(9), b = at::detail::createCPUGenerator(9),
                c = at::detail::createCPUGenerator(10);
  torch::Tensor va = Augment(x, o, a);
  EXPECT_EQ(va.sizes(), x.sizes());
  EXPECT_TRUE(torch::equal(va, Augment(x, o, b)));
  EXPECT_FALSE(torch::equal(va, Augment(x, o, c)));
  EXPECT_FALSE(torch::allclose(va, x, 1e-3, 1e-3));
  // Two copies of one image get different views (draws are per sample).
  torch::Tensor same = x[0].unsqueeze(0).expand({2, 1, 28, 28}).contiguous();
  torch::Tensor views = Augment(same, o, a);
  EXPECT_FALSE(torch::allclose(views[0], views[1], 1e-3, 1e-3));
}

}  // namespace
}  // namespace tspipe
