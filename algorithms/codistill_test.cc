// Codistillation through the engine under each placement (one device per
// model; each model pipelined by gpipe and by tspipe) against a plain loop
// of the same math written here: two ResNets in one loop, each on its own
// half of every mini-batch, each distilled from copies of the other taken
// at the exchanges, in float64, over more steps than K so that several
// exchanges happen.
#include "algorithms/codistill.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "data/image_data.h"
#include "core/update_policy.h"
#include "engine/trainer.h"
#include "models/resnet.h"

namespace tspipe {
namespace {

constexpr int kSteps = 7, kEvery = 2, kBatch = 8, kModels = 2, kSeed = 3;
constexpr double kLr = 0.05, kMomentum = 0.9, kAlpha = 0.7, kTemperature = 2.0;

ResNetOptions Shape() {
  ResNetOptions o;
  o.widths = {4, 8};
  o.blocks_per_group = {1, 1};  // Stem, 2 basic blocks, head: 4 blocks.
  return o;
}

std::string Options() {
  return "widths=4,8,blocks=1,1,models=2,exchange_every=" + std::to_string(kEvery) +
         ",alpha=" + std::to_string(kAlpha) + ",temperature=" + std::to_string(kTemperature);
}

struct Result {
  std::vector<double> losses;  // Mean over the models, per step.
};

// Copies every parameter and buffer value of `from` into `to`.
void Load(torch::nn::Module& to, const std::vector<torch::Tensor>& from) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> dst = to.parameters();
  for (const torch::Tensor& b : to.buffers()) dst.push_back(b);
  for (size_t i = 0; i < dst.size(); ++i) dst[i].copy_(from[i]);
}

std::vector<torch::Tensor> State(torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const torch::Tensor& p : m.parameters()) out.push_back(p.detach().clone());
  for (const torch::Tensor& b : m.buffers()) out.push_back(b.detach().clone());
  return out;
}

// The plain loop. `policy` says which update each teacher forward sees
// (core/update_policy.h); the copies then hold the state of the last
// exchange at or before it.
Result PlainLoop(const std::string& policy_name, int microbatches,
                 std::vector<std::vector<torch::Tensor>>* final_params) {
  std::unique_ptr<UpdatePolicy> policy = UpdatePolicyRegistry::Global().Create(policy_name);
  torch::manual_seed(kSeed);
  std::vector<torch::nn::Sequential> models;
  for (int g = 0; g < kModels; ++g) models.push_back(MakeResNet(Shape()));
  for (auto& m : models) m->to(torch::kFloat64);
  DataRequest r;
  r.batch_size = kBatch;
  r.seed = kSeed;
  std::unique_ptr<BatchSource> data = MakeImageData(r, {});
  std::vector<std::unique_ptr<torch::optim::SGD>> opts;
  for (auto& m : models) {
    opts.push_back(std::make_unique<torch::optim::SGD>(
        m->parameters(), torch::optim::SGDOptions(kLr).momentum(kMomentum)));
  }
  // exchanged[v][g]: model g's state after step v, for v = 0, K, 2K...
  std::map<int, std::vector<std::vector<torch::Tensor>>> exchanged;
  for (auto& m : models) exchanged[0].push_back(State(*m));
  torch::nn::Sequential copy = MakeResNet(Shape());
  copy->to(torch::kFloat64);
  copy->eval();
  CodistillOptions o;
  o.models = kModels;
  o.temperature = kTemperature;
  Result result;
  for (int b = 1; b <= kSteps; ++b) {
    Batch batch = data->Next();
    torch::Tensor x = batch.inputs[0].to(torch::kFloat64), y = batch.targets[0];
    const int version = policy->TeacherVersion(b, TeacherKind::kPeers) / kEvery * kEvery;
    double loss_sum = 0;
    for (int g = 0; g < kModels; ++g) {
      const int64_t share = kBatch / kModels, mb = share / microbatches;
      torch::Tensor xg = x.slice(0, g * share, (g + 1) * share);
      torch::Tensor yg = y.slice(0, g * share, (g + 1) * share);
      // Batch norm in train mode sees one micro-batch at a time, as the
      // executor runs it.
      std::vector<torch::Tensor> logits;
      for (int k = 0; k < microbatches; ++k) logits.push_back(models[g]->forward(xg.slice(0, k * mb, (k + 1) * mb)));
      std::vector<torch::Tensor> peers;
      for (int j = 0; j < kModels; ++j) {
        if (j == g) continue;
        Load(*copy, exchanged.at(version)[j]);
        torch::NoGradGuard no_grad;
        peers.push_back(copy->forward(xg));
      }
      torch::Tensor s = torch::cat(logits);
      // KL(peer || model) of the softened predictions, T^2-scaled.
      torch::Tensor loss = torch::nn::functional::cross_entropy(s, yg);
      for (const torch::Tensor& p : peers) {
        torch::Tensor q = torch::softmax(p / kTemperature, 1);
        torch::Tensor kl = (q * (torch::log(q) - torch::log_softmax(s / kTemperature, 1))).sum(1).mean();
        loss = loss + kAlpha / (kModels - 1) * kl * kTemperature * kTemperature;
      }
      opts[g]->zero_grad();
      loss.backward();
      opts[g]->step();
      loss_sum += loss.item<double>();
    }
    result.losses.push_back(loss_sum / kModels);
    if (b % kEvery == 0) {
      for (auto& m : models) exchanged[b].push_back(State(*m));
    }
  }
  for (auto& m : models) {
    std::vector<torch::Tensor> p;
    for (const torch::Tensor& t : m->parameters()) p.push_back(t.detach().clone());
    final_params->push_back(p);
  }
  return result;
}

struct Placement {
  std::string scheduler;
  int stages;
  std::vector<int> balance;
  int microbatches;
};

class CodistillEquivalenceTest : public ::testing::TestWithParam<Placement> {};

TEST_P(CodistillEquivalenceTest, MatchesThePlainLoop) {
  at::set_num_threads(1);
  const Placement p = GetParam();
  TrainConfig c;
  c.algorithm = "codistill";
  c.algorithm_options = Options();
  c.scheduler = p.scheduler;
  c.stages = p.stages;
  c.balance = p.balance;
  c.microbatches = p.microbatches;
  c.batch_size = kBatch;
  c.learning_rate = kLr;
  c.momentum = kMomentum;
  c.seed = kSeed;
  c.dtype = "float64";
  Trainer trainer(c);
  EXPECT_EQ(trainer.num_devices(), kModels * (p.scheduler == "sequential" ? 1 : p.stages));
  std::vector<double> losses;
  for (int i = 0; i < kSteps; ++i) losses.push_back(trainer.Train(1));
  const std::string policy = p.scheduler == "tspipe" ? "tspipe_delayed" : "sync";
  std::vector<std::vector<torch::Tensor>> want;
  const Result truth = PlainLoop(policy, p.microbatches, &want);
  for (int i = 0; i < kSteps; ++i) {
    EXPECT_NEAR(losses[i], truth.losses[i], 1e-10) << "step " << i + 1;
  }
  for (int g = 0; g < kModels; ++g) {
    // Model g as the trainer saves it.
    const std::string path = ::testing::TempDir() + "/codistill_model" + std::to_string(g) + ".pt";
    trainer.SaveModel(path, g);
    torch::nn::Sequential saved = MakeResNet(Shape());
    saved->to(torch::kFloat64);
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    saved->load(archive);
    std::vector<torch::Tensor> got = saved->parameters();
    ASSERT_EQ(got.size(), want[g].size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_LT((got[i] - want[g][i]).abs().max().item<double>(), 1e-10) << "model " << g;
    }
  }
  // The exchanges cost bytes; the plain loop's other policy would differ
  // (so the test can tell the policies apart).
  EXPECT_GT(trainer.bytes_sent_per_step_per_device(), 0);
  std::vector<std::vector<torch::Tensor>> other;
  const Result wrong = PlainLoop(policy == "sync" ? "tspipe_delayed" : "sync", p.microbatches, &other);
  double far = 0;
  for (int i = 0; i < kSteps; ++i) far = std::max(far, std::abs(wrong.losses[i] - truth.losses[i]));
  EXPECT_GT(far, 1e-6);
}

INSTANTIATE_TEST_SUITE_P(
    Placements, CodistillEquivalenceTest,
    ::testing::Values(Placement{"sequential", 1, {}, 2},  // One device per model.
                      Placement{"sequential", 2, {2, 2}, 2},
                      Placement{"gpipe", 2, {1, 3}, 2},
                      Placement{"tspipe", 2, {3, 1}, 2},
                      Placement{"tspipe", 2, {2, 2}, 1}),
    [](const ::testing::TestParamInfo<Placement>& info) {
      return info.param.scheduler + "_s" + std::to_string(info.param.stages) + "_m" +
             std::to_string(info.param.microbatches) + "_" + std::to_string(info.index);
    });

TEST(CodistillTest, DataParallelInsideAModelIsRefused) {
  TrainConfig c;
  c.algorithm = "codistill";
  c.algorithm_options = Options();
  c.scheduler = "dp";
  c.batch_size = kBatch;
  c.microbatches = 2;
  try {
    Trainer t(c);
    FAIL() << "dp accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("each model runs on its own pipeline"), std::string::npos)
        << e.what();
  }
}

TEST(CodistillTest, BurnInTrainsWithoutTheDistillationTerm) {
  CodistillOptions o;
  torch::Tensor s = torch::randn({4, 10}), p = torch::randn({4, 10});
  torch::Tensor y = torch::randint(0, 10, {4});
  EXPECT_NEAR(CodistillLoss(s, {p}, y, o, 0.0).item<double>(),
              torch::nn::functional::cross_entropy(s, y).item<double>(), 1e-6);
  EXPECT_GT(CodistillLoss(s, {p}, y, o, 1.0).item<double>(),
            CodistillLoss(s, {p}, y, o, 0.0).item<double>());
}

}  // namespace
}  // namespace tspipe
