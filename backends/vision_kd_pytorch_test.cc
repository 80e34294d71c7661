// tspipe's training math against an implementation it did not write: KD
// from torchvision's resnet34 into its resnet18 in plain PyTorch
// (tools/make_vision_goldens.py wrote every step's loss and a summary of
// every final student parameter and buffer) against the same job under
// every scheduler. Both sides start from the same weights (the fill rule of
// models/fill_rule.h) and see the same batches, split into the same two
// micro-batches of four: PyTorch's loop runs them one after the other,
// scales each loss by 1/2 and accumulates the gradients, as a pipeline
// does, so batch norm sees the same micro-batches in the same order.
#include <gtest/gtest.h>

#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "algorithms/kd.h"
#include "backends/executor.h"
#include "core/scheduler.h"
#include "io/safetensors.h"
#include "models/fill_rule.h"
#include "models/vision_models.h"

namespace tspipe {
namespace {

constexpr char kGolden[] = "tests/golden/vision_kd_training.safetensors";
constexpr int kSteps = 5, kBatch = 8, kMicrobatches = 2;

VisionModel Filled(const std::string& name) {
  VisionModelOptions o;
  o.name = name;
  o.shape = {32, 3, 10};
  VisionModel model = MakeVisionModel(o);
  model.module->to(torch::kFloat64);
  Fill(*model.module);
  return model;
}

torch::optim::SGDOptions Sgd() {
  return torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(5e-4);
}

struct Case {
  std::string scheduler;
  std::vector<int> student_balance;  // resnet18: 10 blocks.
  std::vector<int> teacher_balance;  // resnet34: 18 blocks.
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.scheduler; }

class VisionKdPytorchTest : public ::testing::TestWithParam<Case> {};

TEST_P(VisionKdPytorchTest, MatchesPytorchStepByStep) {
  at::set_num_threads(1);
  const Case c = GetParam();
  const NamedTensors golden = ReadSafetensors(kGolden);
  VisionModel student = Filled("resnet18");
  VisionModel teacher = Filled("resnet34");

  std::vector<Batch> batches;
  for (int i = 0; i < kSteps; ++i) {
    batches.push_back(Batch{{Sines({kBatch, 3, 32, 32}, 0.1 + i)},
                            {torch::arange(kBatch, torch::kInt64).remainder(10)}});
  }
  KnowledgeDistillation algorithm{KdOptions{}};
  SchedulerOptions so;
  so.num_stages = static_cast<int>(c.student_balance.size());
  so.num_microbatches = kMicrobatches;
  so.workload = algorithm.workload();
  ExecutorOptions eo;
  eo.make_optimizer = [](std::vector<torch::Tensor> p) {
    return std::unique_ptr<torch::optim::Optimizer>(new torch::optim::SGD(p, Sgd()));
  };
  Executor executor(BuildSchedule(c.scheduler, so), Partition(student.blocks, c.student_balance),
                    Partition(teacher.blocks, c.teacher_balance), &algorithm, eo);
  // Back to back with the teacher's look-ahead, as the trainer runs.
  std::vector<Batch> first(batches.begin(), batches.end() - 1);
  std::vector<StepResult> results = executor.Run(first, &batches.back());
  results.push_back(executor.Step(batches.back(), nullptr));

  const torch::Tensor losses = golden.at("loss");
  ASSERT_EQ(losses.numel(), kSteps);
  for (int i = 0; i < kSteps; ++i) {
    const double want = losses[i].item<double>();
    EXPECT_NEAR(results[i].loss, want, 1e-9 * std::abs(want)) << "step " << i;
  }
  // Data parallel keeps one set of batch-norm statistics per replica, each
  // from its own share of the micro-batches; the pipelines see every
  // micro-batch in order, as PyTorch's loop does.
  const bool compare_buffers = c.scheduler != "dp";
  int compared = 0;
  auto expect_summary = [&](const std::string& name, const torch::Tensor& t) {
    const double sum = golden.at("sum." + name).item<double>();
    const double sumsq = golden.at("sumsq." + name).item<double>();
    EXPECT_NEAR(t.sum().item<double>(), sum, 1e-9 * std::sqrt(sumsq) * std::sqrt(t.numel()))
        << name;
    EXPECT_NEAR(t.pow(2).sum().item<double>(), sumsq, 1e-9 * sumsq) << name;
    ++compared;
  };
  for (const auto& p : student.module->named_parameters()) expect_summary(p.key(), p.value());
  if (compare_buffers) {
    for (const auto& b : student.module->named_buffers()) {
      if (b.value().is_floating_point() && !IsStepCount(b.key())) {
        expect_summary(b.key(), b.value());
      }
    }
  }
  EXPECT_EQ(compared, compare_buffers ? 62 + 40 : 62);
}

INSTANTIATE_TEST_SUITE_P(
    Schedulers, VisionKdPytorchTest,
    ::testing::Values(Case{"sequential", {5, 5}, {9, 9}}, Case{"gpipe", {5, 5}, {9, 9}},
                      Case{"tspipe", {4, 6}, {10, 8}}, Case{"tspipe_1f1b", {5, 5}, {9, 9}},
                      Case{"tspipe_zb", {6, 4}, {9, 9}}, Case{"dp", {5, 5}, {9, 9}}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.scheduler; });

}  // namespace
}  // namespace tspipe
