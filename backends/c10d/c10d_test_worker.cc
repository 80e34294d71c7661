#include "backends/c10d/c10d_test_worker.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "algorithms/blockwise.h"
#include "algorithms/kd.h"
#include "backends/c10d/test_processes.h"
#include "backends/executor.h"
#include "core/balance.h"

namespace tspipe {
namespace {

std::vector<int> Ints(const std::string& text) {
  std::vector<int> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoi(item));
  return out;
}

}  // namespace

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
                                              const std::string& started_marker,
                                              torch::Device device) {
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

namespace {

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

}  // namespace

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

}  // namespace tspipe
