// A training run behind a torch-free interface, so that benchmark mains (which
// read flags and use glog, whose macros clash with c10's) stay light.
#ifndef TSPIPE_BENCHMARKS_HARNESS_H_
#define TSPIPE_BENCHMARKS_HARNESS_H_

#include <memory>
#include <string>
#include <vector>

namespace tspipe {

struct TrainConfig {
  std::string scheduler = "gpipe";
  std::string algorithm = "supervised";
  int stages = 2;
  int microbatches = 4;
  int batch_size = 64;
  // Blocks per stage; empty = as even as possible (see PlanBalance for the
  // measured alternative).
  std::vector<int> balance;
  // Student ResNet shape (see models/resnet.h).
  std::vector<int> widths = {16, 32, 64};
  std::vector<int> blocks_per_group = {1, 1, 1};
  // Teacher ResNet (algorithms with a teacher); larger than the student.
  std::vector<int> teacher_widths = {32, 64, 128};
  std::vector<int> teacher_blocks_per_group = {2, 2, 2};
  std::vector<int> teacher_balance;  // Empty = as even as possible.
  // Teacher weights saved by Trainer::SaveModel of a run whose student had
  // the teacher's shape; empty = a randomly initialised teacher (fine for
  // throughput, useless for accuracy).
  std::string teacher_checkpoint;
  // Initial student weights (same format); empty = random initialisation.
  std::string initial_checkpoint;
  // Projector/predictor sizes of "byol" (encoder: the student ResNet above)
  // and "mocov3" (encoder: the ViT below).
  int byol_hidden = 256;
  int byol_projection = 64;
  int vit_patch = 4;
  int vit_dim = 64;
  int vit_depth = 4;
  int vit_heads = 4;
  // Update policy for momentum teachers ("sync", "tspipe_delayed"); empty =
  // the one the scheduler's action order gives.
  std::string update_policy;
  // Measured per-stage costs (ms per micro-batch) for schedulers that plan
  // with costs (see BalancePlan); empty = unit costs.
  std::vector<double> forward_ms;
  std::vector<double> backward_ms;
  std::vector<double> teacher_ms;
  // Total optimizer steps planned (BYOL's momentum ramp); 0 = unknown.
  int total_steps = 0;
  double learning_rate = 0.05;
  double momentum = 0.9;
  double weight_decay = 0;
  int seed = 0;
  // "synthetic": random tensors, `num_batches` distinct batches generated up
  // front and cycled (so data generation is not timed). "fashion_mnist": the
  // train split from `data_dir`, reshuffled every epoch with `seed`.
  std::string data = "synthetic";
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  // Use only the first N training images (0 = all): quick runs and tests.
  int train_samples = 0;
  int num_batches = 4;
  // "cpu" (every rank on the CPU; a rank is a thread) or "cuda" (rank r on
  // cuda:r; needs a --config=cuda build and one GPU per rank).
  std::string device = "cpu";
  // Steps per Train() call in benchmarks (see Trainer::Train).
  int steps_per_iteration = 4;
  // "local": every rank a thread of this process. "c10d": this process is
  // one rank (torchrun's RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), the
  // others are processes too, tensors go through torch c10d (gloo).
  std::string backend = "local";
  // c10d: rendezvous deadline, and how long a rank waits for a peer before
  // failing with a message naming it.
  int peer_timeout_seconds = 60;
};

// Trains a student (and runs its teacher) on 28x28 single-channel images with
// 10 classes, under the configured scheduler, on the single-process backend
// or as one rank of a c10d run (TrainConfig::backend).
class Trainer {
 public:
  // Throws std::invalid_argument (or std::runtime_error for missing data or
  // checkpoint files) naming the problem: unknown scheduler, bad balance,
  // micro-batches not dividing the batch, a checkpoint of another shape...
  explicit Trainer(const TrainConfig& config);
  ~Trainer();

  // `steps` optimizer steps back to back (no barrier between iterations, the
  // next batch's teacher forwards overlapping); returns the last loss.
  double Train(int steps);
  // Student top-1 accuracy on the Fashion-MNIST test split (eval mode: batch
  // norm running statistics), or on the first `limit` test images if > 0.
  double Evaluate(int limit = 0);
  // Self-supervised runs (byol): top-1 test accuracy of a linear classifier
  // trained on the frozen encoder's features (eval mode, no augmentation) of
  // the train split (first `train_limit` images if > 0), evaluated on the
  // test split (first `test_limit` if > 0). Throws std::logic_error for
  // algorithms without an encoder.
  double LinearEval(int train_limit = 0, int test_limit = 0);
  // Writes the student's parameters and buffers atomically (a temporary file
  // renamed over `path`), loadable as TrainConfig::teacher_checkpoint.
  void SaveModel(const std::string& path);
  // max |a - b| over the two students' parameters (same shapes required).
  double MaxParameterDifference(const Trainer& other) const;
  int num_devices() const;
  // The ranks holding each stage, "0;0;1|2" (FormatPlacement).
  const std::string& placement() const;
  // This process's rank under c10d (0 for the local backend).
  int rank() const;
  int batch_size() const;
  int64_t train_set_size() const;
  // Trains `steps` steps to warm up, then times `steps` more: samples/s.
  double MeasureSamplesPerSecond(int steps);
  // Steady-state bubble of this run's schedule under the simulator with
  // forward 1, backward 2, teacher forward 1.
  double simulated_bubble() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Measured cost of every block, ms per micro-batch on the first device.
struct BlockCosts {
  std::vector<double> student_forward;   // Train mode.
  std::vector<double> student_backward;
  std::vector<double> teacher_forward;   // Empty without a teacher.
};

// Times every block of the configured student (forward, backward) and
// teacher (forward) on one micro-batch. Under c10d rank 0 measures and every
// rank gets its figures.
BlockCosts MeasureBlockCosts(const TrainConfig& config);

// A student/teacher partition for config.scheduler, chosen by simulating
// the scheduler's steady state for every candidate cut with these costs
// (core/simulator.h) and keeping the fastest; with more than 20000
// candidates, the cut that balances total work per stage (core/balance.h).
struct BalancePlan {
  std::vector<int> student;
  std::vector<int> teacher;  // Empty without a teacher.
  // Stage costs of that cut (ms per micro-batch): put them in TrainConfig's
  // forward_ms/backward_ms/teacher_ms so the scheduler plans with them.
  std::vector<double> forward_ms;
  std::vector<double> backward_ms;
  std::vector<double> teacher_ms;
  // Simulated ms per iteration of this cut, and of the even cut.
  double period_ms = 0;
  double even_period_ms = 0;
};
BalancePlan PlanBalance(const TrainConfig& config, const BlockCosts& costs);
// The `max_plans` fastest cuts whose simulated period is within `tolerance`
// (a fraction) of the best one, fastest first: the simulator misses some
// real costs, so callers may time these and keep the fastest in practice.
std::vector<BalancePlan> PlanBalances(const TrainConfig& config, const BlockCosts& costs,
                                      int max_plans, double tolerance);
// PlanBalance(config, MeasureBlockCosts(config)).
BalancePlan PlanBalance(const TrainConfig& config);
// Puts the plan's cuts and stage costs into `config`.
void ApplyPlan(const BalancePlan& plan, TrainConfig* config);
// "student 2,3, teacher 4,4; simulated 130 ms/iteration (even cut: 161)".
std::string DescribePlan(const BalancePlan& plan);

// Threads each device (rank) may use for intra-op parallelism. On CPU a
// device is a core: 1 thread per rank keeps ranks from competing for cores.
void SetIntraOpThreads(int threads);

// Names of registered schedulers, for --help and "all".
std::vector<std::string> SchedulerNames();
std::string DescribeSchedulers();

}  // namespace tspipe

#endif  // TSPIPE_BENCHMARKS_HARNESS_H_
