// The pipelined executor against an independent truth: a plain sequential
// loop over torch::nn::Sequential with the same micro-batching, written here
// without any tspipe code on its path.
#include "backends/executor.h"

#include <gtest/gtest.h>

#include <thread>

#include "algorithms/supervised.h"
#include "backends/grad_sync.h"
#include "backends/transport.h"
#include "core/message.h"
#include "core/scheduler.h"
#include "models/resnet.h"

namespace tspipe {
namespace {

ResNetOptions SmallResNet() {
  ResNetOptions o;
  o.widths = {8, 16, 16};
  o.blocks_per_group = {1, 2, 1};  // 2 + 4 = 6 blocks.
  return o;
}

std::unique_ptr<torch::optim::Optimizer> MakeSgd(std::vector<torch::Tensor> params) {
  return std::make_unique<torch::optim::SGD>(
      params, torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(1e-4));
}

Schedule MakeSchedule(const std::string& scheduler, int stages, int microbatches,
                      const Algorithm& algorithm) {
  SchedulerOptions so;
  so.num_stages = stages;
  so.num_microbatches = microbatches;
  so.workload = algorithm.workload();
  return BuildSchedule(scheduler, so);
}

ExecutorOptions SgdOptions() {
  ExecutorOptions eo;
  eo.make_optimizer = MakeSgd;
  return eo;
}

Batch RandomBatch(int n, int seed) {
  torch::manual_seed(seed);
  return Batch{{torch::randn({n, 1, 28, 28})}, {torch::randint(0, 10, {n})}};
}

// Plain training: forward each micro-batch through the whole model, mean
// cross-entropy over the gathered mini-batch, one backward, one step.
void ReferenceStep(torch::nn::Sequential& model, torch::optim::Optimizer& opt, const Batch& b,
                   int m) {
  auto xs = b.inputs[0].chunk(m, 0);
  std::vector<torch::Tensor> logits;
  for (const auto& x : xs) logits.push_back(model->forward(x));
  torch::Tensor loss = torch::nn::functional::cross_entropy(torch::cat(logits), b.targets[0]);
  loss.backward();
  opt.step();
  opt.zero_grad();
}

void ExpectSameState(torch::nn::Module& a, torch::nn::Module& b) {
  auto pa = a.named_parameters(), pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(torch::allclose(pa[i].value(), pb[i].value(), 1e-9, 1e-10))
        << pa[i].key() << " max diff "
        << (pa[i].value() - pb[i].value()).abs().max().item<double>();
  }
  auto ba = a.named_buffers(), bb = b.named_buffers();
  ASSERT_EQ(ba.size(), bb.size());
  for (size_t i = 0; i < ba.size(); ++i) {
    EXPECT_TRUE(torch::allclose(ba[i].value().to(torch::kDouble), bb[i].value().to(torch::kDouble),
                                1e-9, 1e-10))
        << ba[i].key();
  }
}

struct Case {
  std::string scheduler;
  int stages;
  int microbatches;
};

class EquivalenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(EquivalenceTest, MatchesPlainSequentialTraining) {
  at::set_num_threads(1);
  const Case c = GetParam();
  // Double precision: the pipelined run accumulates gradients in a different
  // order than the reference, and with 4-sample batch-norm batches float32
  // rounding grows to ~1e-4 in 3 steps; in float64 a real bug stands out
  // against a 1e-9 tolerance.
  torch::manual_seed(7);
  torch::nn::Sequential model = MakeResNet(SmallResNet());
  model->to(torch::kFloat64);
  torch::manual_seed(7);
  torch::nn::Sequential reference = MakeResNet(SmallResNet());
  reference->to(torch::kFloat64);
  ExpectSameState(*model, *reference);  // Same seed, same start.
  torch::optim::SGD ref_opt(reference->parameters(),
                            torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(1e-4));

  BlockList blocks = BlocksFromSequential(model);
  SupervisedAlgorithm algorithm;
  Executor executor(MakeSchedule(c.scheduler, c.stages, c.microbatches, algorithm),
                    Partition(blocks, EvenBalance(blocks.size(), c.stages)), {}, &algorithm,
                    SgdOptions());
  for (int step = 0; step < 3; ++step) {
    Batch b = RandomBatch(16, 100 + step);
    b.inputs[0] = b.inputs[0].to(torch::kFloat64);
    StepResult r = executor.Step(b);
    EXPECT_EQ(r.samples, 16);
    EXPECT_TRUE(std::isfinite(r.loss));
    ReferenceStep(reference, ref_opt, b, c.microbatches);
  }
  // The parameters moved (a no-op executor would fail the comparison).
  torch::manual_seed(7);
  torch::nn::Sequential initial = MakeResNet(SmallResNet());
  initial->to(torch::kFloat64);
  EXPECT_FALSE(torch::allclose(initial->parameters()[0], model->parameters()[0]));
  ExpectSameState(*model, *reference);
}

INSTANTIATE_TEST_SUITE_P(Schedulers, EquivalenceTest,
                         ::testing::Values(Case{"gpipe", 2, 4}, Case{"gpipe", 4, 4},
                                           Case{"gpipe", 4, 2}, Case{"sequential", 3, 4},
                                           Case{"gpipe", 1, 2}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.scheduler + "_s" +
                                  std::to_string(info.param.stages) + "_m" +
                                  std::to_string(info.param.microbatches);
                         });

TEST(ExecutorTest, LossMatchesReferenceLoss) {
  at::set_num_threads(1);
  torch::manual_seed(3);
  torch::nn::Sequential model = MakeResNet(SmallResNet());
  Batch b = RandomBatch(8, 5);
  // Reference loss at the initial parameters (BN in train mode, 2 chunks).
  torch::Tensor expected;
  {
    torch::manual_seed(3);
    torch::nn::Sequential ref = MakeResNet(SmallResNet());
    std::vector<torch::Tensor> logits;
    for (const auto& x : b.inputs[0].chunk(2, 0)) logits.push_back(ref->forward(x));
    expected = torch::nn::functional::cross_entropy(torch::cat(logits), b.targets[0]);
  }
  BlockList blocks = BlocksFromSequential(model);
  SupervisedAlgorithm algorithm;
  Executor executor(MakeSchedule("gpipe", 3, 2, algorithm), Partition(blocks, {2, 2, 2}), {},
                    &algorithm, SgdOptions());
  EXPECT_NEAR(executor.Step(b).loss, expected.item<double>(), 1e-5);
}

// An algorithm whose loss fails on the second step.
class FailingAlgorithm : public SupervisedAlgorithm {
 public:
  torch::Tensor Loss(const LossInputs& in) const override {
    if (in.step == 2) throw std::runtime_error("loss exploded");
    return SupervisedAlgorithm::Loss(in);
  }
};

TEST(ExecutorTest, AFailingRankStopsEveryRankWithANamedError) {
  at::set_num_threads(1);
  torch::nn::Sequential model = MakeResNet(SmallResNet());
  BlockList blocks = BlocksFromSequential(model);
  FailingAlgorithm algorithm;
  ExecutorOptions eo = SgdOptions();
  eo.recv_timeout = std::chrono::seconds(30);
  Executor executor(MakeSchedule("gpipe", 3, 2, algorithm), Partition(blocks, {2, 2, 2}), {},
                    &algorithm, eo);
  executor.Step(RandomBatch(4, 1));
  auto start = std::chrono::steady_clock::now();
  try {
    executor.Step(RandomBatch(4, 2));
    FAIL() << "expected the step to fail";
  } catch (const std::runtime_error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("rank 2 failed at step"), std::string::npos) << what;
    EXPECT_NE(what.find("(2L)"), std::string::npos) << what;
    EXPECT_NE(what.find("loss exploded"), std::string::npos) << what;
  }
  // The other ranks were woken, not left to time out.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_EQ(executor.steps_done(), 1);
}

TEST(ExecutorTest, RefusesInvalidScheduleAndMismatchedStages) {
  torch::nn::Sequential model = MakeResNet(SmallResNet());
  BlockList blocks = BlocksFromSequential(model);
  SupervisedAlgorithm algorithm;
  const Schedule schedule = MakeSchedule("gpipe", 2, 2, algorithm);
  ExecutorOptions eo = SgdOptions();
  Schedule broken = schedule;
  broken.ranks[1].erase(broken.ranks[1].begin());  // Drop 1RA0<0.
  try {
    Executor e(broken, Partition(blocks, {3, 3}), {}, &algorithm, eo);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("no matching receive 1RA0<0"), std::string::npos)
        << e.what();
  }
  try {
    Executor e(schedule, Partition(blocks, {2, 2, 2}), {}, &algorithm, eo);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), "schedule has 2 stages but the student has 3");
  }
}

TEST(ExecutorTest, MicrobatchesMustDivideTheBatch) {
  torch::nn::Sequential model = MakeResNet(SmallResNet());
  BlockList blocks = BlocksFromSequential(model);
  SupervisedAlgorithm algorithm;
  Executor executor(MakeSchedule("gpipe", 2, 4, algorithm), Partition(blocks, {3, 3}), {},
                    &algorithm, SgdOptions());
  try {
    executor.Step(RandomBatch(10, 1));
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), "4 micro-batches do not divide the batch of 10 samples");
  }
}

}  // namespace
}  // namespace tspipe

namespace tspipe {
namespace {

// Index of the action printed `text` on `rank`.
int Find(const Schedule& s, int rank, const std::string& text) {
  for (size_t i = 0; i < s.ranks[rank].size(); ++i) {
    if (ToString(s.ranks[rank][i]) == text) return static_cast<int>(i);
  }
  ADD_FAILURE() << text << " not found on rank " << rank;
  return 0;
}

// The executor runs the tied sums and clipping the schedule carries (TG, GN:
// core/lowering.h); options that ask for others are refused, naming them.
TEST(GradientSyncTest, RefusesAScheduleBuiltForOtherTiesOrClipping) {
  SchedulerOptions so;
  so.num_stages = 4;
  so.num_microbatches = 2;
  const Schedule plain = BuildSchedule("gpipe", so);
  try {
    GradientSync sync(plain, {{0, 0, 3, 0}}, 0.0);
    FAIL() << "accepted ties the schedule never sums";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("sums tied gradients of stages none, but the model ties "
                                         "stages 0-3"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(GradientSync(plain, {}, 1.0), std::invalid_argument);  // No GN.
  so.workload.tied_stages = {{0, 3}};
  so.workload.clip_gradients = true;
  const Schedule synced = BuildSchedule("gpipe", so);
  EXPECT_NO_THROW(GradientSync(synced, {{0, 0, 3, 0}}, 1.0));
  EXPECT_THROW(GradientSync(synced, {{0, 0, 3, 0}}, 0.0), std::invalid_argument);  // A GN.
  EXPECT_THROW(GradientSync(synced, {{0, 0, 4, 0}}, 1.0), std::invalid_argument);  // No stage 4.
  EXPECT_THROW(GradientSync(synced, {{0, 0, 3, 0}}, -1.0), std::invalid_argument);
}

// Two ties between the same pair of ranks travel as one flat tensor: NCCL
// takes one tensor per collective and gloo sums every tensor it is given
// into one, so a bucket of several (two ties' gradients, of two shapes) was
// wrong on c10d while the in-process transport, which sums index by index,
// hid it.
TEST(GradientSyncTest, TiesBetweenTwoRanksTravelAsOneTensor) {
  class OneTensorTransport : public Transport {
   public:
    explicit OneTensorTransport(std::shared_ptr<Transport> inner) : inner_(std::move(inner)) {}
    void Send(int from, int to, const MessageKey& key, Activation value) override {}
    Activation Receive(int, int, const MessageKey&, std::chrono::milliseconds,
                       const std::atomic<bool>&) override {
      return {};
    }
    void AllReduce(int rank, const std::vector<int>& group, const CollectiveId& id,
                   std::vector<torch::Tensor>* tensors, std::chrono::milliseconds timeout,
                   const std::atomic<bool>& abort) override {
      if (tensors->size() != 1) throw std::runtime_error("a collective of several tensors");
      inner_->AllReduce(rank, group, id, tensors, timeout, abort);
    }
    std::vector<std::vector<torch::Tensor>> AllGather(int, const std::vector<int>&,
                                                      const CollectiveId&,
                                                      const std::vector<torch::Tensor>&,
                                                      std::chrono::milliseconds,
                                                      const std::atomic<bool>&) override {
      return {};
    }

   private:
    std::shared_ptr<Transport> inner_;
  };
  // Two stages of one linear layer each, the weights and the biases tied.
  torch::nn::Sequential net(torch::nn::Linear(3, 3), torch::nn::Linear(3, 3));
  std::vector<Stage> stages = Partition(BlocksFromSequential(net), {1, 1});
  SchedulerOptions so;
  so.num_stages = 2;
  so.num_microbatches = 1;
  so.workload.tied_stages = {{0, 1}};
  const Schedule schedule = BuildSchedule("gpipe", so);
  GradientSync sync(schedule, {{0, 0, 1, 0}, {0, 1, 1, 1}}, 0.0);
  std::vector<std::vector<torch::Tensor>> params{stages[0]->parameters(), stages[1]->parameters()};
  std::vector<torch::Tensor> want;
  for (int i = 0; i < 2; ++i) {
    params[0][i].mutable_grad() = torch::randn_like(params[0][i]);
    params[1][i].mutable_grad() = torch::randn_like(params[1][i]);
    want.push_back(params[0][i].grad() + params[1][i].grad());
  }
  OneTensorTransport transport(MakeLocalTransport(2, {}));
  std::atomic<bool> abort{false};
  std::vector<std::string> errors(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      try {
        sync.SumTied(r, 1 - r, {{r, stages[r].get()}},
                     CollectiveOf(schedule.ranks[r][Find(schedule, r, std::to_string(r) + "TG~" +
                                                                         std::to_string(1 - r))],
                                  0),
                     transport, std::chrono::seconds(10), abort);
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : ranks) t.join();
  EXPECT_EQ(errors, (std::vector<std::string>{"", ""}));
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(torch::allclose(params[0][i].grad(), want[i]));
    EXPECT_TRUE(torch::equal(params[0][i].grad(), params[1][i].grad()));
  }
}

// A collective that times out names what it is: the checkpoint barrier is
// not "tied gradients" (collectives once shared negative stage numbers).
TEST(TransportTest, ACollectiveThatTimesOutNamesItself) {
  std::shared_ptr<Transport> transport = MakeLocalTransport(2, {});
  std::atomic<bool> abort{false};
  std::vector<torch::Tensor> sum{torch::ones({1})};
  auto message = [&](const CollectiveId& id) {
    try {
      transport->AllReduce(0, {0, 1}, id, &sum, std::chrono::milliseconds(10), abort);
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message({CollectiveId::Kind::kCheckpointBarrier, 0, 7}),
            "timed out after 10 ms in the checkpoint barrier (every process's file written) with "
            "1 of 2 members arrived");
  EXPECT_EQ(message({CollectiveId::Kind::kGradients, 2, 4}),
            "timed out after 10 ms in the gradient all-reduce of stage 2 of training step 5 with "
            "1 of 2 members arrived");
  EXPECT_EQ(message({CollectiveId::Kind::kTiedGradients, 0, 0}),
            "timed out after 10 ms in the sum of tied gradients of training step 1 with 1 of 2 "
            "members arrived");
}

}  // namespace
}  // namespace tspipe

namespace tspipe {
namespace {

// A recorded run holds every action of every step once, in each rank's
// order without overlap, and no receive ends before its send began.
TEST(ExecutorTraceTest, RecordsEveryActionInOrderAndCausally) {
  at::set_num_threads(1);
  torch::nn::Sequential model = MakeResNet(SmallResNet());
  BlockList blocks = BlocksFromSequential(model);
  SupervisedAlgorithm algorithm;
  const Schedule schedule = MakeSchedule("gpipe", 3, 2, algorithm);
  Executor executor(schedule, Partition(blocks, {2, 2, 2}), {}, &algorithm, SgdOptions());
  executor.Step(RandomBatch(4, 1));
  EXPECT_TRUE(executor.TakeTrace().empty());  // Off unless asked for.
  executor.set_record_trace(true);
  const int steps = 4;
  std::vector<Batch> batches;
  for (int i = 0; i < steps; ++i) batches.push_back(RandomBatch(4, 10 + i));
  executor.Run(batches);
  const std::vector<TraceEvent> events = executor.TakeTrace();

  size_t expected = 0;
  for (const auto& list : schedule.ranks) expected += list.size() * steps;
  ASSERT_EQ(events.size(), expected);
  std::map<Message, double> sent;
  std::vector<const TraceEvent*> last(schedule.num_ranks(), nullptr);
  for (const TraceEvent& e : events) {
    ASSERT_EQ(e.kind, TraceEvent::Kind::kAction);
    EXPECT_LE(e.start_us, e.end_us);
    EXPECT_EQ(e.action, schedule.ranks[e.rank][e.index]);
    const TraceEvent* prev = last[e.rank];
    if (prev != nullptr) {
      // Each rank's events come in the order it ran them.
      EXPECT_LT(std::make_pair(prev->step, prev->index), std::make_pair(e.step, e.index));
      EXPECT_GE(e.start_us, prev->end_us);
    }
    last[e.rank] = &e;
    if (IsSend(e.action.op)) sent[MessageOf(e.action, e.rank, e.step)] = e.start_us;
  }
  int receives = 0;
  for (const TraceEvent& e : events) {
    if (!IsCommunication(e.action.op) || IsSend(e.action.op)) continue;
    auto it = sent.find(MessageOf(e.action, e.rank, e.step));
    ASSERT_NE(it, sent.end()) << ToString(e.action);
    EXPECT_GE(e.end_us, it->second) << ToString(e.action) << " ended before its send started";
    ++receives;
  }
  EXPECT_GT(receives, 0);

  TraceRun run{"gpipe", schedule, events};
  EXPECT_EQ(CheckChromeTrace(ChromeTraceJson({run})), "");
  const TraceSummary summary = SummarizeTrace(run);
  EXPECT_EQ(summary.steady_steps, steps - 2);
  EXPECT_GT(summary.period_us, 0);
  EXPECT_GT(summary.bubble, 0);  // 3 ranks of a GPipe pipeline wait.
  EXPECT_LT(summary.bubble, 1);
  EXPECT_GT(summary.predicted_period_us, 0);
  // Recorded runs also meter memory: at least the first block's output of
  // the whole mini-batch (4 x 8 x 28 x 28 floats), which GPipe keeps for
  // its backward, was held at once.
  std::map<std::string, int64_t> peaks = executor.TakeMemoryPeaks();
  ASSERT_EQ(peaks.count("cpu"), 1u);
  EXPECT_GE(peaks["cpu"], 4 * 8 * 28 * 28 * 4);
  EXPECT_TRUE(executor.TakeMemoryPeaks().empty());
  executor.set_record_trace(false);
  executor.Step(RandomBatch(4, 2));
  EXPECT_TRUE(executor.TakeTrace().empty());
  EXPECT_TRUE(executor.TakeMemoryPeaks().empty());
}

}  // namespace
}  // namespace tspipe
