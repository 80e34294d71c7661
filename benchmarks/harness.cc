#include "benchmarks/harness.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <limits>
#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>

#include "algorithms/augment.h"
#include "backends/c10d/c10d_transport.h"
#include "backends/local/local_executor.h"
#include "core/algorithm.h"
#include "core/balance.h"
#include "core/file_util.h"
#include "core/idx.h"
#include "core/scheduler.h"
#include "core/simulator.h"
#include "models/resnet.h"
#include "models/vit.h"

namespace tspipe {

namespace {

// Fails unless this binary can run on CUDA and sees `needed` GPUs.
void RequireGpus(const std::string& flag, int needed) {
#ifndef TSPIPE_WITH_CUDA
  throw std::invalid_argument("--device=" + flag +
                              ": this binary was built without CUDA; rebuild with "
                              "./tools/bazel run --config=cuda ...");
#endif
  if (!torch::cuda::is_available()) {
    throw std::invalid_argument("--device=" + flag + ", but no CUDA device is visible");
  }
  const int n = static_cast<int>(torch::cuda::device_count());
  if (n < needed) {
    throw std::invalid_argument("--device=" + flag + " needs " + std::to_string(needed) +
                                " GPUs, but only " + std::to_string(n) + " are visible" +
                                (needed > 1 ? " (--device=cuda:0 puts every rank on one GPU)"
                                            : ""));
  }
}

// --device: "cpu"; "cuda" (rank r on cuda:r); or "cuda:K" (every rank on
// cuda:K, to run a pipeline on one GPU). Empty = CPU for every rank.
std::vector<torch::Device> RankDevices(const std::string& kind, int ranks) {
  if (kind == "cpu") return {};
  if (kind == "cuda") {
    RequireGpus(kind, ranks);
    std::vector<torch::Device> devices;
    for (int r = 0; r < ranks; ++r) devices.emplace_back(torch::kCUDA, r);
    return devices;
  }
  if (kind.rfind("cuda:", 0) == 0) {
    int index = -1;
    try {
      size_t used = 0;
      index = std::stoi(kind.substr(5), &used);
      if (used != kind.size() - 5) index = -1;
    } catch (const std::exception&) {
    }
    if (index < 0) {
      throw std::invalid_argument("--device=" + kind + ": expected cuda:K with K a GPU index");
    }
    RequireGpus(kind, index + 1);
    return std::vector<torch::Device>(ranks, torch::Device(torch::kCUDA, index));
  }
  throw std::invalid_argument("unknown device '" + kind + "'; use cpu, cuda or cuda:K");
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

// BYOL and MoCo v3: an online network and its momentum copy on two views.
bool IsByol(const TrainConfig& c) { return c.algorithm == "byol" || c.algorithm == "mocov3"; }
// Blockwise distillation: one stage per block pair; --stages counts devices.
bool IsBlockwise(const TrainConfig& c) { return c.algorithm == "blockwise"; }

// SchedulerOptions::num_devices for `c`: blockwise runs spread their block
// stages over --stages devices, except the one-device baseline; other runs
// use one device per stage (0 = the scheduler's own count).
int DevicesFor(const TrainConfig& c) {
  return IsBlockwise(c) && c.scheduler != "sequential" ? c.stages : 0;
}

MocoNetOptions MocoShape(const TrainConfig& c) {
  MocoNetOptions o;
  o.encoder.patch = c.vit_patch;
  o.encoder.dim = c.vit_dim;
  o.encoder.depth = c.vit_depth;
  o.encoder.heads = c.vit_heads;
  o.hidden = c.byol_hidden;
  o.projection = c.byol_projection;
  return o;
}

ByolNetOptions ByolShape(const TrainConfig& c) {
  ByolNetOptions o;
  o.encoder = StudentShape(c);
  o.hidden = c.byol_hidden;
  o.projection = c.byol_projection;
  return o;
}

// The student and teacher of a run as block sequences. KD: two ResNets of
// their own shapes. BYOL: the online network and its target copy, which must
// be cut alike (the EMA zips them stage by stage); the predictor is the
// online network's extra last block.
struct Models {
  torch::nn::Sequential student{nullptr};
  torch::nn::Sequential teacher{nullptr};
  BlockList student_blocks;
  BlockList teacher_blocks;
};

Models BuildModels(const TrainConfig& c, bool has_teacher) {
  Models m;
  if (IsByol(c)) {
    m.student = c.algorithm == "mocov3" ? MakeMocoV3Online(MocoShape(c))
                                        : MakeByolOnline(ByolShape(c));
    m.teacher = MakeMomentumTarget(m.student);
    m.student_blocks = MultiViewBlocksFromSequential(m.student);
    m.teacher_blocks = MultiViewBlocksFromSequential(m.teacher);
    return m;
  }
  // Blockwise: the student mirrors the teacher block for block.
  m.student = IsBlockwise(c) ? MakeBlockwiseStudent(TeacherShape(c)) : MakeResNet(StudentShape(c));
  m.student_blocks = BlocksFromSequential(m.student);
  if (has_teacher) {
    m.teacher = MakeResNet(TeacherShape(c));
    m.teacher_blocks = BlocksFromSequential(m.teacher);
  }
  return m;
}

// BYOL's target balance: the online one without the predictor.
std::vector<int> ByolTargetBalance(std::vector<int> online) {
  if (online.back() < 2) {
    throw std::invalid_argument("balance " + FormatBalance(online) +
                                " leaves the last stage only the predictor; the last stage "
                                "needs the predictor and at least one more block");
  }
  online.back() -= 1;
  return online;
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

// Per-block cost of `blocks` on `input`, ms per micro-batch: the forward
// (train mode, or `train_mode` for forward-only teachers) and, with
// `backward`, the backward (forward + backward timed, minus the forward).
void ProfileBlocks(const BlockList& blocks, Activation input, bool with_backward,
                   bool train_mode, const torch::Device& device, std::vector<double>* forward,
                   std::vector<double>* backward) {
  Activation x = ToDevice(input, device);
  for (const Block& block : blocks) {
    block->to(device);
    block->train(with_backward || train_mode);
    auto leaves = [&] {
      Activation leaf;
      for (const torch::Tensor& t : x) {
        leaf.push_back(t.is_floating_point() ? t.detach().requires_grad_(with_backward) : t);
      }
      return leaf;
    };
    const double f = MedianMs(device, [&] {
      if (with_backward) {
        block->Forward(leaves());
      } else {
        torch::NoGradGuard no_grad;
        block->Forward(x);
      }
    });
    forward->push_back(f);
    if (with_backward) {
      const double fb = MedianMs(device, [&] {
        Activation out = block->Forward(leaves());
        std::vector<torch::Tensor> grads;
        for (const torch::Tensor& t : out) grads.push_back(torch::ones_like(t));
        torch::autograd::backward(out, grads);
      });
      backward->push_back(std::max(0.0, fb - f));
    }
    torch::NoGradGuard no_grad;
    x = block->Forward(x);
  }
}


// One c10d world per process, shared by every Trainer of the process (they
// run one after another): the rendezvous happens once.
// One process per rank: gloo on CPU; on GPUs NCCL, local rank i on cuda:i
// (torchrun's convention).
std::shared_ptr<C10dTransport> ProcessTransport(const TrainConfig& c) {
  if (c.device != "cpu" && c.device != "cuda") {
    throw std::invalid_argument("--backend=c10d takes --device=cpu or cuda (local rank i on "
                                "cuda:i), not " + c.device);
  }
  if (c.device == "cuda") RequireGpus(c.device, 1);
  const std::string backend = c.device == "cuda" ? "nccl" : "gloo";
  const int timeout_seconds = c.peer_timeout_seconds;
  static std::mutex mu;
  static std::shared_ptr<C10dTransport> transport;
  std::lock_guard<std::mutex> lock(mu);
  if (!transport) {
    C10dOptions o = C10dOptionsFromEnvironment();
    o.backend = backend;
    o.timeout = std::chrono::seconds(timeout_seconds);
    transport = std::make_shared<C10dTransport>(o);
  }
  if (transport->backend() != backend) {
    throw std::invalid_argument("this process's c10d world uses " + transport->backend() +
                                "; a trainer asked for " + backend);
  }
  return transport;
}

// What every rank of a c10d run must agree on, one setting per line.
std::string Fingerprint(const TrainConfig& c) {
  std::ostringstream out;
  out << "scheduler=" << c.scheduler << "\nalgorithm=" << c.algorithm << "\nstages=" << c.stages
      << "\nmicrobatches=" << c.microbatches << "\nbatch_size=" << c.batch_size
      << "\nbalance=" << Join(c.balance) << "\nwidths=" << Join(c.widths)
      << "\nblocks=" << Join(c.blocks_per_group) << "\nteacher_widths=" << Join(c.teacher_widths)
      << "\nteacher_blocks=" << Join(c.teacher_blocks_per_group)
      << "\nteacher_balance=" << Join(c.teacher_balance) << "\nupdate_policy=" << c.update_policy
      << "\nseed=" << c.seed << "\ndata=" << c.data << "\ndata_dir=" << c.data_dir
      << "\ntrain_samples=" << c.train_samples << "\nnum_batches=" << c.num_batches
      << "\nlearning_rate=" << c.learning_rate << "\nmomentum=" << c.momentum
      << "\nweight_decay=" << c.weight_decay << "\ntotal_steps=" << c.total_steps
      << "\nbyol_hidden=" << c.byol_hidden << "\nbyol_projection=" << c.byol_projection
      << "\nvit=" << c.vit_patch << "," << c.vit_dim << "," << c.vit_depth << "," << c.vit_heads
      << "\nteacher_checkpoint=" << c.teacher_checkpoint
      << "\ninitial_checkpoint=" << c.initial_checkpoint
      << "\nsteps_per_iteration=" << c.steps_per_iteration << "\n";
  return out.str();
}

}  // namespace

class Trainer::Impl {
 public:
  explicit Impl(const TrainConfig& config) : config_(config) {
    // Blockwise distillation trains each block pair on its own: every block
    // is a stage, and the scheduler spreads the stages over --stages
    // devices (pipebd by cost, dp as replicas).
    TrainConfig c = config;
    const int devices = DevicesFor(config);
    if (IsBlockwise(config)) {
      c.stages = static_cast<int>(MakeResNet(TeacherShape(c))->size());
      const std::vector<int> ones(c.stages, 1);
      for (const auto* cut : {&config.balance, &config.teacher_balance}) {
        if (!cut->empty() && *cut != ones) {
          throw std::invalid_argument(
              "blockwise distillation makes every block a stage; the scheduler chooses the "
              "blocks per device, so --balance/--teacher_balance do not apply (got " +
              Join(*cut) + ")");
        }
      }
      c.balance = c.teacher_balance = ones;
    }
    if (c.batch_size < 1) {
      throw std::invalid_argument("batch size must be at least 1, got " +
                                  std::to_string(c.batch_size));
    }
    algorithm_ = AlgorithmRegistry::Global().Create(c.algorithm);
    algorithm_->SetTrainingLength(c.total_steps);
    const bool has_teacher = algorithm_->workload().has_teacher;
    torch::manual_seed(c.seed);
    Models models = BuildModels(c, has_teacher);
    model_ = models.student;
    teacher_ = models.teacher;
    if (!c.initial_checkpoint.empty()) {
      Load(c.initial_checkpoint, "student", c.widths, c.blocks_per_group, *model_);
      if (IsByol(c)) CopyState(*MakeMomentumTarget(model_), *teacher_);
    }
    const BlockList& blocks = models.student_blocks;
    std::vector<int> balance = c.balance;
    if (balance.empty() && IsByol(c)) {
      // Even over the target's blocks; the predictor joins the last stage.
      balance = EvenBalance(static_cast<int>(models.teacher_blocks.size()), c.stages);
      balance.back() += 1;
    } else if (balance.empty()) {
      balance = EvenBalance(static_cast<int>(blocks.size()), c.stages);
    }
    if (static_cast<int>(balance.size()) != c.stages) {
      throw std::invalid_argument("balance " + Join(balance) + " has " +
                                  std::to_string(balance.size()) + " entries for " +
                                  std::to_string(c.stages) + " stages");
    }
    stages_ = Partition(blocks, balance);
    std::vector<Stage> teacher_stages;
    if (has_teacher) {
      if (!c.teacher_checkpoint.empty() && !IsByol(c)) {
        Load(c.teacher_checkpoint, "teacher", c.teacher_widths, c.teacher_blocks_per_group,
             *teacher_);
      }
      const BlockList& tblocks = models.teacher_blocks;
      std::vector<int> tbalance =
          IsByol(c) ? ByolTargetBalance(balance)
                    : (c.teacher_balance.empty()
                           ? EvenBalance(static_cast<int>(tblocks.size()), c.stages)
                           : c.teacher_balance);
      if (static_cast<int>(tbalance.size()) != c.stages) {
        throw std::invalid_argument("teacher balance " + Join(tbalance) + " has " +
                                    std::to_string(tbalance.size()) + " entries for " +
                                    std::to_string(c.stages) + " stages");
      }
      teacher_stages = Partition(tblocks, tbalance);
    }

    SchedulerOptions so;
    so.num_stages = c.stages;
    so.num_devices = devices;
    so.num_microbatches = c.microbatches;
    so.workload = algorithm_->workload();
    // Measured stage costs (PlanBalance), when given, let cost-driven
    // schedulers (TSPipe's list scheduling) plan with the real ones.
    so.costs.forward_per_stage = c.forward_ms;
    so.costs.backward_per_stage = c.backward_ms;
    so.costs.teacher_forward_per_stage = c.teacher_ms;
    Schedule schedule = BuildSchedule(c.scheduler, so);
    // Steady state: Train() runs iterations back to back, as simulated here.
    bubble_ = SimulateSteadyState(schedule, so.costs).bubble_fraction;
    placement_ = FormatPlacement(schedule);
    devices_ = schedule.num_ranks();

    LocalExecutorOptions eo;
    if (c.backend == "c10d") {
      std::shared_ptr<C10dTransport> transport = ProcessTransport(c);
      if (transport->world_size() != devices_) {
        throw std::invalid_argument(c.scheduler + " needs " + std::to_string(devices_) +
                                    " processes (one per rank), but WORLD_SIZE is " +
                                    std::to_string(transport->world_size()));
      }
      static int trainers = 0;
      // The schedule too: measured costs decide TSPipe's action order.
      std::string schedule_csv = ToCsv(schedule);
      std::replace(schedule_csv.begin(), schedule_csv.end(), '\n', ' ');
      transport->CheckSameConfig("trainer" + std::to_string(trainers++),
                                 Fingerprint(c) + "schedule=" + schedule_csv + "\n");
      rank_ = transport->rank();
      transport_ = transport;
      eo.transport = transport;
      eo.local_ranks = {rank_};
      eo.recv_timeout = std::chrono::seconds(c.peer_timeout_seconds);
      // Only this process's own rank runs here; the others' entries are
      // never used.
      eo.devices.assign(devices_, transport->device());
    } else if (c.backend == "local") {
      eo.devices = RankDevices(c.device, devices_);
    } else {
      throw std::invalid_argument("unknown backend '" + c.backend + "'; use local or c10d");
    }
    eo.update_policy = c.update_policy;
    std::vector<torch::Device> placed;  // Replica 0's device, for parameterless stages.
    for (int s = 0; s < c.stages; ++s) {
      const int rank = schedule.placement[s][0];
      placed.push_back(eo.devices.empty() ? torch::Device(torch::kCPU) : eo.devices[rank]);
    }
    const double lr = c.learning_rate, momentum = c.momentum, wd = c.weight_decay;
    eo.make_optimizer = [lr, momentum, wd](std::vector<torch::Tensor> params) {
      return std::unique_ptr<torch::optim::Optimizer>(new torch::optim::SGD(
          params, torch::optim::SGDOptions(lr).momentum(momentum).weight_decay(wd)));
    };
    executor_ = std::make_unique<LocalExecutor>(std::move(schedule), stages_,
                                                std::move(teacher_stages), algorithm_.get(), eo);
    // Evaluation runs each stage module where the executor put it.
    for (int s = 0; s < c.stages; ++s) {
      std::vector<torch::Tensor> params = stages_[s]->parameters();
      stage_devices_.push_back(params.empty() ? placed[s] : params[0].device());
    }
    views_ = IsByol(c) ? 2 : 0;
    augment_ = at::detail::createCPUGenerator(static_cast<uint64_t>(c.seed) + 1);
    if (c.data == "synthetic") {
      for (int i = 0; i < std::max(1, c.num_batches); ++i) {
        synthetic_.push_back(WithViews(Batch{{torch::randn({c.batch_size, 1, 28, 28})},
                                             {torch::randint(0, 10, {c.batch_size})}}));
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
    double loss = executor_->Run(run, &Peek()).back().loss;
    if (transport_) {
      // Each process knows only its own ranks' share of the loss: the last
      // stage's rank holds all of it in a pipeline (the others 0), each
      // replica its weighted part under dp. The sum is the mini-batch loss.
      std::vector<int> world(transport_->world_size());
      std::iota(world.begin(), world.end(), 0);
      std::vector<torch::Tensor> sum{
          torch::tensor({loss}, torch::kFloat64).to(transport_->device())};
      std::atomic<bool> never{false};
      transport_->AllReduce(rank_, world, /*stage=*/-1, executor_->steps_done(), &sum,
                            std::chrono::seconds(config_.peer_timeout_seconds), never);
      loss = sum[0].item<double>();
    }
    return loss;
  }

  double Evaluate(int limit) {
    if (config_.backend != "local") {
      throw std::logic_error("evaluation needs the single-process backend (each c10d process "
                             "trains only its own stages)");
    }
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

  double LinearEval(int train_limit, int test_limit) {
    if (config_.backend != "local") {
      throw std::logic_error("evaluation needs the single-process backend (each c10d process "
                             "trains only its own stages)");
    }
    if (!IsByol(config_)) {
      throw std::logic_error("linear evaluation needs a self-supervised encoder (byol, mocov3), not " +
                             config_.algorithm);
    }
    const int encoder_blocks = config_.algorithm == "mocov3"
                                   ? MocoEncoderBlocks(MocoShape(config_))
                                   : ByolEncoderBlocks(ByolShape(config_));
    auto features = [&](bool train, int limit) {
      std::shared_ptr<const ImageSet> set = LoadImages(config_.data_dir, train);
      int64_t n = set->images.size(0);
      if (limit > 0) n = std::min<int64_t>(n, limit);
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> out;
      for (int64_t begin = 0; begin < n; begin += 500) {
        torch::Tensor x = set->images.slice(0, begin, std::min(n, begin + 500));
        int i = 0;
        for (torch::nn::AnyModule& child : *model_) {
          if (i++ == encoder_blocks) break;
          // Blocks sit on their stage's device.
          auto params = child.ptr()->parameters();
          if (!params.empty()) x = x.to(params[0].device());
          x = child.forward<torch::Tensor>(x);
        }
        out.push_back(x.to(torch::kCPU));
      }
      return std::make_pair(torch::cat(out), set->labels.slice(0, 0, n));
    };
    model_->eval();
    auto [train_x, train_y] = features(true, train_limit);
    auto [test_x, test_y] = features(false, test_limit);
    model_->train();
    // Standardise with the train statistics, then multinomial logistic
    // regression by full-batch Adam (a convex problem; 300 steps converge on
    // these feature sizes).
    torch::Tensor mean = train_x.mean(0, true), std = train_x.std(0, true, true) + 1e-6;
    train_x = (train_x - mean) / std;
    test_x = (test_x - mean) / std;
    torch::nn::Linear classifier(train_x.size(1), 10);
    torch::optim::Adam opt(classifier->parameters(), torch::optim::AdamOptions(0.05));
    for (int it = 0; it < 300; ++it) {
      torch::Tensor loss =
          torch::nn::functional::cross_entropy(classifier(train_x), train_y) +
          1e-4 * classifier->weight.pow(2).sum();
      opt.zero_grad();
      loss.backward();
      opt.step();
    }
    torch::NoGradGuard no_grad;
    torch::Tensor predicted = classifier(test_x).argmax(1);
    return predicted.eq(test_y).to(torch::kFloat64).mean().item<double>();
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
  const std::string& placement() const { return placement_; }
  int rank() const { return rank_; }
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
    return WithViews(Batch{{train_set_->images.index_select(0, index)},
                           {train_set_->labels.index_select(0, index)}});
  }

  // Self-supervised algorithms train on augmented views instead of images.
  Batch WithViews(Batch b) {
    if (views_ == 0) return b;
    Activation views;
    for (int v = 0; v < views_; ++v) views.push_back(Augment(b.inputs[0], augment_options_, augment_));
    b.inputs = std::move(views);
    return b;
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
  int views_ = 0;
  AugmentOptions augment_options_;
  at::Generator augment_;
  int devices_ = 1;
  std::string placement_;
  int rank_ = 0;
  // The c10d world this trainer's process belongs to; null when local.
  std::shared_ptr<C10dTransport> transport_;
  double bubble_ = 0;
};

Trainer::Trainer(const TrainConfig& config) : impl_(std::make_unique<Impl>(config)) {}
Trainer::~Trainer() = default;
double Trainer::Train(int steps) { return impl_->Train(steps); }
double Trainer::Evaluate(int limit) { return impl_->Evaluate(limit); }
void Trainer::SaveModel(const std::string& path) { impl_->SaveModel(path); }
double Trainer::LinearEval(int train_limit, int test_limit) {
  return impl_->LinearEval(train_limit, test_limit);
}
double Trainer::MaxParameterDifference(const Trainer& other) const {
  return impl_->MaxParameterDifference(*other.impl_);
}
int Trainer::num_devices() const { return impl_->num_devices(); }
const std::string& Trainer::placement() const { return impl_->placement(); }
int Trainer::rank() const { return impl_->rank(); }
int Trainer::batch_size() const { return impl_->batch_size(); }
int64_t Trainer::train_set_size() const { return impl_->train_set_size(); }
double Trainer::simulated_bubble() const { return impl_->simulated_bubble(); }

double Trainer::MeasureSamplesPerSecond(int steps) {
  Train(steps);  // Warm-up (and the teacher prologue).
  const auto start = std::chrono::steady_clock::now();
  Train(steps);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return steps * batch_size() / secs;
}

namespace {

std::string EncodeCosts(const BlockCosts& c) {
  std::ostringstream out;
  out.precision(17);
  for (const std::vector<double>* v : {&c.student_forward, &c.student_backward, &c.teacher_forward}) {
    out << v->size();
    for (double x : *v) out << ' ' << x;
    out << '\n';
  }
  return out.str();
}

BlockCosts DecodeCosts(const std::string& text) {
  std::istringstream in(text);
  BlockCosts c;
  for (std::vector<double>* v : {&c.student_forward, &c.student_backward, &c.teacher_forward}) {
    size_t n = 0;
    in >> n;
    v->resize(n);
    for (double& x : *v) in >> x;
  }
  return c;
}

BlockCosts Measure(const TrainConfig& c) {
  if (c.microbatches < 1 || c.batch_size % c.microbatches != 0) {
    throw std::invalid_argument(std::to_string(c.microbatches) +
                                " micro-batches do not divide the batch of " +
                                std::to_string(c.batch_size) + " samples");
  }
  std::unique_ptr<Algorithm> algorithm = AlgorithmRegistry::Global().Create(c.algorithm);
  const torch::Device device = FirstDevice(c.device);
  // Profiling changes batch-norm statistics: use throw-away models.
  torch::manual_seed(c.seed);
  Models models = BuildModels(c, algorithm->workload().has_teacher);
  Activation input;
  for (int v = 0; v < (IsByol(c) ? 2 : 1); ++v) {
    input.push_back(torch::randn({c.batch_size / c.microbatches, 1, 28, 28}));
  }
  BlockCosts costs;
  ProfileBlocks(models.student_blocks, input, true, true, device, &costs.student_forward,
                &costs.student_backward);
  if (algorithm->workload().has_teacher) {
    ProfileBlocks(models.teacher_blocks, input, false, algorithm->TeacherInTrainMode(), device,
                  &costs.teacher_forward, nullptr);
  }
  return costs;
}

// Every way to cut `n` blocks into `parts` non-empty runs.
void Compositions(int n, int parts, std::vector<int>* prefix, std::vector<std::vector<int>>* out) {
  if (parts == 1) {
    prefix->push_back(n);
    out->push_back(*prefix);
    prefix->pop_back();
    return;
  }
  for (int first = 1; first <= n - parts + 1; ++first) {
    prefix->push_back(first);
    Compositions(n - first, parts - 1, prefix, out);
    prefix->pop_back();
  }
}

std::vector<std::vector<int>> Compositions(int n, int parts) {
  std::vector<std::vector<int>> out;
  std::vector<int> prefix;
  if (parts >= 1 && parts <= n) Compositions(n, parts, &prefix, &out);
  return out;
}

std::vector<double> StageSums(const std::vector<double>& blocks, const std::vector<int>& balance) {
  std::vector<double> out;
  size_t i = 0;
  for (int count : balance) {
    double sum = 0;
    for (int k = 0; k < count; ++k) sum += blocks.at(i++);
    out.push_back(sum);
  }
  return out;
}

// The cuts with their stage costs and the simulated steady-state time per
// iteration of `scheduler` with them.
BalancePlan PlanFor(const TrainConfig& c, const Workload& workload, const BlockCosts& costs,
                    const std::vector<int>& student, const std::vector<int>& teacher) {
  BalancePlan plan;
  plan.student = student;
  plan.teacher = teacher;
  plan.forward_ms = StageSums(costs.student_forward, student);
  plan.backward_ms = StageSums(costs.student_backward, student);
  if (!teacher.empty()) plan.teacher_ms = StageSums(costs.teacher_forward, teacher);
  CostModel m;
  m.forward_per_stage = plan.forward_ms;
  m.backward_per_stage = plan.backward_ms;
  m.teacher_forward_per_stage = plan.teacher_ms;
  SchedulerOptions so;
  so.num_stages = static_cast<int>(student.size());
  so.num_devices = DevicesFor(c);
  so.num_microbatches = c.microbatches;
  so.workload = workload;
  so.costs = m;
  plan.period_ms = SimulateSteadyState(BuildSchedule(c.scheduler, so), m).period;
  return plan;
}

}  // namespace

BlockCosts MeasureBlockCosts(const TrainConfig& c) {
  if (c.backend != "c10d") return Measure(c);
  // Timings differ between processes; rank 0 measures for everyone.
  std::shared_ptr<C10dTransport> transport = ProcessTransport(c);
  static int measurements = 0;
  const std::string name = "costs" + std::to_string(measurements++);
  return DecodeCosts(
      transport->ShareFromRankZero(name, transport->rank() == 0 ? EncodeCosts(Measure(c)) : ""));
}

std::vector<BalancePlan> PlanBalances(const TrainConfig& c, const BlockCosts& costs,
                                      int max_plans, double tolerance) {
  const Workload workload = AlgorithmRegistry::Global().Create(c.algorithm)->workload();
  if (IsBlockwise(c)) {
    // Nothing to cut: a stage per block. The measured block costs let the
    // scheduler place the blocks (pipebd's split by cost).
    const std::vector<int> ones(costs.student_forward.size(), 1);
    BalancePlan p = PlanFor(c, workload, costs, ones, ones);
    p.even_period_ms = p.period_ms;
    return {p};
  }
  const bool siamese = IsByol(c);
  const bool teacher = workload.has_teacher;
  // Candidates: siamese networks are cut alike (target = online minus the
  // predictor); otherwise every student cut with every teacher cut.
  const int units = siamese ? static_cast<int>(costs.teacher_forward.size())
                            : static_cast<int>(costs.student_forward.size());
  // The stage count check, with the message an explicit balance gets.
  std::vector<int> even_s = EvenBalance(units, c.stages), even_t;
  if (teacher && !siamese) {
    even_t = EvenBalance(static_cast<int>(costs.teacher_forward.size()), c.stages);
  }
  std::vector<std::pair<std::vector<int>, std::vector<int>>> candidates;
  auto add = [&](std::vector<int> s, std::vector<int> t) {
    if (siamese) {
      t = s;
      s.back() += 1;
    }
    candidates.emplace_back(std::move(s), std::move(t));
  };
  std::vector<std::vector<int>> student_cuts = Compositions(units, c.stages);
  std::vector<std::vector<int>> teacher_cuts;
  if (teacher && !siamese) {
    // A teacher cut given by the caller stays; only the student's is chosen.
    teacher_cuts = c.teacher_balance.empty()
                       ? Compositions(static_cast<int>(costs.teacher_forward.size()), c.stages)
                       : std::vector<std::vector<int>>{c.teacher_balance};
  }
  constexpr size_t kMaxCandidates = 20000;
  if (teacher_cuts.empty()) {
    if (student_cuts.size() <= kMaxCandidates) {
      for (const auto& s : student_cuts) add(s, {});
    }
  } else if (student_cuts.size() * teacher_cuts.size() <= kMaxCandidates) {
    for (const auto& s : student_cuts) {
      for (const auto& t : teacher_cuts) add(s, t);
    }
  }
  if (candidates.empty()) {
    // Too many to simulate: the cut that balances total work per stage.
    std::vector<double> total(costs.student_forward.size());
    for (size_t i = 0; i < total.size(); ++i) {
      total[i] = costs.student_forward[i] + costs.student_backward[i];
    }
    if (siamese) {
      std::vector<double> u(units);
      for (int i = 0; i < units; ++i) u[i] = total[i] + costs.teacher_forward[i];
      u.back() += total.back();
      add(SolveBalance(u, {}, c.stages).student, {});
    } else {
      BalanceResult r = SolveBalance(total, teacher ? costs.teacher_forward : std::vector<double>{},
                                     c.stages);
      add(r.student, r.teacher);
    }
  }
  std::vector<BalancePlan> plans;
  for (const auto& [s, t] : candidates) plans.push_back(PlanFor(c, workload, costs, s, t));
  // Fastest first; equal periods keep enumeration order (deterministic).
  std::stable_sort(plans.begin(), plans.end(), [](const BalancePlan& a, const BalancePlan& b) {
    return a.period_ms < b.period_ms;
  });
  if (siamese) {
    even_t = even_s;
    even_s.back() += 1;
  }
  const double even = PlanFor(c, workload, costs, even_s, even_t).period_ms;
  std::vector<BalancePlan> out;
  for (BalancePlan& p : plans) {
    if (static_cast<int>(out.size()) >= std::max(1, max_plans)) break;
    if (!out.empty() && p.period_ms > out.front().period_ms * (1 + tolerance)) break;
    p.even_period_ms = even;
    out.push_back(std::move(p));
  }
  return out;
}

BalancePlan PlanBalance(const TrainConfig& config, const BlockCosts& costs) {
  return PlanBalances(config, costs, 1, 0).front();
}

BalancePlan PlanBalance(const TrainConfig& config) {
  return PlanBalance(config, MeasureBlockCosts(config));
}

void ApplyPlan(const BalancePlan& plan, TrainConfig* config) {
  config->balance = plan.student;
  config->teacher_balance = plan.teacher;
  config->forward_ms = plan.forward_ms;
  config->backward_ms = plan.backward_ms;
  config->teacher_ms = plan.teacher_ms;
}

std::string DescribePlan(const BalancePlan& plan) {
  std::ostringstream out;
  out.precision(4);
  out << "student " << FormatBalance(plan.student);
  if (!plan.teacher.empty()) out << ", teacher " << FormatBalance(plan.teacher);
  out << "; simulated " << plan.period_ms << " ms/iteration (even cut: " << plan.even_period_ms
      << ")";
  return out.str();
}

void SetIntraOpThreads(int threads) { at::set_num_threads(threads); }

std::vector<std::string> SchedulerNames() { return SchedulerRegistry::Global().Names(); }
std::string DescribeSchedulers() { return SchedulerRegistry::Global().Describe(); }

}  // namespace tspipe
