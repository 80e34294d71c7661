#include <gtest/gtest.h>

#include "core/microbatch.h"
#include "core/partition.h"

namespace tspipe {
namespace {

std::string ErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

BlockList Linears(int n) {
  torch::nn::Sequential seq;
  for (int i = 0; i < n; ++i) seq->push_back(torch::nn::Linear(4, 4));
  return BlocksFromSequential(seq);
}

TEST(PartitionTest, BalanceMustSumToBlockCount) {
  EXPECT_EQ(ErrorOf([] { Partition(Linears(5), {2, 2}); }),
            "balance [2,2] sums to 4 but the model has 5 blocks");
  EXPECT_EQ(ErrorOf([] { Partition(Linears(3), {1, 0, 2}); }),
            "balance [1,0,2] gives stage 1 0 blocks; every stage needs at least one");
}

TEST(PartitionTest, MoreStagesThanBlocksIsAnError) {
  EXPECT_EQ(ErrorOf([] { Partition(Linears(2), {1, 1, 1}); }),
            "balance [1,1,1] asks for 3 stages but the model has only 2 blocks");
  EXPECT_EQ(ErrorOf([] { EvenBalance(3, 4); }),
            "4 stages requested but the model has only 3 blocks");
}

TEST(PartitionTest, StagesComposeToTheWholeModel) {
  torch::manual_seed(0);
  BlockList blocks = Linears(5);
  auto stages = Partition(blocks, EvenBalance(5, 3));
  ASSERT_EQ(stages.size(), 3u);
  EXPECT_EQ(stages[0]->num_blocks(), 2);
  EXPECT_EQ(stages[2]->first_block(), 4);
  torch::Tensor x = torch::randn({3, 4});
  Activation a{x};
  for (auto& s : stages) a = s->Forward(a);
  torch::Tensor y = x;
  for (auto& b : blocks) y = b->Forward({y})[0];
  EXPECT_TRUE(torch::equal(a[0], y));
  size_t params = 0;
  for (auto& s : stages) params += s->parameters().size();
  EXPECT_EQ(params, 10u);
}

TEST(MicrobatchTest, SplitAndGatherRoundTrip) {
  Batch b{{torch::arange(12).reshape({6, 2}), torch::ones({6, 1, 3})}, {torch::arange(6)}};
  auto parts = SplitBatch(b, 3);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[1].inputs[0].size(0), 2);
  EXPECT_TRUE(torch::equal(parts[2].targets[0], torch::tensor({4, 5})));
  Batch back = GatherBatch(parts);
  EXPECT_TRUE(torch::equal(back.inputs[0], b.inputs[0]));
  EXPECT_TRUE(torch::equal(back.inputs[1], b.inputs[1]));
  EXPECT_TRUE(torch::equal(back.targets[0], b.targets[0]));
}

TEST(MicrobatchTest, MicrobatchesMustDivideTheBatch) {
  Batch b{{torch::zeros({10, 2})}, {torch::zeros({10})}};
  EXPECT_EQ(ErrorOf([&] { SplitBatch(b, 4); }),
            "4 micro-batches do not divide the batch of 10 samples");
  EXPECT_EQ(ErrorOf([&] { SplitBatch(b, 0); }), "micro-batch count must be at least 1, got 0");
  Batch bad{{torch::zeros({10, 2})}, {torch::zeros({8})}};
  EXPECT_EQ(ErrorOf([&] { SplitBatch(bad, 2); }),
            "batch tensors disagree on the sample count: 10 vs 8");
}

}  // namespace
}  // namespace tspipe
