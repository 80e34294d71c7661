// KD with a frozen teacher has no staleness, so TSPipe (teacher forwards one
// batch ahead, no barrier between iterations), GPipe, data parallel and
// sequential must all equal plain sequential KD, written here with torch::nn::Sequential only.
#include <gtest/gtest.h>

#include "algorithms/kd.h"
#include "backends/executor.h"
#include "core/scheduler.h"
#include "models/resnet.h"

namespace tspipe {
namespace {

ResNetOptions Student() {
  ResNetOptions o;
  o.widths = {8, 16};
  o.blocks_per_group = {1, 2};  // 2 + 3 = 5 blocks.
  return o;
}

ResNetOptions Teacher() {
  ResNetOptions o;
  o.widths = {12, 24, 32};
  o.blocks_per_group = {2, 2, 2};  // 2 + 6 = 8 blocks.
  return o;
}

torch::optim::SGDOptions Sgd() { return torch::optim::SGDOptions(0.05).momentum(0.9); }

struct Case {
  std::string scheduler;
  std::vector<int> student_balance;
  std::vector<int> teacher_balance;
  int microbatches;
};

class KdEquivalenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(KdEquivalenceTest, MatchesPlainSequentialKd) {
  at::set_num_threads(1);
  const Case c = GetParam();
  const int stages = static_cast<int>(c.student_balance.size());
  KdOptions kd;
  torch::manual_seed(11);
  // Float64, so that a 1e-9 tolerance separates bugs from rounding (see
  // local_executor_test.cc).
  torch::nn::Sequential teacher = MakeResNet(Teacher());
  torch::nn::Sequential ref_teacher = MakeResNet(Teacher());
  teacher->to(torch::kFloat64);
  ref_teacher->to(torch::kFloat64);
  CopyState(*teacher, *ref_teacher);
  // A "pre-trained" teacher: perturb its batch-norm statistics so that eval
  // mode differs from train mode (a teacher left in train mode would fail).
  {
    torch::NoGradGuard g;
    for (auto& b : teacher->buffers()) {
      if (b.is_floating_point()) b.add_(0.1);
    }
    CopyState(*teacher, *ref_teacher);
  }
  torch::manual_seed(12);
  torch::nn::Sequential student = MakeResNet(Student());
  torch::nn::Sequential ref_student = MakeResNet(Student());
  student->to(torch::kFloat64);
  ref_student->to(torch::kFloat64);
  CopyState(*student, *ref_student);
  torch::optim::SGD ref_opt(ref_student->parameters(), Sgd());
  ref_teacher->eval();

  const int steps = 4, batch = 8;
  std::vector<Batch> batches;
  torch::manual_seed(13);
  for (int i = 0; i < steps + 1; ++i) {
    batches.push_back(Batch{{torch::randn({batch, 1, 28, 28}, torch::kFloat64)},
                            {torch::randint(0, 10, {batch})}});
  }

  KnowledgeDistillation algorithm(kd);
  SchedulerOptions so;
  so.num_stages = stages;
  so.num_microbatches = c.microbatches;
  so.workload = algorithm.workload();
  ExecutorOptions eo;
  eo.make_optimizer = [](std::vector<torch::Tensor> p) {
    return std::unique_ptr<torch::optim::Optimizer>(new torch::optim::SGD(p, Sgd()));
  };
  Executor executor(BuildSchedule(c.scheduler, so),
                    Partition(BlocksFromSequential(student), c.student_balance),
                    Partition(BlocksFromSequential(teacher), c.teacher_balance), &algorithm, eo);
  // Two calls: 3 iterations back to back with look-ahead, then 1 more.
  std::vector<StepResult> results =
      executor.Run({batches[0], batches[1], batches[2]}, &batches[3]);
  results.push_back(executor.Step(batches[3], nullptr));

  for (int i = 0; i < steps; ++i) {
    const Batch& b = batches[i];
    std::vector<torch::Tensor> s_logits, t_logits;
    for (const auto& x : b.inputs[0].chunk(c.microbatches, 0)) {
      torch::NoGradGuard g;
      t_logits.push_back(ref_teacher->forward(x));
    }
    for (const auto& x : b.inputs[0].chunk(c.microbatches, 0)) {
      s_logits.push_back(ref_student->forward(x));
    }
    torch::Tensor loss = KdLoss(torch::cat(s_logits), torch::cat(t_logits), b.targets[0], kd);
    EXPECT_NEAR(results[i].loss, loss.item<double>(), 1e-9) << "step " << i;
    loss.backward();
    ref_opt.step();
    ref_opt.zero_grad();
  }
  auto pa = student->named_parameters(), pb = ref_student->named_parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(torch::allclose(pa[i].value(), pb[i].value(), 1e-9, 1e-10))
        << pa[i].key() << " max diff "
        << (pa[i].value() - pb[i].value()).abs().max().item<double>();
  }
  // The teacher is frozen: unchanged, statistics included.
  auto ta = teacher->named_buffers(), tb = ref_teacher->named_buffers();
  for (size_t i = 0; i < ta.size(); ++i) {
    EXPECT_TRUE(torch::equal(ta[i].value(), tb[i].value())) << ta[i].key();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Schedulers, KdEquivalenceTest,
    ::testing::Values(Case{"tspipe", {3, 2}, {5, 3}, 4}, Case{"tspipe", {2, 1, 1, 1}, {1, 3, 2, 2}, 2},
                      Case{"tspipe", {2, 1, 1, 1}, {2, 2, 2, 2}, 4}, Case{"gpipe", {3, 2}, {4, 4}, 4},
                      Case{"gpipe", {1, 2, 1, 1}, {2, 2, 2, 2}, 2},
                      // 1F1B memory: per-micro-batch losses, M > N.
                      Case{"tspipe_1f1b", {3, 2}, {5, 3}, 4},
                      Case{"tspipe_1f1b", {2, 1, 1, 1}, {1, 3, 2, 2}, 4},
                      // Zero bubble: the backward split into I and W, each W
                      // deferred past later I's in both (unit-cost plans).
                      Case{"tspipe_zb", {3, 2}, {5, 3}, 4},
                      Case{"tspipe_zb", {2, 1, 1, 1}, {1, 3, 2, 2}, 8},
                      Case{"sequential", {3, 2}, {6, 2}, 4},
                      // Data parallel: 2 and 4 replicas, and 3 replicas with
                      // unequal shares (2, 1, 1 micro-batches).
                      Case{"dp", {3, 2}, {4, 4}, 4}, Case{"dp", {2, 1, 1, 1}, {2, 2, 2, 2}, 4},
                      Case{"dp", {2, 2, 1}, {3, 3, 2}, 4}),
    [](const ::testing::TestParamInfo<Case>& info) {
      return info.param.scheduler + "_s" + std::to_string(info.param.student_balance.size()) +
             "_m" + std::to_string(info.param.microbatches) + "_" + std::to_string(info.index);
    });

}  // namespace
}  // namespace tspipe
