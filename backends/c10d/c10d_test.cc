// The c10d backend against the single-process one, and its failure handling.
// The test binary is also the worker: started with TSPIPE_C10D_CHILD=1 and
// torchrun's variables it trains as one rank and writes its stages'
// parameters, or does what the failure tests ask of it.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "algorithms/blockwise.h"
#include "algorithms/kd.h"
#include "backends/c10d/c10d_transport.h"
#include "backends/c10d/c10d_test_worker.h"
#include "backends/c10d/test_processes.h"
#include "core/balance.h"
#include "backends/executor.h"
#include "core/scheduler.h"
#include "engine/trainer.h"
#include "models/resnet.h"

extern char** environ;

namespace tspipe {
namespace {

// Trains `run` with one process per rank over `backend` and checks that
// every stage's parameters, read back from the rank that owns it, equal
// `expected` (a single-process run).
void ExpectProcessesMatch(const RunSpec& run, const std::string& backend,
                          const std::vector<std::vector<torch::Tensor>>& expected, double rtol,
                          double atol) {
  std::unique_ptr<Algorithm> algorithm = AlgorithmFor(run);
  const Schedule schedule = BuildSchedule(run.scheduler, OptionsFor(run, *algorithm));
  // One process per rank of the schedule.
  const int world = schedule.num_ranks();
  const std::string dir = TempDir();
  const int port = FreePort();
  std::vector<pid_t> pids;
  auto env = RunEnv(run, dir);
  env["TSPIPE_C10D_BACKEND"] = backend;
  // Replicas (dp) start from rank 0's parameters, even when rank 1 made
  // others.
  if (run.scheduler == "dp") env["TSPIPE_PERTURB"] = "1";
  for (int r = 0; r < world; ++r) {
    pids.push_back(Spawn(r, world, port, env, dir + "/log" + std::to_string(r)));
  }
  for (int r = 0; r < world; ++r) {
    ASSERT_EQ(WaitExit(pids[r]), 0) << "rank " << r << ":\n" << Slurp(dir + "/log" + std::to_string(r));
  }
  std::vector<std::vector<torch::Tensor>> got(world);
  for (int r = 0; r < world; ++r) torch::load(got[r], dir + "/rank" + std::to_string(r) + ".pt");
  std::vector<size_t> next(world, 0);
  for (size_t s = 0; s < expected.size(); ++s) {
    const int owner = schedule.placement[s][0];
    for (const torch::Tensor& want : expected[s]) {
      ASSERT_LT(next[owner], got[owner].size());
      const torch::Tensor& have = got[owner][next[owner]++];
      EXPECT_TRUE(torch::allclose(have, want, rtol, atol))
          << "stage " << s << " max diff " << (have - want).abs().max().item<double>();
    }
  }
}

class C10dEquivalenceTest : public ::testing::TestWithParam<RunSpec> {};

// N processes over gloo train exactly what one process trains.
TEST_P(C10dEquivalenceTest, MatchesSingleProcessBackend) {
  const RunSpec run = GetParam();
  ExpectProcessesMatch(run, "gloo", Train(run, nullptr, std::chrono::seconds(30)), 1e-6, 1e-7);
}

INSTANTIATE_TEST_SUITE_P(
    Schedulers, C10dEquivalenceTest,
    ::testing::Values(RunSpec{"gpipe", {3, 2}, {3, 3}}, RunSpec{"gpipe", {2, 1, 1, 1}, {2, 2, 1, 1}},
                      RunSpec{"tspipe", {3, 2}, {4, 2}}, RunSpec{"tspipe", {2, 1, 1, 1}, {1, 2, 2, 1}},
                      RunSpec{"dp", {3, 2}, {3, 3}}),
    [](const ::testing::TestParamInfo<RunSpec>& info) {
      return info.param.scheduler + "_" + std::to_string(info.param.balance.size()) + "proc";
    });

// SIGKILL one rank mid-run: the survivor exits non-zero, naming the lost
// rank, well within its timeout.
TEST(C10dFailureTest, SurvivorExitsNamingTheKilledRank) {
  RunSpec run{"gpipe", {3, 2}, {3, 3}};
  run.steps = 100000;  // Runs until killed.
  const std::string dir = TempDir();
  const int port = FreePort();
  auto env = RunEnv(run, dir);
  env["TSPIPE_TIMEOUT_MS"] = "30000";
  env["TSPIPE_STARTED"] = dir + "/started";
  pid_t r0 = Spawn(0, 2, port, env, dir + "/log0");
  pid_t r1 = Spawn(1, 2, port, env, dir + "/log1");
  for (int i = 0; i < 600 && !std::ifstream(dir + "/started"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(std::ifstream(dir + "/started")) << Slurp(dir + "/log0") << Slurp(dir + "/log1");
  const auto killed = std::chrono::steady_clock::now();
  kill(r1, SIGKILL);
  WaitExit(r1);
  const int status = WaitExit(r0);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  const std::string log = Slurp(dir + "/log0");
  EXPECT_NE(status, 0);
  EXPECT_LT(secs, 30.0) << log;
  EXPECT_NE(log.find("lost rank 1"), std::string::npos) << log;
  std::printf("survivor exited %.2f s after its peer was killed: %s", secs, log.c_str());
}

std::vector<double> ReadLosses(const std::string& path) {
  std::vector<double> out;
  std::ifstream in(path);
  for (double x; in >> x;) out.push_back(x);
  return out;
}

// Two models on their own processes (one per model, or two stages each)
// train what one process trains: the same mean loss at every step and,
// with one process per model, the same parameters.
TEST(C10dCodistillTest, ProcessesPerModelMatchOneProcess) {
  at::set_num_threads(1);
  for (const auto& [scheduler, stages] :
       std::vector<std::pair<std::string, int>>{{"sequential", 1}, {"tspipe", 2}}) {
    const int steps = 5;
    Trainer local(CodistillConfig(scheduler, stages, "2"));
    std::vector<double> want;
    for (int i = 0; i < steps; ++i) want.push_back(local.Train(1));
    const std::string dir = TempDir();
    local.SaveModel(dir + "/local1.pt", 1);
    const int world = local.num_devices();
    const int port = FreePort();
    std::map<std::string, std::string> env{{"TSPIPE_CODISTILL", "1"},
                                           {"TSPIPE_SCHEDULER", scheduler},
                                           {"TSPIPE_STAGES", std::to_string(stages)},
                                           {"TSPIPE_STEPS", std::to_string(steps)},
                                           {"TSPIPE_OUT", dir}};
    std::vector<pid_t> pids;
    for (int r = 0; r < world; ++r) {
      pids.push_back(Spawn(r, world, port, env, dir + "/log" + std::to_string(r)));
    }
    for (int r = 0; r < world; ++r) {
      ASSERT_EQ(WaitExit(pids[r]), 0) << scheduler << " rank " << r << ":\n"
                                      << Slurp(dir + "/log" + std::to_string(r));
    }
    for (int r = 0; r < world; ++r) {
      const std::vector<double> got = ReadLosses(dir + "/losses" + std::to_string(r) + ".txt");
      ASSERT_EQ(got.size(), want.size()) << scheduler << " rank " << r;
      for (int i = 0; i < steps; ++i) {
        EXPECT_NEAR(got[i], want[i], 1e-10) << scheduler << " rank " << r << " step " << i + 1;
      }
    }
    if (stages == 1) {
      // Model 1 trained by process 1 alone equals the single process's.
      ResNetOptions shape;  // CodistillConfig's.
      shape.widths = {4, 8};
      shape.blocks_per_group = {1, 1};
      torch::nn::Sequential a = MakeResNet(shape), b = MakeResNet(shape);
      a->to(torch::kFloat64);
      b->to(torch::kFloat64);
      for (auto [module, path] : {std::make_pair(a, dir + "/local1.pt"),
                                  std::make_pair(b, dir + "/model1.pt")}) {
        torch::serialize::InputArchive archive;
        archive.load_from(path);
        module->load(archive);
      }
      auto pa = a->parameters(), pb = b->parameters();
      for (size_t i = 0; i < pa.size(); ++i) {
        EXPECT_LT((pa[i] - pb[i]).abs().max().item<double>(), 1e-10);
      }
    }
  }
}

// A model's process dies while the others exchange parameters with it:
// each survivor exits non-zero, naming it, well within its timeout.
TEST(C10dCodistillTest, RankLostDuringAnExchangeIsNamed) {
  const std::string dir = TempDir();
  const int port = FreePort();
  std::map<std::string, std::string> env{{"TSPIPE_CODISTILL", "1"},
                                         {"TSPIPE_SCHEDULER", "sequential"},
                                         {"TSPIPE_STAGES", "1"},
                                         // Longer than the test waits; one
                                         // call holds all its batches.
                                         {"TSPIPE_STEPS", "5000"},
                                         {"TSPIPE_ONE_CALL", "1"},
                                         {"TSPIPE_EXCHANGE_EVERY", "1"},
                                         {"TSPIPE_STARTED", dir + "/started"},
                                         {"TSPIPE_OUT", dir}};
  pid_t r0 = Spawn(0, 2, port, env, dir + "/log0");
  pid_t r1 = Spawn(1, 2, port, env, dir + "/log1");
  for (int i = 0; i < 600 && !std::ifstream(dir + "/started"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(std::ifstream(dir + "/started")) << Slurp(dir + "/log0") << Slurp(dir + "/log1");
  // Time to draw the batches of the long call and start training on them.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const auto killed = std::chrono::steady_clock::now();
  kill(r1, SIGKILL);
  WaitExit(r1);
  const int status = WaitExit(r0);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  const std::string log = Slurp(dir + "/log0");
  EXPECT_NE(status, 0);
  EXPECT_LT(secs, 20.0) << log;
  EXPECT_NE(log.find("lost rank 1"), std::string::npos) << log;
  EXPECT_NE(log.find("parameter exchange"), std::string::npos) << log;
  std::printf("survivor exited %.2f s after its peer was killed: %s", secs, log.c_str());
}

TEST(C10dFailureTest, DifferentConfigurationFailsAtStartUp) {
  RunSpec run{"gpipe", {3, 2}, {3, 3}};
  const std::string dir = TempDir();
  const int port = FreePort();
  auto env0 = RunEnv(run, dir), env1 = env0;
  env1["TSPIPE_MICROBATCHES"] = "2";
  pid_t r0 = Spawn(0, 2, port, env0, dir + "/log0");
  pid_t r1 = Spawn(1, 2, port, env1, dir + "/log1");
  EXPECT_NE(WaitExit(r0), 0);
  EXPECT_NE(WaitExit(r1), 0);
  EXPECT_NE(Slurp(dir + "/log0").find("rank 1 was started with a different configuration: it "
                                      "has microbatches=2, rank 0 has microbatches=4"),
            std::string::npos)
      << Slurp(dir + "/log0");
  EXPECT_NE(Slurp(dir + "/log1").find("different configuration"), std::string::npos)
      << Slurp(dir + "/log1");
}

TEST(C10dFailureTest, PortInUseAndMissingPeerGiveClearErrors) {
  RunSpec run{"gpipe", {3, 2}, {3, 3}};
  const std::string dir = TempDir();
  // Hold a listening socket on the port.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = 0;
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  listen(fd, 1);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  auto env = RunEnv(run, dir);
  env["TSPIPE_TIMEOUT_MS"] = "3000";
  EXPECT_NE(WaitExit(Spawn(0, 2, ntohs(addr.sin_port), env, dir + "/busy")), 0);
  close(fd);
  EXPECT_NE(Slurp(dir + "/busy").find("is already in use"), std::string::npos)
      << Slurp(dir + "/busy");
  // Rank 1 never comes: rank 0 gives up after the timeout.
  const auto start = std::chrono::steady_clock::now();
  EXPECT_NE(WaitExit(Spawn(0, 2, FreePort(), env, dir + "/alone")), 0);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 20);
  EXPECT_NE(Slurp(dir + "/alone").find("did not complete within 3 s"), std::string::npos)
      << Slurp(dir + "/alone");
}

// Pipe-BD over processes: blocks 0-1 on rank 0, blocks 2-5 replicated on
// ranks 1 and 2 (unit costs), so the teacher activations are relayed from
// one process to the owner of each micro-batch and the replicas all-reduce
// in a process group of their own, not the world's.
TEST(C10dBlockwiseTest, PipeBdHybridGroupsMatchSingleProcessBackend) {
  RunSpec run{"pipebd", {}, {}, 4, 3};
  run.blockwise = true;
  run.devices = 3;
  run.float64 = true;
  const Schedule schedule =
      BuildSchedule("pipebd", OptionsFor(run, BlockwiseDistillation()));
  ASSERT_EQ(schedule.placement.front(), std::vector<int>{0});
  ASSERT_EQ(schedule.placement.back(), (std::vector<int>{1, 2}));
  ExpectProcessesMatch(run, "gloo", Train(run, nullptr, std::chrono::seconds(30)), 1e-9, 1e-10);
}

// GPU checks. Each skips without a visible GPU, as in every build without
// --config=cuda (which cannot see one).
bool HaveGpus(int n) {
  return torch::cuda::is_available() && static_cast<int>(torch::cuda::device_count()) >= n;
}

RunSpec Float64(RunSpec run) {
  run.float64 = true;
  return run;
}

void ExpectSameParameters(const std::vector<std::vector<torch::Tensor>>& got,
                          const std::vector<std::vector<torch::Tensor>>& want,
                          const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t s = 0; s < want.size(); ++s) {
    ASSERT_EQ(got[s].size(), want[s].size()) << what << " stage " << s;
    for (size_t i = 0; i < want[s].size(); ++i) {
      EXPECT_TRUE(torch::allclose(got[s][i], want[s][i], 1e-7, 1e-9))
          << what << " stage " << s << " max diff "
          << (got[s][i] - want[s][i]).abs().max().item<double>();
    }
  }
}

// The single-process backend with every rank on cuda:0 trains what it
// trains on the CPU.
TEST(C10dCudaTest, SingleProcessBackendOnOneGpuMatchesCpu) {
  if (!HaveGpus(1)) GTEST_SKIP() << "no CUDA device is visible";
  for (const RunSpec& run : {Float64({"gpipe", {3, 2}, {3, 3}}), Float64({"tspipe", {3, 2}, {4, 2}}),
                             Float64({"dp", {3, 2}, {3, 3}})}) {
    ExpectSameParameters(
        Train(run, nullptr, std::chrono::seconds(60), "", torch::Device(torch::kCUDA, 0)),
        Train(run, nullptr, std::chrono::seconds(60)), run.scheduler + " on cuda:0");
  }
}

// A world-size-1 process group: its all-reduce and broadcast leave the lone
// rank's tensors as they were, on its device, and a one-stage KD run
// through it trains what the single-process backend trains on the CPU.
void CheckWorldOfOne(const std::string& backend, const torch::Device& device) {
  C10dOptions o;
  o.world_size = 1;
  o.master_port = FreePort();
  o.backend = backend;
  o.timeout = std::chrono::seconds(60);
  auto transport = std::make_shared<C10dTransport>(o);
  ASSERT_EQ(transport->device(), device);
  const torch::Tensor x = torch::arange(1000, torch::TensorOptions().device(device));
  std::atomic<bool> abort{false};
  std::vector<torch::Tensor> sums{x.clone()};
  transport->AllReduce(0, {0}, CollectiveId{}, &sums, o.timeout, abort);
  std::vector<torch::Tensor> copies{x * 2};
  transport->Broadcast(0, {0}, 0, &copies, o.timeout);
  if (device.is_cuda()) torch::cuda::synchronize();
  EXPECT_EQ(sums[0].device(), device);
  EXPECT_TRUE(torch::equal(sums[0].cpu(), x.cpu()));
  EXPECT_TRUE(torch::equal(copies[0].cpu(), (x * 2).cpu()));
  const RunSpec run = Float64({"sequential", {5}, {6}});
  ExpectSameParameters(Train(run, transport, o.timeout), Train(run, nullptr, o.timeout),
                       "sequential over a world-size-1 " + backend + " group");
}

TEST(C10dWorldOfOneTest, Gloo) { CheckWorldOfOne("gloo", torch::kCPU); }

TEST(C10dCudaTest, WorldSizeOneNcclProcessGroup) {
  if (!HaveGpus(1)) GTEST_SKIP() << "no CUDA device is visible";
  CheckWorldOfOne("nccl", torch::Device(torch::kCUDA, 0));
}

// One process per GPU over NCCL (tensors) and gloo (their headers) trains
// what one process trains on the CPU.
TEST(C10dCudaTest, NcclProcessesMatchSingleProcessBackend) {
  if (!HaveGpus(2)) GTEST_SKIP() << "needs 2 GPUs (NCCL refuses two ranks on one GPU)";
  for (const RunSpec& run : {Float64({"gpipe", {3, 2}, {3, 3}}), Float64({"tspipe", {3, 2}, {4, 2}}),
                             Float64({"dp", {3, 2}, {3, 3}})}) {
    SCOPED_TRACE(run.scheduler);
    ExpectProcessesMatch(run, "nccl", Train(run, nullptr, std::chrono::seconds(60)), 1e-7, 1e-9);
  }
}

}  // namespace
}  // namespace tspipe

int main(int argc, char** argv) {
  if (std::getenv("TSPIPE_C10D_CHILD") != nullptr) tspipe::ChildMain();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
