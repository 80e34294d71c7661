// The c10d tests' worker: the runs they compare (KD, blockwise and
// codistillation of small ResNets, seeded) and the child side of the test
// binary, which the tests start as the ranks of a world
// (backends/c10d/test_processes.h).
#ifndef TSPIPE_BACKENDS_C10D_C10D_TEST_WORKER_H_
#define TSPIPE_BACKENDS_C10D_C10D_TEST_WORKER_H_

#include <torch/torch.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backends/c10d/c10d_transport.h"
#include "core/algorithm.h"
#include "core/scheduler.h"
#include "engine/trainer.h"
#include "models/resnet.h"

namespace tspipe {

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

// The KD student and teacher of the runs.
ResNetOptions Student();
ResNetOptions Teacher();

// The run's scheduler options and algorithm (KD, or blockwise distillation).
SchedulerOptions OptionsFor(const RunSpec& run, const Algorithm& algorithm);
std::unique_ptr<Algorithm> AlgorithmFor(const RunSpec& run);

// Trains KD with seeded models and data; `transport` null = single process
// with every rank on `device`, else this process's rank on the transport's
// device. Returns the student stages' parameters by stage, on the CPU (empty
// for stages this process does not run).
std::vector<std::vector<torch::Tensor>> Train(const RunSpec& run,
                                              std::shared_ptr<C10dTransport> transport,
                                              std::chrono::milliseconds timeout,
                                              const std::string& started_marker = "",
                                              torch::Device device = torch::kCPU);

// Codistillation of two small ResNets through the engine, the models'
// exchanges the only traffic between their processes with one device per
// model.
TrainConfig CodistillConfig(const std::string& scheduler, int stages,
                            const std::string& exchange_every);

// The environment from which a spawned rank reads `run` (ChildMain),
// writing its parameters into `dir`.
std::map<std::string, std::string> RunEnv(const RunSpec& run, const std::string& dir);

// The worker side, in a process started with TSPIPE_C10D_CHILD=1 and the
// launchers' variables: trains as one rank and writes its stages'
// parameters, or does what the failure tests ask of it. Never returns.
[[noreturn]] void ChildMain();

}  // namespace tspipe

#endif  // TSPIPE_BACKENDS_C10D_C10D_TEST_WORKER_H_
