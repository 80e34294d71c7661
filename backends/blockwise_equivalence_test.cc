// Blockwise distillation under Pipe-BD (teacher relayed over devices, each
// device stepping its own blocks), data parallel, GPipe (one block per
// device) and sequential equals a plain loop written here with torch::nn
// only: for each micro-batch the frozen teacher's block outputs t_i, each
// student block fed t_(i-1), MSE to t_i (soft cross-entropy on the last),
// one backward of the sum, one SGD step.
#include <gtest/gtest.h>

#include "algorithms/blockwise.h"
#include "backends/executor.h"
#include "core/scheduler.h"
#include "models/resnet.h"

namespace tspipe {
namespace {

ResNetOptions Teacher() {
  ResNetOptions o;
  o.widths = {8, 16};
  o.blocks_per_group = {1, 2};  // Stem, 3 basic blocks, head: 5 blocks.
  return o;
}

torch::optim::SGDOptions Sgd() { return torch::optim::SGDOptions(0.05).momentum(0.9); }

struct Case {
  std::string scheduler;
  int devices;
  int microbatches;
};

class BlockwiseEquivalenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(BlockwiseEquivalenceTest, MatchesPlainBlockwiseLoop) {
  at::set_num_threads(1);
  const Case c = GetParam();
  torch::manual_seed(21);
  torch::nn::Sequential teacher = MakeResNet(Teacher());
  torch::nn::Sequential ref_teacher = MakeResNet(Teacher());
  torch::nn::Sequential student = MakeBlockwiseStudent(Teacher());
  torch::nn::Sequential ref_student = MakeBlockwiseStudent(Teacher());
  for (auto* m : {&teacher, &ref_teacher, &student, &ref_student}) (*m)->to(torch::kFloat64);
  {
    // A "pre-trained" teacher whose eval-mode statistics differ from a
    // fresh one's, so a teacher run in train mode would be caught.
    torch::NoGradGuard g;
    for (auto& b : teacher->buffers()) {
      if (b.is_floating_point()) b.add_(0.1);
    }
  }
  CopyState(*teacher, *ref_teacher);
  CopyState(*student, *ref_student);
  ref_teacher->eval();
  torch::optim::SGD ref_opt(ref_student->parameters(), Sgd());
  const int blocks = static_cast<int>(student->size());
  std::vector<torch::nn::AnyModule> ref_teacher_blocks(ref_teacher->begin(),
                                                       ref_teacher->end());
  std::vector<torch::nn::AnyModule> ref_student_blocks(ref_student->begin(),
                                                       ref_student->end());
  std::vector<torch::Tensor> initial;
  for (const auto& p : student->parameters()) initial.push_back(p.detach().clone());
  ASSERT_EQ(blocks, static_cast<int>(teacher->size()));

  const int steps = 3, batch = 60;  // Divisible by every micro-batch count below.
  std::vector<Batch> batches;
  torch::manual_seed(22);
  for (int i = 0; i < steps; ++i) {
    batches.push_back(Batch{{torch::randn({batch, 1, 28, 28}, torch::kFloat64)},
                            {torch::randint(0, 10, {batch})}});
  }

  BlockwiseDistillation algorithm;
  SchedulerOptions so;
  so.num_stages = blocks;
  so.num_microbatches = c.microbatches;
  so.num_devices = c.devices;
  so.workload = algorithm.workload();
  Schedule schedule = BuildSchedule(c.scheduler, so);
  ASSERT_EQ(schedule.num_ranks(), c.devices);
  ExecutorOptions eo;
  eo.make_optimizer = [](std::vector<torch::Tensor> p) {
    return std::unique_ptr<torch::optim::Optimizer>(new torch::optim::SGD(p, Sgd()));
  };
  const std::vector<int> one_each(blocks, 1);
  Executor executor(schedule, Partition(BlocksFromSequential(student), one_each),
                    Partition(BlocksFromSequential(teacher), one_each), &algorithm, eo);
  std::vector<StepResult> results = executor.Run(batches);

  for (int i = 0; i < steps; ++i) {
    torch::Tensor loss = torch::zeros({}, torch::kFloat64);
    for (const auto& x : batches[i].inputs[0].chunk(c.microbatches, 0)) {
      const double share = static_cast<double>(x.size(0)) / batch;
      torch::Tensor in = x;
      for (int b = 0; b < blocks; ++b) {
        torch::Tensor t;
        {
          torch::NoGradGuard g;
          t = ref_teacher_blocks[b].forward(in);
        }
        torch::Tensor s = ref_student_blocks[b].forward(in);
        torch::Tensor l = b == blocks - 1
                              ? -(torch::softmax(t, 1) * torch::log_softmax(s, 1)).sum(1).mean()
                              : (s - t).pow(2).mean();
        loss = loss + share * l;
        in = t;
      }
    }
    EXPECT_NEAR(results[i].loss, loss.item<double>(), 1e-9) << "step " << i;
    loss.backward();
    ref_opt.step();
    ref_opt.zero_grad();
  }
  auto pa = student->named_parameters(), pb = ref_student->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    // Every block trained (one left out would keep its start, and the
    // reference would too if it skipped the same block).
    EXPECT_FALSE(torch::equal(pa[i].value(), initial[i])) << pa[i].key() << " never moved";
    EXPECT_TRUE(torch::allclose(pa[i].value(), pb[i].value(), 1e-9, 1e-10))
        << pa[i].key() << " max diff "
        << (pa[i].value() - pb[i].value()).abs().max().item<double>();
  }
  // Batch-norm statistics too, unless a block is replicated: its first
  // replica (the module checked here) saw its share of the micro-batches
  // only, as statistics are not synchronised.
  bool replicated = false;
  for (const auto& group : schedule.placement) replicated = replicated || group.size() > 1;
  auto ba = student->named_buffers(), bb = ref_student->named_buffers();
  for (size_t i = 0; i < ba.size() && !replicated; ++i) {
    EXPECT_TRUE(torch::allclose(ba[i].value().to(torch::kFloat64),
                                bb[i].value().to(torch::kFloat64), 1e-9, 1e-10))
        << ba[i].key();
  }
  auto ta = teacher->named_buffers(), tb = ref_teacher->named_buffers();
  for (size_t i = 0; i < ta.size(); ++i) {
    EXPECT_TRUE(torch::equal(ta[i].value(), tb[i].value())) << "teacher " << ta[i].key();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Schedulers, BlockwiseEquivalenceTest,
    // pipebd's groups with unit costs (5 blocks of cost 4 per micro-batch):
    // 2 devices, 3 micro-batches: blocks 0-1 | 2-4 (relaying); 3 devices, 4
    // micro-batches: block 0 | blocks 1-4 on two devices (hybrid); 6
    // devices: blocks 0 on two | 1-4 on four; 2 devices, 4 micro-batches:
    // every block on both (data parallel).
    ::testing::Values(Case{"pipebd", 2, 3}, Case{"pipebd", 3, 4}, Case{"pipebd", 6, 4},
                      Case{"pipebd", 2, 4}, Case{"pipebd", 5, 1}, Case{"pipebd", 1, 2},
                      // Neighbouring groups of unequal, non-nested sizes
                      // (2|3, 3|2|4, 1|3, ...), so a micro-batch's owner
                      // differs from replica index to replica index.
                      Case{"pipebd", 7, 3}, Case{"pipebd", 9, 4}, Case{"pipebd", 5, 6},
                      Case{"pipebd", 4, 5}, Case{"pipebd", 8, 3},
                      Case{"gpipe", 5, 2}, Case{"dp", 2, 4}, Case{"sequential", 1, 4}),
    [](const ::testing::TestParamInfo<Case>& info) {
      return info.param.scheduler + "_d" + std::to_string(info.param.devices) + "_m" +
             std::to_string(info.param.microbatches);
    });

// Groups of devices, each a contiguous run of blocks, chosen so that the
// slowest group is fastest: a group's time is its blocks' cost per
// micro-batch times the micro-batches of its busiest replica.
std::vector<std::vector<int>> Placement(int devices, int microbatches,
                                        std::vector<double> teacher_costs) {
  SchedulerOptions so;
  so.num_stages = static_cast<int>(teacher_costs.size());
  so.num_microbatches = microbatches;
  so.num_devices = devices;
  so.workload = BlockwiseDistillation().workload();
  so.costs.teacher_forward_per_stage = teacher_costs;
  so.costs.forward_per_stage.assign(teacher_costs.size(), 1.0);
  so.costs.backward_per_stage.assign(teacher_costs.size(), 2.0);
  return BuildSchedule("pipebd", so).placement;
}

TEST(PipeBdScheduleTest, ChoosesTheFastestGroups) {
  using P = std::vector<std::vector<int>>;
  // Block costs 13, 4, 4, 4, 4 (sum 29).
  const std::vector<double> heavy_first = {10, 1, 1, 1, 1};
  // 2 micro-batches: both devices on every block, 29 x 1 = 29, beats block
  // 0 | 1-4 at max(13 x 2, 16 x 2) = 32.
  EXPECT_EQ(Placement(2, 2, heavy_first), (P{{0, 1}, {0, 1}, {0, 1}, {0, 1}, {0, 1}}));
  // 3 micro-batches: a replica of both would run 2 of them (58); block 0 |
  // 1-4 takes max(39, 48) = 48.
  EXPECT_EQ(Placement(2, 3, heavy_first), (P{{0}, {1}, {1}, {1}, {1}}));
  // Equal blocks (4 each) on 3 devices, 4 micro-batches: block 0 alone
  // (16) | blocks 1-4 on two devices (16 x 2 = 32); all on three would
  // take 20 x 2 = 40.
  EXPECT_EQ(Placement(3, 4, {1, 1, 1, 1, 1}), (P{{0}, {1, 2}, {1, 2}, {1, 2}, {1, 2}}));
}

TEST(PipeBdScheduleTest, RefusesWhatItCannotRun) {
  SchedulerOptions so;
  so.num_stages = 3;
  so.num_microbatches = 2;
  so.num_devices = 7;
  so.workload = BlockwiseDistillation().workload();
  try {
    BuildSchedule("pipebd", so);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()),
              "pipebd gives every device at least one block and micro-batch: 7 devices for 3 "
              "blocks x 2 micro-batches");
  }
  so.num_devices = 2;
  so.workload = Workload{};
  so.workload.teacher = TeacherKind::kFrozen;
  try {
    BuildSchedule("pipebd", so);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("pipebd schedules blockwise distillation"),
              std::string::npos);
  }
}

}  // namespace
}  // namespace tspipe
