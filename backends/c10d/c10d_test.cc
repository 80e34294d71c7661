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
#include "backends/c10d/test_processes.h"
#include "core/balance.h"
#include "backends/executor.h"
#include "core/scheduler.h"
#include "engine/trainer.h"
#include "models/resnet.h"

extern char** environ;

namespace tspipe {
namespace {

std::vector<int> Ints(const std::string& text) {
  std::vector<int> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoi(item));
  return out;
}

ResNetOptions Student() {
  ResNetOptions o;
  o.widths = {8, 16};
  o.blocks_per_group = {1, 2};  // 5 blocks.
  return o;
}

ResNetOptions Teacher() {
  ResNetOptions o;
  o.widths = {12, 16};
  o.blocks_per_group = {2, 2};  // 6 blocks.
  return o;
}

struct RunSpec {
  std::string scheduler;
  std::vector<int> balance;
  std::vector<int> teacher_balance;
  int microbatches = 4;
  int steps = 3;
  // Models and data in float64: GPU and CPU runs then agree to ~1e-12
  // whatever order cuDNN sums in.
  bool float64 = false;
  // Blockwise distillation (a stage per block pair of Teacher() and its
  // blockwise student; balances unused) on `devices` ranks.
  bool blockwise = false;
  int devices = 0;
};

SchedulerOptions OptionsFor(const RunSpec& run, const Algorithm& algorithm) {
  SchedulerOptions so;
  so.num_stages = run.blockwise ? static_cast<int>(MakeResNet(Teacher())->size())
                                : static_cast<int>(run.balance.size());
  so.num_devices = run.devices;
  so.num_microbatches = run.microbatches;
  so.workload = algorithm.workload();
  return so;
}

std::unique_ptr<Algorithm> AlgorithmFor(const RunSpec& run) {
  if (run.blockwise) return std::make_unique<BlockwiseDistillation>();
  return std::make_unique<KnowledgeDistillation>();
}

// Trains KD with seeded models and data; `transport` null = single process
// with every rank on `device`, else this process's rank on the transport's
// device. Returns the student stages' parameters by stage, on the CPU (empty
// for stages this process does not run).
std::vector<std::vector<torch::Tensor>> Train(const RunSpec& run,
                                              std::shared_ptr<C10dTransport> transport,
                                              std::chrono::milliseconds timeout,
                                              const std::string& started_marker = "",
                                              torch::Device device = torch::kCPU) {
  at::set_num_threads(1);
  torch::manual_seed(5);
  torch::nn::Sequential teacher = MakeResNet(Teacher());
  torch::nn::Sequential student =
      run.blockwise ? MakeBlockwiseStudent(Teacher()) : MakeResNet(Student());
  const torch::Dtype dtype = run.float64 ? torch::kFloat64 : torch::kFloat32;
  teacher->to(dtype);
  student->to(dtype);
  std::vector<Batch> batches;
  for (int i = 0; i < run.steps + 1; ++i) {
    batches.push_back(
        Batch{{torch::randn({8, 1, 28, 28}, dtype)}, {torch::randint(0, 10, {8})}});
  }
  std::unique_ptr<Algorithm> algorithm = AlgorithmFor(run);
  const SchedulerOptions so = OptionsFor(run, *algorithm);
  Schedule schedule = BuildSchedule(run.scheduler, so);
  const std::vector<int> ones(so.num_stages, 1);
  const std::vector<int>& balance = run.blockwise ? ones : run.balance;
  const std::vector<int>& teacher_balance = run.blockwise ? ones : run.teacher_balance;
  ExecutorOptions eo;
  eo.recv_timeout = timeout;
  eo.make_optimizer = [](std::vector<torch::Tensor> p) {
    return std::unique_ptr<torch::optim::Optimizer>(
        new torch::optim::SGD(p, torch::optim::SGDOptions(0.05).momentum(0.9)));
  };
  std::vector<int> mine;
  if (transport) {
    if (transport->world_size() != schedule.num_ranks()) {
      throw std::invalid_argument(run.scheduler + " needs " + std::to_string(schedule.num_ranks()) +
                                  " processes, WORLD_SIZE is " +
                                  std::to_string(transport->world_size()));
    }
    std::ostringstream config;
    config << "scheduler=" << run.scheduler << "\nstages=" << so.num_stages
           << "\nmicrobatches=" << run.microbatches << "\n";
    transport->CheckSameConfig("test", config.str());
    eo.transport = transport;
    eo.local_ranks = {transport->rank()};
    device = transport->device();
  }
  eo.devices.assign(schedule.num_ranks(), device);
  if (transport && Env("TSPIPE_PERTURB") == std::to_string(transport->rank())) {
    // This process initialises differently; the executor's broadcast from
    // the first replica must undo it.
    torch::NoGradGuard no_grad;
    for (auto& p : student->parameters()) p.add_(0.5);
  }
  std::vector<Stage> stages = Partition(BlocksFromSequential(student), balance);
  Executor executor(schedule, stages, Partition(BlocksFromSequential(teacher), teacher_balance),
                    algorithm.get(), eo);
  for (int i = 0; i < run.steps; ++i) {
    executor.Step(batches[i], &batches[i + 1]);
    if (i == 0 && !started_marker.empty()) std::ofstream(started_marker) << "started\n";
  }
  std::vector<std::vector<torch::Tensor>> out(stages.size());
  for (size_t s = 0; s < stages.size(); ++s) {
    const int owner = schedule.placement[s][0];
    if (transport && transport->rank() != owner) continue;
    for (const torch::Tensor& p : stages[s]->parameters()) out[s].push_back(p.detach().cpu());
  }
  return out;
}

// Codistillation of two small ResNets through the engine, the models'
// exchanges the only traffic between their processes with one device per
// model.
TrainConfig CodistillConfig(const std::string& scheduler, int stages,
                            const std::string& exchange_every) {
  TrainConfig c;
  c.algorithm = "codistill";
  c.algorithm_options =
      "widths=4,8,blocks=1,1,models=2,alpha=0.5,temperature=2,exchange_every=" + exchange_every;
  c.scheduler = scheduler;
  c.stages = stages;
  c.balance = stages == 2 ? std::vector<int>{3, 1} : std::vector<int>{4};
  c.microbatches = 2;
  c.batch_size = 8;
  c.seed = 7;
  c.dtype = "float64";
  c.peer_timeout_seconds = 20;
  return c;
}

// A codistillation rank: trains TSPIPE_STEPS steps one at a time, writing
// the (world-mean) loss of each, then its model.
[[noreturn]] void CodistillChildMain(int rank) {
  try {
    TrainConfig c = CodistillConfig(Env("TSPIPE_SCHEDULER"), std::stoi(Env("TSPIPE_STAGES")),
                                    Env("TSPIPE_EXCHANGE_EVERY", "2"));
    c.world = World::Join("cpu", c.peer_timeout_seconds);
    Trainer trainer(c);
    std::ofstream losses(Env("TSPIPE_OUT") + "/losses" + std::to_string(rank) + ".txt");
    losses.precision(17);
    const int steps = std::stoi(Env("TSPIPE_STEPS", "5"));
    losses << trainer.Train(1) << "\n" << std::flush;
    if (!Env("TSPIPE_STARTED").empty()) std::ofstream(Env("TSPIPE_STARTED")) << "started\n";
    // The rest in one call: under the kill test the survivor then waits in
    // an exchange, not in the loss all-reduce that ends each call.
    if (steps > 1) {
      if (Env("TSPIPE_ONE_CALL") == "1") {
        trainer.Train(steps - 1);
      } else {
        for (int i = 1; i < steps; ++i) losses << trainer.Train(1) << "\n" << std::flush;
      }
    }
    // Only a process that holds a whole model may save it (one stage per
    // model); with two stages each process holds half of one.
    const int ranks_per_model = trainer.num_devices() / 2;
    if (ranks_per_model == 1) {
      trainer.SaveModel(Env("TSPIPE_OUT") + "/model" + std::to_string(rank) + ".pt", rank);
    } else {
      try {
        trainer.SaveModel(Env("TSPIPE_OUT") + "/half.pt", rank / ranks_per_model);
        std::fprintf(stderr, "rank %d: saved a model it holds only half of\n", rank);
        _exit(1);
      } catch (const std::logic_error&) {
      }
    }
    _exit(0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: error: %s\n", rank, e.what());
    std::fflush(stderr);
    _exit(1);
  }
}

// The worker side. Never returns.
[[noreturn]] void ChildMain() {
  const int rank = std::stoi(Env("RANK"));
  if (Env("TSPIPE_CODISTILL") == "1") CodistillChildMain(rank);
  try {
    C10dOptions o = C10dOptionsFromEnvironment();
    o.timeout = std::chrono::milliseconds(std::stoi(Env("TSPIPE_TIMEOUT_MS", "20000")));
    o.backend = Env("TSPIPE_C10D_BACKEND", "gloo");
    auto transport = std::make_shared<C10dTransport>(o);
    RunSpec run;
    run.scheduler = Env("TSPIPE_SCHEDULER");
    run.balance = Ints(Env("TSPIPE_BALANCE"));
    run.teacher_balance = Ints(Env("TSPIPE_TEACHER_BALANCE"));
    run.microbatches = std::stoi(Env("TSPIPE_MICROBATCHES", "4"));
    run.steps = std::stoi(Env("TSPIPE_STEPS", "3"));
    run.float64 = Env("TSPIPE_FLOAT64") == "1";
    run.blockwise = Env("TSPIPE_BLOCKWISE") == "1";
    run.devices = std::stoi(Env("TSPIPE_DEVICES", "0"));
    auto params = Train(run, transport, o.timeout, Env("TSPIPE_STARTED"));
    std::vector<torch::Tensor> flat;
    for (auto& stage : params) {
      for (auto& p : stage) flat.push_back(p);
    }
    torch::save(flat, Env("TSPIPE_OUT") + "/rank" + std::to_string(rank) + ".pt");
    std::fflush(stdout);
    _exit(0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: error: %s\n", rank, e.what());
    std::fflush(stderr);
    // Not exit(): destructors of a process group with a dead peer may wait.
    _exit(1);
  }
}

std::map<std::string, std::string> RunEnv(const RunSpec& run, const std::string& dir) {
  return {{"TSPIPE_SCHEDULER", run.scheduler},
          {"TSPIPE_FLOAT64", run.float64 ? "1" : "0"},
          {"TSPIPE_BLOCKWISE", run.blockwise ? "1" : "0"},
          {"TSPIPE_DEVICES", std::to_string(run.devices)},
          {"TSPIPE_BALANCE", FormatBalance(run.balance)},
          {"TSPIPE_TEACHER_BALANCE", FormatBalance(run.teacher_balance)},
          {"TSPIPE_MICROBATCHES", std::to_string(run.microbatches)},
          {"TSPIPE_STEPS", std::to_string(run.steps)},
          {"TSPIPE_OUT", dir}};
}

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
  transport->AllReduce(0, {0}, 0, 0, &sums, o.timeout, abort);
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
