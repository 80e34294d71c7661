#include "models/bert.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include "core/partition.h"
#include "io/safetensors.h"

namespace tspipe {
namespace {

constexpr char kModelDir[] = "external/minilm/model";

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name;
}

Activation RunBlocks(const BlockList& blocks, Activation x) {
  for (const Block& b : blocks) x = b->Forward(x);
  return x;
}

void SetEval(const BlockList& blocks) {
  for (const Block& b : blocks) b->eval();
}

template <typename F>
std::string ErrorOf(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// all-MiniLM-L6-v2's last hidden states for a padded batch against
// transformers' BertModel on the same safetensors weights
// (tools/make_bert_goldens.py), at every position, padding included.
TEST(BertTest, PretrainedTeacherMatchesTransformers) {
  PretrainedBert teacher = ReadPretrainedBert(kModelDir);
  EXPECT_EQ(teacher.config.layers, 6);
  EXPECT_EQ(teacher.config.hidden, 384);
  EXPECT_EQ(teacher.config.heads, 12);
  BlockList blocks = MakeBert(teacher.config, /*with_head=*/false);
  EXPECT_EQ(LoadBert(teacher.tensors, teacher.config, blocks, teacher.weights_path), 5 + 6 * 16);
  SetEval(blocks);
  // In float64, so that the comparison measures the model, not which
  // float32 kernels this CPU picks (their rounding reached 1.05e-4 here).
  for (const Block& b : blocks) b->to(torch::kFloat64);
  NamedTensors golden = ReadSafetensors("tests/golden/minilm_hidden.safetensors");
  const torch::Tensor mask = golden.at("attention_mask");
  ASSERT_LT(mask.sum().item<int64_t>(), mask.numel()) << "the golden batch has no padding";
  torch::NoGradGuard g;
  Activation out = RunBlocks(blocks, {golden.at("input_ids"), mask});
  const torch::Tensor want = golden.at("last_hidden_state").to(torch::kFloat64);
  ASSERT_EQ(out[0].sizes(), want.sizes());
  const double diff = (out[0] - want).abs().max().item<double>();
  EXPECT_LT(diff, 1e-4);
  std::cout << "largest difference from transformers: " << diff << "\n";
  // Padding must matter: without the mask the real positions change.
  Activation unmasked = RunBlocks(blocks, {golden.at("input_ids"), torch::ones_like(mask)});
  const torch::Tensor real = mask.to(torch::kBool).unsqueeze(-1).expand_as(want);
  EXPECT_GT((unmasked[0] - want).abs().masked_select(real).max().item<double>(), 1e-3);
}

// DistilBERT's student: embeddings and every other teacher layer; the head
// decoder equals the word embeddings (BERT ties them).
TEST(BertTest, StudentTakesTheMappedLayers) {
  PretrainedBert teacher = ReadPretrainedBert(kModelDir);
  BertConfig half = teacher.config;
  half.layers = 3;
  BlockList student = MakeBert(half, /*with_head=*/true);
  LoadBert(teacher.tensors, half, student, teacher.weights_path, {0, 2, 4});
  for (int i = 0; i < 3; ++i) {
    const std::string name =
        "encoder.layer." + std::to_string(2 * i) + ".attention.self.query.weight";
    EXPECT_TRUE(torch::equal(student[1 + i]->named_parameters()["query.weight"],
                             teacher.tensors.at(name)))
        << i;
  }
  EXPECT_TRUE(torch::equal(BertMlmHeadWeight(student.back()),
                           teacher.tensors.at("embeddings.word_embeddings.weight")));
  EXPECT_NE(ErrorOf([&] { LoadBert(teacher.tensors, half, student, "t", {0, 2}); }), "");
}

// A model saved under Hugging Face's names (BertForMaskedLM's, head
// included) loads into a fresh one that then computes the same.
TEST(BertTest, SavedModelLoadsBack) {
  BertConfig c;
  c.vocab_size = 50;
  c.hidden = 8;
  c.layers = 2;
  c.heads = 2;
  c.intermediate = 16;
  c.max_positions = 10;
  BlockList a = MakeBert(c, true);
  {
    // A head that differs from a fresh one, its decoder untied from the
    // word embeddings (as training leaves it): the file must keep both.
    torch::NoGradGuard g;
    for (auto& p : a.back()->named_parameters()) p.value().add_(0.5);
  }
  const std::string path = TempPath("bert.safetensors");
  WriteSafetensors(path, BertTensors(a));
  NamedTensors back = ReadSafetensors(path);
  EXPECT_EQ(back.count("cls.predictions.bias"), 1u);
  EXPECT_EQ(back.count("cls.predictions.transform.LayerNorm.weight"), 1u);
  EXPECT_EQ(back.count("encoder.layer.1.output.dense.weight"), 1u);
  BlockList b = MakeBert(c, true);
  LoadBert(back, c, b, path);
  SetEval(a);
  SetEval(b);
  torch::Tensor ids = torch::randint(0, 50, {3, 7}, torch::kInt64);
  torch::Tensor mask = torch::ones({3, 7}, torch::kInt64);
  mask.index_put_({1, torch::indexing::Slice(4, torch::indexing::None)}, 0);
  torch::NoGradGuard g;
  Activation ya = RunBlocks(a, {ids, mask}), yb = RunBlocks(b, {ids, mask});
  EXPECT_TRUE(torch::allclose(ya[0], yb[0], 0, 0)) << "logits";
  EXPECT_TRUE(torch::allclose(ya[1], yb[1], 0, 0)) << "hidden";
  // Without the decoder (BERT's own checkpoints) it is tied to the word
  // embeddings again.
  back.erase("cls.predictions.decoder.weight");
  BlockList tied = MakeBert(c, true);
  LoadBert(back, c, tied, path);
  EXPECT_TRUE(torch::equal(BertMlmHeadWeight(tied.back()), BertWordEmbeddings(tied[0])));
  EXPECT_FALSE(torch::equal(BertMlmHeadWeight(tied.back()), BertMlmHeadWeight(a.back())));
}

TEST(BertTest, BadModelsAndInputsNameTheProblem) {
  const std::string missing = ErrorOf([] { ReadPretrainedBert("/nonexistent/model"); });
  EXPECT_NE(missing.find("/nonexistent/model/config.json is missing"), std::string::npos)
      << missing;

  PretrainedBert teacher = ReadPretrainedBert(kModelDir);
  NamedTensors wrong = teacher.tensors;
  wrong["encoder.layer.3.intermediate.dense.weight"] = torch::zeros({1536, 385});
  BlockList blocks = MakeBert(teacher.config, false);
  EXPECT_EQ(ErrorOf([&] { LoadBert(wrong, teacher.config, blocks, "m.safetensors"); }),
            "m.safetensors: tensor 'encoder.layer.3.intermediate.dense.weight' has shape "
            "[1536, 385], expected [1536, 384]");
  wrong = teacher.tensors;
  wrong["embeddings.LayerNorm.bias"] = torch::zeros({384}, torch::kFloat64);
  EXPECT_NE(ErrorOf([&] { LoadBert(wrong, teacher.config, blocks, "m.safetensors"); })
                .find("has dtype Double, expected Float"),
            std::string::npos);
  wrong = teacher.tensors;
  wrong.erase("encoder.layer.5.output.LayerNorm.weight");
  EXPECT_EQ(ErrorOf([&] { LoadBert(wrong, teacher.config, blocks, "m.safetensors"); }),
            "m.safetensors has no tensor 'encoder.layer.5.output.LayerNorm.weight'");

  torch::Tensor ids = torch::full({1, 513}, 1000, torch::kInt64);
  const std::string too_long =
      ErrorOf([&] { RunBlocks(blocks, {ids, torch::ones_like(ids)}); });
  EXPECT_NE(too_long.find("a sequence of 513 tokens is longer than the model's 512 positions"),
            std::string::npos)
      << too_long;
}

}  // namespace
}  // namespace tspipe
