// A new teacher-student algorithm, defined entirely in this file: its own
// tiny models (a token tagger whose blocks pass an attention-style mask
// across stages), its own data (sequences of unequal lengths) and its own
// loss (means over real tokens, plus a per-sequence term). It registers
// itself and trains through the engine under every scheduler its workload
// allows, each equal to a plain loop written here, with no edit to any other
// file but a BUILD rule: the proof that an algorithm is one module.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/catalog.h"
#include "engine/recipe.h"
#include "engine/trainer.h"

namespace tspipe {
namespace {

namespace F = torch::nn::functional;

constexpr int kLength = 6;    // Positions per sequence.
constexpr int kFeatures = 5;  // Input features per position.
constexpr int kClasses = 4;
constexpr int kIgnore = -100;  // Label of a padded position.

// Sequence lengths by position in the mini-batch of 8: halves of the batch
// hold different numbers of real tokens (9 + 0 and 7 + 1: what two
// data-parallel replicas see), and micro-batch 1 of 4 has none at all.
int LengthOf(int64_t sample) {
  static const int kLengths[8] = {3, 6, 0, 0, 2, 5, 1, 0};
  return kLengths[sample % 8];
}

// h -> tanh(W h + pooled(h)) at every position (no tanh on the logits),
// pooled(h) the mean of h over the sequence's real positions: the output
// depends on the mask, which travels with the hidden states to the next
// stage.
class MaskedMixImpl : public BlockImpl {
 public:
  MaskedMixImpl(int in, int out, bool logits)
      : in_(in), out_(out), logits_(logits), fc_(register_module("fc", torch::nn::Linear(in, out))) {}
  Activation Forward(const Activation& in) override {
    const torch::Tensor& h = in[0];                          // [B, T, in]
    torch::Tensor mask = in[1].unsqueeze(-1).to(h.dtype());  // [B, T, 1]
    torch::Tensor pooled = (h * mask).sum(1, true) / mask.sum(1, true).clamp_min(1);
    torch::Tensor y = fc_(h + pooled);
    return {logits_ ? y : torch::tanh(y), in[1]};
  }
  // Data-parallel replicas: same dtype, device and values.
  std::shared_ptr<BlockImpl> Replicate() const override {
    auto r = std::make_shared<MaskedMixImpl>(in_, out_, logits_);
    r->to(fc_->weight.device(), fc_->weight.scalar_type());
    torch::NoGradGuard no_grad;
    r->fc_->weight.copy_(fc_->weight);
    r->fc_->bias.copy_(fc_->bias);
    return r;
  }

 private:
  int in_, out_;
  bool logits_;
  torch::nn::Linear fc_;
};

std::shared_ptr<torch::nn::Module> g_last_student;  // For the test to inspect.

struct Toy {
  std::shared_ptr<torch::nn::Module> net = std::make_shared<torch::nn::Module>();
  BlockList blocks;
};

Toy MakeTagger(const std::vector<int>& widths) {
  Toy t;
  int in = kFeatures;
  for (size_t i = 0; i < widths.size(); ++i) {
    const int w = widths[i];
    auto block = std::make_shared<MaskedMixImpl>(in, w, i + 1 == widths.size());
    t.net->register_module("block" + std::to_string(t.blocks.size()), block);
    t.blocks.push_back(block);
    in = w;
  }
  t.net->to(torch::kFloat64);
  return t;
}

// Term 0: cross-entropy + 0.5 * KL(teacher || student) per real token, its
// mean over the real tokens. Term 1: 0.3 * the squared distance between the
// student's and teacher's mean logits, per sequence, its mean over the
// sequences.
class ToyAlgorithm : public Algorithm {
 public:
  explicit ToyAlgorithm(bool token_units) : token_units_(token_units) {}
  std::string name() const override { return "toy_tokens"; }
  Workload workload() const override {
    Workload w;
    w.teacher = TeacherKind::kFrozen;
    return w;
  }

  std::vector<LossTerm> LossTerms(const LossInputs& in) const override {
    const torch::Tensor& s = (*in.student)[0];                 // [B, T, C]
    const torch::Tensor t = (*in.teacher)[0].detach();
    const torch::Tensor& labels = (*in.targets)[0];            // [B, T]
    torch::Tensor real = labels.ne(kIgnore).to(s.dtype());
    torch::Tensor ce = F::cross_entropy(s.reshape({-1, kClasses}),
                                        labels.clamp_min(0).reshape({-1}),
                                        F::CrossEntropyFuncOptions().reduction(torch::kNone))
                           .reshape(labels.sizes());
    torch::Tensor kl = (F::softmax(t, -1) * (F::log_softmax(t, -1) - F::log_softmax(s, -1))).sum(-1);
    const double tokens = real.sum().item<double>();
    torch::Tensor token_mean = ((ce + 0.5 * kl) * real).sum() / tokens;
    torch::Tensor per_sequence =
        0.3 * (MeanLogits(s, real) - MeanLogits(t, real)).pow(2).sum(-1).mean();
    return {{token_mean, token_units_ ? tokens : static_cast<double>(in.samples)},
            {per_sequence, static_cast<double>(in.samples)}};
  }

  std::vector<double> LossUnits(const Batch& mb, int stage) const override {
    const double tokens = mb.targets[0].ne(kIgnore).sum().item<double>();
    return {token_units_ ? tokens : static_cast<double>(mb.size()),
            static_cast<double>(mb.size())};
  }

  static torch::Tensor MeanLogits(const torch::Tensor& logits, const torch::Tensor& real) {
    return (logits * real.unsqueeze(-1)).sum(1) / real.sum(1, true).clamp_min(1);
  }

 private:
  bool token_units_;
};

class ToySource : public BatchSource {
 public:
  ToySource(const DataRequest& r) : request_(r), generator_(at::detail::createCPUGenerator(r.seed)) {}
  Batch Next() override {
    const int64_t b = request_.batch_size;
    auto opts = torch::TensorOptions().dtype(torch::kFloat64);
    torch::Tensor x = torch::randn({b, kLength, kFeatures}, generator_, opts);
    torch::Tensor labels = torch::randint(0, kClasses, {b, kLength}, generator_,
                                          torch::TensorOptions().dtype(torch::kInt64));
    torch::Tensor mask = torch::zeros({b, kLength}, torch::kInt64);
    for (int64_t i = 0; i < b; ++i) mask[i].slice(0, 0, LengthOf(i)).fill_(1);
    labels.masked_fill_(mask.eq(0), kIgnore);
    ++next_;
    return Batch{{x, mask}, {labels}};
  }

 private:
  DataRequest request_;
  at::Generator generator_;
  int64_t next_ = 0;
};

class ToyRecipe : public Recipe {
 public:
  std::vector<OptionSpec> Options() const override {
    return {BoolOption("token_units", true,
                       "declare real tokens as the token term's units (false: samples, wrong "
                       "for unequal lengths; the test shows it)")};
  }
  void Configure(const OptionValues& v) override { token_units_ = v.GetBool("token_units"); }
  std::unique_ptr<Algorithm> MakeAlgorithm() const override {
    return std::make_unique<ToyAlgorithm>(token_units_);
  }
  ModelSet BuildModels() const override {
    Toy student = MakeTagger({8, 8, 8, kClasses});
    Toy teacher = MakeTagger({6, 6, 6, kClasses});
    ModelSet m;
    m.student = student.net;
    m.student_blocks = student.blocks;
    m.teacher = teacher.net;
    m.teacher_blocks = teacher.blocks;
    g_last_student = m.student;
    return m;
  }
  std::vector<std::string> DataSets() const override { return {}; }
  std::unique_ptr<BatchSource> MakeData(const DataRequest& r) const override {
    return std::make_unique<ToySource>(r);
  }
  Activation ExampleInput(int64_t samples) const override {
    return {torch::randn({samples, kLength, kFeatures}, torch::kFloat64),
            torch::ones({samples, kLength}, torch::kInt64)};
  }

 private:
  bool token_units_ = true;
};

TSPIPE_REGISTER_RECIPE("toy_tokens", "a token tagger distilled from a frozen tagger (test only)",
                       ToyRecipe);

constexpr int kSteps = 3;
constexpr double kLr = 0.1, kMomentum = 0.9;

TrainConfig ToyConfig(const std::string& scheduler, const std::string& options = "",
                      int stages = 2) {
  TrainConfig c;
  c.algorithm = "toy_tokens";
  c.algorithm_options = options;
  c.scheduler = scheduler;
  c.stages = stages;
  c.microbatches = 4;
  c.batch_size = 8;
  c.balance = stages == 2 ? std::vector<int>{3, 1} : std::vector<int>{1, 1, 1, 1};
  c.teacher_balance = stages == 2 ? std::vector<int>{1, 3} : std::vector<int>{1, 1, 1, 1};
  c.learning_rate = kLr;
  c.momentum = kMomentum;
  c.seed = 5;
  return c;
}

struct RunResult {
  std::vector<torch::Tensor> params;
  std::vector<double> losses;
};

RunResult TrainWithEngine(const TrainConfig& config) {
  Trainer trainer(config);
  std::shared_ptr<torch::nn::Module> student = g_last_student;
  RunResult run;
  for (int i = 0; i < kSteps; ++i) run.losses.push_back(trainer.Train(1));
  for (const torch::Tensor& p : student->parameters()) run.params.push_back(p.detach().clone());
  return run;
}

// The same math written out here, whole mini-batch at once: flatten the
// real tokens, average over them; average the per-sequence term over the
// sequences; SGD with momentum.
RunResult PlainLoop() {
  ToyRecipe recipe;
  torch::manual_seed(5);
  ModelSet m = recipe.BuildModels();
  DataRequest r;
  r.batch_size = 8;
  r.seed = 5;
  ToySource source(r);
  torch::optim::SGD opt(m.student->parameters(), torch::optim::SGDOptions(kLr).momentum(kMomentum));
  RunResult run;
  for (int step = 0; step < kSteps; ++step) {
    Batch b = source.Next();
    Activation s = b.inputs, t = b.inputs;
    for (const Block& block : m.student_blocks) s = block->Forward(s);
    {
      torch::NoGradGuard no_grad;
      for (const Block& block : m.teacher_blocks) t = block->Forward(t);
    }
    torch::Tensor keep = b.targets[0].reshape({-1}).ne(kIgnore).nonzero().squeeze(1);
    torch::Tensor sl = s[0].reshape({-1, kClasses}).index_select(0, keep);
    torch::Tensor tl = t[0].reshape({-1, kClasses}).index_select(0, keep);
    torch::Tensor labels = b.targets[0].reshape({-1}).index_select(0, keep);
    torch::Tensor ce = F::cross_entropy(sl, labels);
    torch::Tensor kl = F::kl_div(F::log_softmax(sl, -1), F::softmax(tl, -1),
                                 F::KLDivFuncOptions().reduction(torch::kBatchMean));
    torch::Tensor real = b.inputs[1].to(torch::kFloat64);
    torch::Tensor loss = ce + 0.5 * kl +
                         0.3 * (ToyAlgorithm::MeanLogits(s[0], real) -
                                ToyAlgorithm::MeanLogits(t[0], real))
                                   .pow(2)
                                   .sum(-1)
                                   .mean();
    opt.zero_grad();
    loss.backward();
    opt.step();
    run.losses.push_back(loss.item<double>());
  }
  for (const torch::Tensor& p : m.student->parameters()) run.params.push_back(p.detach().clone());
  return run;
}

double MaxDiff(const RunResult& a, const RunResult& b) {
  double d = 0;
  for (size_t i = 0; i < a.params.size(); ++i) {
    d = std::max(d, (a.params[i] - b.params[i]).abs().max().item<double>());
  }
  return d;
}

TEST(ToyRecipeTest, HalvesOfTheBatchHoldDifferentTokenCounts) {
  int first = 0, second = 0;
  for (int i = 0; i < 8; ++i) (i < 4 ? first : second) += LengthOf(i);
  EXPECT_NE(first, second);  // So dp's replicas really see unequal counts.
  EXPECT_EQ(LengthOf(2) + LengthOf(3), 0);  // And one micro-batch has none.
}

TEST(ToyRecipeTest, EverySchedulerItsWorkloadAllowsEqualsThePlainLoop) {
  const RunResult truth = PlainLoop();
  std::vector<std::string> ran, refused;
  for (const std::string& scheduler : SchedulerNames()) {
    RunResult run;
    try {
      run = TrainWithEngine(ToyConfig(scheduler));
    } catch (const std::invalid_argument& e) {
      refused.push_back(scheduler + ": " + e.what());
      continue;
    }
    ran.push_back(scheduler);
    for (int i = 0; i < kSteps; ++i) {
      EXPECT_NEAR(run.losses[i], truth.losses[i], 1e-12) << scheduler << " step " << i + 1;
    }
    EXPECT_LT(MaxDiff(run, truth), 1e-12) << scheduler;
  }
  // The end-to-end schedulers all run it; pipebd (blockwise only) refuses.
  for (const char* name : {"dp", "gpipe", "sequential", "tspipe"}) {
    EXPECT_NE(std::find(ran.begin(), ran.end(), name), ran.end()) << name << " did not run";
  }
  bool pipebd_refused = false;
  for (const std::string& why : refused) pipebd_refused |= why.rfind("pipebd: ", 0) == 0;
  EXPECT_TRUE(pipebd_refused);
}

TEST(ToyRecipeTest, AReplicaWithoutTokensStillTrainsTheMiniBatchMean) {
  // Four dp replicas, one micro-batch each: replica 1's samples hold no
  // real token, so its token term has no units and only its per-sequence
  // term counts.
  const RunResult truth = PlainLoop();
  const RunResult run = TrainWithEngine(ToyConfig("dp", "", 4));
  for (int i = 0; i < kSteps; ++i) EXPECT_NEAR(run.losses[i], truth.losses[i], 1e-12);
  EXPECT_LT(MaxDiff(run, truth), 1e-12);
}

TEST(ToyRecipeTest, MisdeclaredUnitsBreakDataParallelButNotOneLoss) {
  // Declaring samples as the token term's units is harmless when one loss
  // sees the whole batch (sequential), and wrong when replicas hold unequal
  // token counts: the normalisation is what keeps dp exact.
  const RunResult truth = PlainLoop();
  EXPECT_LT(MaxDiff(TrainWithEngine(ToyConfig("sequential", "token_units=false")), truth), 1e-12);
  EXPECT_GT(MaxDiff(TrainWithEngine(ToyConfig("dp", "token_units=false")), truth), 1e-6);
}

TEST(ToyRecipeTest, BadOptionsAreRefusedNamingThem) {
  try {
    Trainer t(ToyConfig("sequential", "token_units=sometimes"));
    FAIL() << "accepted a bad value";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "toy_tokens option token_units=sometimes: not true or false");
  }
  EXPECT_NE(RecipeOptionsHelp("toy_tokens").find("token_units (true/false, default true)"),
            std::string::npos);
}

}  // namespace
}  // namespace tspipe
