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
  // Blocks per stage; empty = as even as possible.
  std::vector<int> balance;
  // Student ResNet shape (see models/resnet.h).
  std::vector<int> widths = {16, 32, 64};
  std::vector<int> blocks_per_group = {1, 1, 1};
  // Teacher ResNet (algorithms with a teacher); larger than the student.
  std::vector<int> teacher_widths = {32, 64, 128};
  std::vector<int> teacher_blocks_per_group = {2, 2, 2};
  std::vector<int> teacher_balance;  // Empty = as even as possible.
  double learning_rate = 0.05;
  double momentum = 0.9;
  int seed = 0;
  // Distinct synthetic batches cycled through (generated once, up front, so
  // that data generation is not timed).
  int num_batches = 4;
  // "cpu" (every rank on the CPU; a rank is a thread) or "cuda" (rank r on
  // cuda:r; needs a --config=cuda build and one GPU per rank).
  std::string device = "cpu";
  // Steps per Train() call in benchmarks (see Trainer::Train).
  int steps_per_iteration = 4;
};

// Trains on synthetic 28x28 single-channel images with 10 classes.
class Trainer {
 public:
  // Throws std::invalid_argument naming the problem for bad configurations
  // (unknown scheduler, bad balance, micro-batches not dividing the batch...).
  explicit Trainer(const TrainConfig& config);
  ~Trainer();

  // One optimizer step on the next synthetic batch; returns its loss.
  double Step();
  // `steps` optimizer steps back to back (no barrier between iterations, the
  // next batch's teacher forwards overlapping); returns the last loss.
  double Train(int steps);
  int num_devices() const;
  int batch_size() const;
  // Steady-state bubble of this run's schedule under the simulator with
  // forward 1, backward 2, teacher forward 1.
  double simulated_bubble() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Threads each device (rank) may use for intra-op parallelism. On CPU a
// device is a core: 1 thread per rank keeps ranks from competing for cores.
void SetIntraOpThreads(int threads);

// Names of registered schedulers and algorithms, for --help and "all".
std::vector<std::string> SchedulerNames();
std::string DescribeSchedulers();

}  // namespace tspipe

#endif  // TSPIPE_BENCHMARKS_HARNESS_H_
