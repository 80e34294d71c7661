#include "benchmarks/harness.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>

#include "backends/local/local_executor.h"
#include "core/algorithm.h"
#include "core/balance.h"
#include "core/file_util.h"
#include "core/idx.h"
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

torch::Device FirstDevice(const std::string& kind) {
  std::vector<torch::Device> d = RankDevices(kind, 1);
  return d.empty() ? torch::Device(torch::kCPU) : d[0];
}

std::string Join(const std::vector<int>& v) { return FormatBalance(v); }

ResNetOptions StudentShape(const TrainConfig& c) {
  ResNetOptions o;
  o.widths = c.widths;
  o.blocks_per_group = c.blocks_per_group;
  return o;
}

ResNetOptions TeacherShape(const TrainConfig& c) {
  ResNetOptions o;
  o.widths = c.teacher_widths;
  o.blocks_per_group = c.teacher_blocks_per_group;
  return o;
}

// Fashion-MNIST as normalised float tensors, loaded once per process and
// split (several trainers in one run share it).
struct ImageSet {
  torch::Tensor images;  // [N, 1, 28, 28], float, normalised.
  torch::Tensor labels;  // [N], int64.
};

std::shared_ptr<const ImageSet> LoadImages(const std::string& dir, bool train) {
  static std::mutex mu;
  static std::map<std::pair<std::string, bool>, std::shared_ptr<const ImageSet>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[{dir, train}];
  if (slot) return slot;
  FashionMnistSplit split = LoadFashionMnist(dir, train);
  const int64_t n = split.images.dims[0];
  auto set = std::make_shared<ImageSet>();
  torch::Tensor bytes =
      torch::from_blob(split.images.data.data(),
                       {n, 1, split.images.dims[1], split.images.dims[2]}, torch::kUInt8);
  // Mean and standard deviation of the Fashion-MNIST train pixels.
  set->images = (bytes.to(torch::kFloat32) / 255.0 - 0.2860) / 0.3530;
  set->labels = torch::from_blob(split.labels.data.data(), {n}, torch::kUInt8).to(torch::kInt64);
  slot = set;
  return slot;
}

// Times `fn` (warm-up runs first) and returns the median in ms.
template <typename Fn>
double MedianMs(const torch::Device& device, Fn fn) {
  const int warmup = 2, reps = 5;
  std::vector<double> ms;
  for (int i = 0; i < warmup + reps; ++i) {
    if (device.is_cuda()) torch::cuda::synchronize(device.index());
    auto start = std::chrono::steady_clock::now();
    fn();
    if (device.is_cuda()) torch::cuda::synchronize(device.index());
    double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                   .count();
    if (i >= warmup) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Per-block cost of `blocks` on `input`: forward + backward of a block in
// train mode, or forward only without gradients (teacher).
std::vector<double> ProfileBlocks(const BlockList& blocks, Activation input, bool with_backward,
                                  const torch::Device& device) {
  std::vector<double> costs;
  Activation x = ToDevice(input, device);
  for (const Block& block : blocks) {
    block->to(device);
    if (with_backward) {
      block->train();
      costs.push_back(MedianMs(device, [&] {
        Activation leaf;
        for (const torch::Tensor& t : x) {
          leaf.push_back(t.is_floating_point() ? t.detach().requires_grad_(true) : t);
        }
        Activation out = block->Forward(leaf);
        out[0].backward(torch::ones_like(out[0]));
      }));
    } else {
      block->eval();
      costs.push_back(MedianMs(device, [&] {
        torch::NoGradGuard no_grad;
        block->Forward(x);
      }));
    }
    torch::NoGradGuard no_grad;
    x = block->Forward(x);
  }
  return costs;
}

std::vector<double> StageCosts(const std::vector<double>& student, const std::vector<int>& sb,
                               const std::vector<double>& teacher, const std::vector<int>& tb) {
  std::vector<double> out(sb.size(), 0.0);
  size_t i = 0, j = 0;
  for (size_t s = 0; s < sb.size(); ++s) {
    for (int k = 0; k < sb[s]; ++k) out[s] += student[i++];
    if (!tb.empty()) {
      for (int k = 0; k < tb[s]; ++k) out[s] += teacher[j++];
    }
  }
  return out;
}

}  // namespace

class Trainer::Impl {
 public:
  explicit Impl(const TrainConfig& c) : config_(c) {
    if (c.batch_size < 1) {
      throw std::invalid_argument("batch size must be at least 1, got " +
                                  std::to_string(c.batch_size));
    }
    algorithm_ = AlgorithmRegistry::Global().Create(c.algorithm);
    torch::manual_seed(c.seed);
    model_ = MakeResNet(StudentShape(c));
    if (!c.initial_checkpoint.empty()) {
      Load(c.initial_checkpoint, "student", c.widths, c.blocks_per_group, *model_);
    }
    BlockList blocks = BlocksFromSequential(model_);
    std::vector<int> balance =
        c.balance.empty() ? EvenBalance(static_cast<int>(blocks.size()), c.stages) : c.balance;
    if (static_cast<int>(balance.size()) != c.stages) {
      throw std::invalid_argument("balance " + Join(balance) + " has " +
                                  std::to_string(balance.size()) + " entries for " +
                                  std::to_string(c.stages) + " stages");
    }
    stages_ = Partition(blocks, balance);
    std::vector<Stage> teacher_stages;
    if (algorithm_->workload().has_teacher) {
      teacher_ = MakeResNet(TeacherShape(c));
      if (!c.teacher_checkpoint.empty()) {
        Load(c.teacher_checkpoint, "teacher", c.teacher_widths, c.teacher_blocks_per_group,
             *teacher_);
      }
      BlockList tblocks = BlocksFromSequential(teacher_);
      std::vector<int> tbalance = c.teacher_balance.empty()
                                      ? EvenBalance(static_cast<int>(tblocks.size()), c.stages)
                                      : c.teacher_balance;
      if (static_cast<int>(tbalance.size()) != c.stages) {
        throw std::invalid_argument("teacher balance " + Join(tbalance) + " has " +
                                    std::to_string(tbalance.size()) + " entries for " +
                                    std::to_string(c.stages) + " stages");
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
    // Evaluation runs replica 0 of each stage where training left it.
    for (int s = 0; s < c.stages; ++s) {
      const int rank = schedule.placement[s][0];
      stage_devices_.push_back(eo.devices.empty() ? torch::Device(torch::kCPU) : eo.devices[rank]);
    }
    const double lr = c.learning_rate, momentum = c.momentum, wd = c.weight_decay;
    eo.make_optimizer = [lr, momentum, wd](std::vector<torch::Tensor> params) {
      return std::unique_ptr<torch::optim::Optimizer>(new torch::optim::SGD(
          params, torch::optim::SGDOptions(lr).momentum(momentum).weight_decay(wd)));
    };
    executor_ = std::make_unique<LocalExecutor>(std::move(schedule), stages_,
                                                std::move(teacher_stages), algorithm_.get(), eo);
    if (c.data == "synthetic") {
      for (int i = 0; i < std::max(1, c.num_batches); ++i) {
        synthetic_.push_back(Batch{{torch::randn({c.batch_size, 1, 28, 28})},
                                   {torch::randint(0, 10, {c.batch_size})}});
      }
    } else if (c.data == "fashion_mnist") {
      train_set_ = LoadImages(c.data_dir, /*train=*/true);
      train_size_ = train_set_->images.size(0);
      if (c.train_samples > 0) train_size_ = std::min<int64_t>(train_size_, c.train_samples);
      if (train_size_ < c.batch_size) {
        throw std::invalid_argument("the training set has " + std::to_string(train_size_) +
                                    " images, fewer than one batch of " +
                                    std::to_string(c.batch_size));
      }
      shuffle_.seed(static_cast<uint64_t>(c.seed));
    } else {
      throw std::invalid_argument("unknown data '" + c.data + "'; use synthetic or fashion_mnist");
    }
    // Fails here, not mid-run, when the micro-batches do not divide a batch.
    SplitBatch(Peek(), c.microbatches);
  }

  double Train(int steps) {
    std::vector<Batch> run;
    for (int i = 0; i < steps; ++i) run.push_back(Pop());
    return executor_->Run(run, &Peek()).back().loss;
  }

  double Evaluate(int limit) {
    std::shared_ptr<const ImageSet> test = LoadImages(config_.data_dir, /*train=*/false);
    int64_t n = test->images.size(0);
    if (limit > 0) n = std::min<int64_t>(n, limit);
    torch::NoGradGuard no_grad;
    for (Stage& s : stages_) s->eval();
    int64_t correct = 0;
    const int64_t chunk = 500;
    for (int64_t begin = 0; begin < n; begin += chunk) {
      const int64_t end = std::min(n, begin + chunk);
      Activation x{test->images.slice(0, begin, end)};
      for (size_t s = 0; s < stages_.size(); ++s) {
        x = stages_[s]->Forward(ToDevice(x, stage_devices_[s]));
      }
      torch::Tensor predicted = x[0].argmax(1).to(torch::kCPU);
      correct += predicted.eq(test->labels.slice(0, begin, end)).sum().item<int64_t>();
    }
    for (Stage& s : stages_) s->train();
    return static_cast<double>(correct) / static_cast<double>(n);
  }

  void SaveModel(const std::string& path) {
    torch::serialize::OutputArchive archive;
    model_->save(archive);
    std::ostringstream bytes;
    archive.save_to(bytes);
    WriteFileAtomically(path, bytes.str());
  }

  double MaxParameterDifference(const Impl& other) const {
    auto a = model_->parameters(), b = other.model_->parameters();
    if (a.size() != b.size()) throw std::invalid_argument("the two students differ in shape");
    double diff = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!a[i].sizes().equals(b[i].sizes())) {
        throw std::invalid_argument("the two students differ in shape");
      }
      diff = std::max(diff, (a[i].to(torch::kCPU) - b[i].to(torch::kCPU)).abs().max().item<double>());
    }
    return diff;
  }

  int num_devices() const { return devices_; }
  int batch_size() const { return config_.batch_size; }
  int64_t train_set_size() const { return train_size_; }
  double simulated_bubble() const { return bubble_; }

 private:
  // Loads a SaveModel checkpoint into `model` (the `what` of this run, with
  // the given shape), with messages that say which file and which shape.
  static void Load(const std::string& path, const std::string& what,
                   const std::vector<int>& widths, const std::vector<int>& blocks,
                   torch::nn::Module& model) {
    // Read first, so a missing file gets tspipe's message rather than the
    // archive's.
    std::string bytes;
    try {
      bytes = ReadFile(path);
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(what + " checkpoint: " + e.what() +
                               " (train and save one with //benchmarks:kd_accuracy)");
    }
    const std::string misfit = what + " checkpoint " + path + " does not fit the " + what +
                               " (widths " + Join(widths) + ", blocks " + Join(blocks) + "): ";
    // Module::load replaces tensors wholesale without comparing shapes, so
    // the shapes are checked here.
    std::map<std::string, std::vector<int64_t>> shapes;
    for (const auto& p : model.named_parameters()) shapes[p.key()] = p.value().sizes().vec();
    for (const auto& b : model.named_buffers()) shapes[b.key()] = b.value().sizes().vec();
    try {
      std::istringstream in(bytes);
      torch::serialize::InputArchive archive;
      archive.load_from(in, torch::Device(torch::kCPU));
      model.load(archive);
    } catch (const c10::Error& e) {
      throw std::invalid_argument(misfit + e.what_without_backtrace());
    }
    auto check = [&](const std::string& name, const torch::Tensor& t) {
      const std::vector<int64_t>& want = shapes.at(name);
      if (t.sizes().vec() != want) {
        throw std::invalid_argument(misfit + name + " has shape " + c10::str(t.sizes()) +
                                    " in the file but " + c10::str(c10::IntArrayRef(want)) +
                                    " in the model");
      }
    };
    for (const auto& p : model.named_parameters()) check(p.key(), p.value());
    for (const auto& b : model.named_buffers()) check(b.key(), b.value());
  }

  Batch Draw() {
    if (!synthetic_.empty()) return synthetic_[next_synthetic_++ % synthetic_.size()];
    if (order_.size() - position_ < static_cast<size_t>(config_.batch_size)) {
      // A new epoch (the incomplete tail of the last one is dropped).
      order_.resize(train_size_);
      std::iota(order_.begin(), order_.end(), 0);
      std::shuffle(order_.begin(), order_.end(), shuffle_);
      position_ = 0;
    }
    torch::Tensor index = torch::from_blob(order_.data() + position_, {config_.batch_size},
                                           torch::kInt64)
                              .clone();
    position_ += config_.batch_size;
    return Batch{{train_set_->images.index_select(0, index)},
                 {train_set_->labels.index_select(0, index)}};
  }

  // The executor looks one batch ahead (TSPipe's teacher forwards), so the
  // next batch is drawn before it is trained on.
  const Batch& Peek() {
    if (ahead_.empty()) ahead_.push_back(Draw());
    return ahead_.front();
  }

  Batch Pop() {
    Peek();
    Batch b = std::move(ahead_.front());
    ahead_.pop_front();
    return b;
  }

  TrainConfig config_;
  std::unique_ptr<Algorithm> algorithm_;
  torch::nn::Sequential model_{nullptr};
  torch::nn::Sequential teacher_{nullptr};
  std::vector<Stage> stages_;
  std::vector<torch::Device> stage_devices_;
  std::unique_ptr<LocalExecutor> executor_;
  std::vector<Batch> synthetic_;
  size_t next_synthetic_ = 0;
  std::shared_ptr<const ImageSet> train_set_;
  int64_t train_size_ = 0;
  std::mt19937_64 shuffle_;
  std::vector<int64_t> order_;
  size_t position_ = 0;
  std::deque<Batch> ahead_;
  int devices_ = 1;
  double bubble_ = 0;
};

Trainer::Trainer(const TrainConfig& config) : impl_(std::make_unique<Impl>(config)) {}
Trainer::~Trainer() = default;
double Trainer::Train(int steps) { return impl_->Train(steps); }
double Trainer::Evaluate(int limit) { return impl_->Evaluate(limit); }
void Trainer::SaveModel(const std::string& path) { impl_->SaveModel(path); }
double Trainer::MaxParameterDifference(const Trainer& other) const {
  return impl_->MaxParameterDifference(*other.impl_);
}
int Trainer::num_devices() const { return impl_->num_devices(); }
int Trainer::batch_size() const { return impl_->batch_size(); }
int64_t Trainer::train_set_size() const { return impl_->train_set_size(); }
double Trainer::simulated_bubble() const { return impl_->simulated_bubble(); }

BalancePlan PlanBalance(const TrainConfig& c) {
  if (c.microbatches < 1 || c.batch_size % c.microbatches != 0) {
    throw std::invalid_argument(std::to_string(c.microbatches) +
                                " micro-batches do not divide the batch of " +
                                std::to_string(c.batch_size) + " samples");
  }
  std::unique_ptr<Algorithm> algorithm = AlgorithmRegistry::Global().Create(c.algorithm);
  const torch::Device device = FirstDevice(c.device);
  // Profiling changes batch-norm statistics: use throw-away models.
  torch::manual_seed(c.seed);
  torch::nn::Sequential student = MakeResNet(StudentShape(c));
  Activation input{torch::randn({c.batch_size / c.microbatches, 1, 28, 28})};
  std::vector<double> scost = ProfileBlocks(BlocksFromSequential(student), input, true, device);
  std::vector<double> tcost;
  if (algorithm->workload().has_teacher) {
    torch::nn::Sequential teacher = MakeResNet(TeacherShape(c));
    tcost = ProfileBlocks(BlocksFromSequential(teacher), input, false, device);
  }
  // Also checks the stage count against both models, with the same message
  // as an explicit balance would get.
  std::vector<int> even_s = EvenBalance(static_cast<int>(scost.size()), c.stages);
  std::vector<int> even_t;
  if (!tcost.empty()) even_t = EvenBalance(static_cast<int>(tcost.size()), c.stages);
  BalanceResult best = SolveBalance(scost, tcost, c.stages);
  BalancePlan plan;
  plan.student = best.student;
  plan.teacher = best.teacher;
  plan.stage_ms = best.stage_costs;
  plan.even_stage_ms = StageCosts(scost, even_s, tcost, even_t);
  return plan;
}

void SetIntraOpThreads(int threads) { at::set_num_threads(threads); }

std::vector<std::string> SchedulerNames() { return SchedulerRegistry::Global().Names(); }
std::string DescribeSchedulers() { return SchedulerRegistry::Global().Describe(); }

}  // namespace tspipe
