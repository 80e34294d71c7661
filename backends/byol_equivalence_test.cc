// BYOL and MoCo v3 through the executor against a plain training loop written
// here from the textbook algorithm: forward both views micro-batch by micro-batch, the
// symmetrised loss over the whole batch, one step, then the EMA of the
// target. The loop keeps every target version, so it can apply either
// policy: the standard one (batch b sees target version b-1) or TSPipe's
// delayed one (b-2). TSPipe must equal the delayed loop, GPipe, sequential and
// data parallel the standard one; schedules that cannot give a policy's
// versions are refused.
#include <gtest/gtest.h>

#include "algorithms/byol.h"
#include "algorithms/momentum.h"
#include "algorithms/mocov3.h"
#include "backends/executor.h"
#include "core/scheduler.h"
#include "models/resnet.h"
#include "models/vit.h"

namespace tspipe {
namespace {

ByolNetOptions Net() {
  ByolNetOptions o;
  o.encoder.widths = {4, 8};
  o.encoder.blocks_per_group = {1, 1};  // Online: stem, 2 blocks, pool, 2 MLPs.
  o.hidden = 16;
  o.projection = 8;
  return o;
}

MocoNetOptions MocoNet() {
  MocoNetOptions o;
  o.encoder.patch = 7;
  o.encoder.dim = 16;
  o.encoder.depth = 2;  // Online: embed, 2 transformer blocks, class token, 2 MLPs.
  o.encoder.heads = 2;
  o.hidden = 16;
  o.projection = 8;
  return o;
}

// The two momentum-teacher methods under test.
enum class Method { kByol, kMocoV3 };

std::string NameOf(Method m) { return m == Method::kByol ? "byol" : "mocov3"; }

torch::nn::Sequential MakeOnline(Method method) {
  return method == Method::kByol ? MakeByolOnline(Net()) : MakeMocoV3Online(MocoNet());
}

torch::optim::SGDOptions Sgd() { return torch::optim::SGDOptions(0.1).momentum(0.9); }

// The target's balance: the online one without the predictor (last block).
std::vector<int> TargetBalance(std::vector<int> online) {
  online.back() -= 1;
  return online;
}

struct Case {
  Method method;
  std::string scheduler;
  std::string policy;
  std::vector<int> balance;
  int microbatches;
};

class ByolEquivalenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(ByolEquivalenceTest, MatchesTextbookLoopWithTheSamePolicy) {
  at::set_num_threads(1);
  const Case c = GetParam();
  const bool delayed = c.policy == "tspipe_delayed";
  const int steps = 5, batch = 16;
  const double base_momentum = 0.9;  // Far from 1, so versions differ visibly.
  const double tau = 0.2;
  std::unique_ptr<Algorithm> algorithm;
  if (c.method == Method::kByol) {
    ByolOptions bo;
    bo.base_momentum = base_momentum;
    bo.total_steps = steps;
    algorithm = std::make_unique<Byol>(bo);
  } else {
    MocoV3Options mo;
    mo.base_momentum = base_momentum;
    mo.temperature = tau;
    mo.total_steps = steps;
    algorithm = std::make_unique<MocoV3>(mo);
  }
  auto loss_fn = [&](const torch::Tensor& p1, const torch::Tensor& p2, const torch::Tensor& z1,
                     const torch::Tensor& z2) {
    return c.method == Method::kByol ? ByolLoss(p1, p2, z1, z2) : MocoV3Loss(p1, p2, z1, z2, tau);
  };

  torch::manual_seed(21);
  torch::nn::Sequential online = MakeOnline(c.method);
  online->to(torch::kFloat64);
  torch::nn::Sequential target = MakeMomentumTarget(online);
  torch::manual_seed(21);
  torch::nn::Sequential ref_online = MakeOnline(c.method);
  ref_online->to(torch::kFloat64);
  torch::nn::Sequential ref_target = MakeMomentumTarget(ref_online);
  // Scratch network that runs a chosen target version.
  torch::nn::Sequential ref_view = MakeMomentumTarget(ref_online);
  torch::optim::SGD ref_opt(ref_online->parameters(), Sgd());

  std::vector<Batch> batches;
  torch::manual_seed(22);
  for (int i = 0; i < steps; ++i) {
    batches.push_back(Batch{{torch::randn({batch, 1, 28, 28}, torch::kFloat64),
                             torch::randn({batch, 1, 28, 28}, torch::kFloat64)},
                            {torch::zeros({batch}, torch::kInt64)}});
  }

  SchedulerOptions so;
  so.num_stages = static_cast<int>(c.balance.size());
  so.num_microbatches = c.microbatches;
  so.workload = algorithm->workload();
  ExecutorOptions eo;
  eo.update_policy = c.policy;
  eo.make_optimizer = [](std::vector<torch::Tensor> p) {
    return std::unique_ptr<torch::optim::Optimizer>(new torch::optim::SGD(p, Sgd()));
  };
  Executor executor(BuildSchedule(c.scheduler, so),
                    Partition(MultiViewBlocksFromSequential(online), c.balance),
                    Partition(MultiViewBlocksFromSequential(target), TargetBalance(c.balance)),
                    algorithm.get(), eo);
  EXPECT_EQ(executor.update_policy(), c.policy);
  std::vector<StepResult> results =
      executor.Run({batches[0], batches[1], batches[2]}, &batches[3]);
  results.push_back(executor.Step(batches[3], &batches[4]));
  results.push_back(executor.Step(batches[4], nullptr));

  // versions[k] = target parameters after k steps.
  std::vector<std::vector<torch::Tensor>> versions;
  auto snapshot = [&] {
    std::vector<torch::Tensor> v;
    for (const auto& p : ref_target->parameters()) v.push_back(p.detach().clone());
    versions.push_back(v);
  };
  snapshot();
  for (int b = 1; b <= steps; ++b) {
    const int version = delayed ? std::max(0, b - 2) : b - 1;
    {
      torch::NoGradGuard g;
      auto dst = ref_view->parameters();
      for (size_t i = 0; i < dst.size(); ++i) dst[i].copy_(versions[version][i]);
    }
    const Batch& data = batches[b - 1];
    std::vector<torch::Tensor> p1, p2, z1, z2;
    auto v1 = data.inputs[0].chunk(c.microbatches, 0), v2 = data.inputs[1].chunk(c.microbatches, 0);
    for (int k = 0; k < c.microbatches; ++k) {
      torch::NoGradGuard g;  // The target runs in train mode, without gradients.
      z1.push_back(ref_view->forward(v1[k]));
      z2.push_back(ref_view->forward(v2[k]));
    }
    for (int k = 0; k < c.microbatches; ++k) {
      p1.push_back(ref_online->forward(v1[k]));
      p2.push_back(ref_online->forward(v2[k]));
    }
    // Over the whole batch: MoCo's negatives are every other sample's keys.
    torch::Tensor loss = loss_fn(torch::cat(p1), torch::cat(p2), torch::cat(z1), torch::cat(z2));
    EXPECT_NEAR(results[b - 1].loss, loss.item<double>(), 1e-9) << "step " << b;
    loss.backward();
    ref_opt.step();
    ref_opt.zero_grad();
    // The EMA, written out: target <- m_b target + (1 - m_b) online.
    const double m = 1 - (1 - base_momentum) * (std::cos(M_PI * b / steps) + 1) / 2;
    {
      torch::NoGradGuard g;
      auto src = ref_online->named_parameters();
      for (auto& p : ref_target->named_parameters()) {
        p.value().copy_(m * p.value() + (1 - m) * src[p.key()]);
      }
    }
    snapshot();
  }
  auto compare = [](torch::nn::Module& a, torch::nn::Module& b, const char* what) {
    auto pa = a.named_parameters(), pb = b.named_parameters();
    ASSERT_EQ(pa.size(), pb.size());
    for (size_t i = 0; i < pa.size(); ++i) {
      EXPECT_TRUE(torch::allclose(pa[i].value(), pb[i].value(), 1e-9, 1e-10))
          << what << " " << pa[i].key() << " max diff "
          << (pa[i].value() - pb[i].value()).abs().max().item<double>();
    }
  };
  compare(*online, *ref_online, "online");
  compare(*target, *ref_target, "target");
}

INSTANTIATE_TEST_SUITE_P(
    Schedulers, ByolEquivalenceTest,
    ::testing::Values(Case{Method::kByol, "tspipe", "tspipe_delayed", {3, 3}, 4},
                      Case{Method::kByol, "tspipe", "tspipe_delayed", {2, 1, 1, 2}, 2},
                      Case{Method::kByol, "tspipe", "tspipe_delayed", {1, 2, 1, 2}, 4},
                      Case{Method::kByol, "tspipe_1f1b", "tspipe_delayed", {3, 3}, 4},
                      Case{Method::kByol, "tspipe_1f1b", "tspipe_delayed", {2, 1, 1, 2}, 4},
                      Case{Method::kByol, "tspipe_zb", "tspipe_delayed", {3, 3}, 4},
                      // (At M = 8, two samples per micro-batch, batch norm
                      // makes every pipeline, tspipe too, drift ~1e-9 from
                      // the loop in float64; zb then equals tspipe bit for
                      // bit.)
                      Case{Method::kByol, "tspipe_zb", "tspipe_delayed", {2, 1, 1, 2}, 4},
                      Case{Method::kByol, "gpipe", "sync", {3, 3}, 4},
                      Case{Method::kByol, "gpipe", "sync", {2, 1, 1, 2}, 2},
                      Case{Method::kByol, "sequential", "sync", {4, 2}, 2},
                      Case{Method::kByol, "dp", "sync", {3, 3}, 4},
                      Case{Method::kMocoV3, "tspipe", "tspipe_delayed", {3, 3}, 4},
                      Case{Method::kMocoV3, "tspipe", "tspipe_delayed", {2, 1, 1, 2}, 2},
                      Case{Method::kMocoV3, "gpipe", "sync", {3, 3}, 4},
                      Case{Method::kMocoV3, "sequential", "sync", {1, 5}, 2}),
    [](const ::testing::TestParamInfo<Case>& info) {
      return NameOf(info.param.method) + "_" + info.param.scheduler + "_s" +
             std::to_string(info.param.balance.size()) + "_m" +
             std::to_string(info.param.microbatches);
    });

// The two policies differ (else the test above could not tell them apart),
// and schedulers refuse the policy their action order cannot give.
TEST(ByolPolicyTest, SchedulersRefusePoliciesTheyCannotHonour) {
  Byol algorithm;
  SchedulerOptions so;
  so.num_stages = 2;
  so.num_microbatches = 2;
  so.workload = algorithm.workload();
  torch::nn::Sequential online = MakeByolOnline(Net());
  torch::nn::Sequential target = MakeMomentumTarget(online);
  ExecutorOptions eo;
  eo.make_optimizer = [](std::vector<torch::Tensor> p) {
    return std::unique_ptr<torch::optim::Optimizer>(new torch::optim::SGD(p, Sgd()));
  };
  auto make = [&](const std::string& scheduler, const std::string& policy) {
    eo.update_policy = policy;
    Executor e(BuildSchedule(scheduler, so),
               Partition(MultiViewBlocksFromSequential(online), {3, 3}),
               Partition(MultiViewBlocksFromSequential(target), {3, 2}), &algorithm, eo);
    return e.update_policy();
  };
  try {
    make("gpipe", "tspipe_delayed");
    ADD_FAILURE() << "gpipe accepted the delayed policy";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("scheduler 'gpipe' cannot honour update policy "
                                         "'tspipe_delayed'"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(make("tspipe", "sync"), std::invalid_argument);
  // Without a request, each runs the policy its order gives.
  EXPECT_EQ(make("tspipe", ""), "tspipe_delayed");
  EXPECT_EQ(make("gpipe", ""), "sync");
}

}  // namespace
}  // namespace tspipe
