#include "benchmarks/harness.h"

#include <torch/torch.h>

#include <stdexcept>

#include "backends/local/local_executor.h"
#include "core/algorithm.h"
#include "core/scheduler.h"
#include "core/simulator.h"
#include "models/resnet.h"


namespace tspipe {

namespace {

std::vector<torch::Device> RankDevices(const std::string& kind, int ranks) {
  if (kind == "cpu") return {};
  if (kind != "cuda") {
    throw std::invalid_argument("unknown device kind '" + kind + "'; use cpu or cuda");
  }
#ifndef TSPIPE_WITH_CUDA
  throw std::invalid_argument(
      "this binary was built without CUDA; rebuild with ./tools/bazel run --config=cuda ...");
#endif
  if (!torch::cuda::is_available()) {
    throw std::invalid_argument("--device=cuda, but no CUDA device is visible");
  }
  const int n = static_cast<int>(torch::cuda::device_count());
  if (n < ranks) {
    throw std::invalid_argument("the schedule needs " + std::to_string(ranks) +
                                " GPUs (one per rank), but only " + std::to_string(n) +
                                " are visible");
  }
  std::vector<torch::Device> devices;
  for (int r = 0; r < ranks; ++r) devices.emplace_back(torch::kCUDA, r);
  return devices;
}

}  // namespace

class Trainer::Impl {
 public:
  explicit Impl(const TrainConfig& c) : config_(c) {
    if (c.batch_size < 1) {
      throw std::invalid_argument("batch size must be at least 1, got " +
                                  std::to_string(c.batch_size));
    }
    if (c.microbatches < 1 || c.batch_size % c.microbatches != 0) {
      throw std::invalid_argument(std::to_string(c.microbatches) +
                                  " micro-batches do not divide the batch of " +
                                  std::to_string(c.batch_size) + " samples");
    }
    algorithm_ = AlgorithmRegistry::Global().Create(c.algorithm);
    torch::manual_seed(c.seed);
    ResNetOptions ro;
    ro.widths = c.widths;
    ro.blocks_per_group = c.blocks_per_group;
    model_ = MakeResNet(ro);
    BlockList blocks = BlocksFromSequential(model_);
    std::vector<int> balance =
        c.balance.empty() ? EvenBalance(static_cast<int>(blocks.size()), c.stages) : c.balance;
    if (static_cast<int>(balance.size()) != c.stages) {
      throw std::invalid_argument("balance has " + std::to_string(balance.size()) +
                                  " entries for " + std::to_string(c.stages) + " stages");
    }
    std::vector<Stage> stages = Partition(blocks, balance);
    std::vector<Stage> teacher_stages;
    if (algorithm_->workload().has_teacher) {
      ResNetOptions to;
      to.widths = c.teacher_widths;
      to.blocks_per_group = c.teacher_blocks_per_group;
      teacher_ = MakeResNet(to);
      BlockList tblocks = BlocksFromSequential(teacher_);
      std::vector<int> tbalance = c.teacher_balance.empty()
                                      ? EvenBalance(static_cast<int>(tblocks.size()), c.stages)
                                      : c.teacher_balance;
      if (static_cast<int>(tbalance.size()) != c.stages) {
        throw std::invalid_argument("teacher balance has " + std::to_string(tbalance.size()) +
                                    " entries for " + std::to_string(c.stages) + " stages");
      }
      teacher_stages = Partition(tblocks, tbalance);
    }

    SchedulerOptions so;
    so.num_stages = c.stages;
    so.num_microbatches = c.microbatches;
    so.workload = algorithm_->workload();
    Schedule schedule = BuildSchedule(c.scheduler, so);
    // Steady state: Train() runs iterations back to back, as simulated here.
    bubble_ = SimulateSteadyState(schedule, CostModel{}).bubble_fraction;
    devices_ = schedule.num_ranks();

    LocalExecutorOptions eo;
    eo.devices = RankDevices(c.device, devices_);
    const double lr = c.learning_rate, momentum = c.momentum;
    eo.make_optimizer = [lr, momentum](std::vector<torch::Tensor> params) {
      return std::unique_ptr<torch::optim::Optimizer>(
          new torch::optim::SGD(params, torch::optim::SGDOptions(lr).momentum(momentum)));
    };
    executor_ = std::make_unique<LocalExecutor>(std::move(schedule), std::move(stages),
                                                std::move(teacher_stages), algorithm_.get(), eo);
    for (int i = 0; i < std::max(1, c.num_batches); ++i) {
      batches_.push_back(Batch{{torch::randn({c.batch_size, 1, 28, 28})},
                               {torch::randint(0, 10, {c.batch_size})}});
    }
  }

  double Step() { return Train(1); }

  double Train(int steps) {
    std::vector<Batch> run;
    for (int i = 0; i < steps; ++i) run.push_back(batches_[(next_ + i) % batches_.size()]);
    next_ += steps;
    const Batch& after = batches_[next_ % batches_.size()];
    return executor_->Run(run, &after).back().loss;
  }

  int num_devices() const { return devices_; }
  int batch_size() const { return config_.batch_size; }
  double simulated_bubble() const { return bubble_; }

 private:
  TrainConfig config_;
  std::unique_ptr<Algorithm> algorithm_;
  torch::nn::Sequential model_{nullptr};
  torch::nn::Sequential teacher_{nullptr};
  std::unique_ptr<LocalExecutor> executor_;
  std::vector<Batch> batches_;
  size_t next_ = 0;
  int devices_ = 1;
  double bubble_ = 0;
};

Trainer::Trainer(const TrainConfig& config) : impl_(std::make_unique<Impl>(config)) {}
Trainer::~Trainer() = default;
double Trainer::Step() { return impl_->Step(); }
double Trainer::Train(int steps) { return impl_->Train(steps); }
int Trainer::num_devices() const { return impl_->num_devices(); }
int Trainer::batch_size() const { return impl_->batch_size(); }
double Trainer::simulated_bubble() const { return impl_->simulated_bubble(); }

void SetIntraOpThreads(int threads) {
  at::set_num_threads(threads);
}

std::vector<std::string> SchedulerNames() { return SchedulerRegistry::Global().Names(); }
std::string DescribeSchedulers() { return SchedulerRegistry::Global().Describe(); }

}  // namespace tspipe
