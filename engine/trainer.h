// The training engine behind a torch-free interface, so that mains (which
// read flags and use glog, whose macros clash with c10's) stay light. It
// knows no algorithm: a recipe (engine/recipe.h), chosen by name, supplies
// the models, data, loss and evaluation; the engine cuts, schedules, runs
// and reports. The trainer is a facade over its parts: the batch stream
// (engine/batch_stream.h), the optimizer (engine/optimizer.h), the
// fingerprint (engine/fingerprint.h), checkpoints (engine/checkpoint.h) and
// the cut (engine/cut_search.h's ResolveCut).
#ifndef TSPIPE_ENGINE_TRAINER_H_
#define TSPIPE_ENGINE_TRAINER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/trace.h"
#include "engine/cut_search.h"
#include "engine/metrics.h"
#include "engine/world.h"

namespace tspipe {

struct TrainConfig {
  // A registered recipe (engine/catalog.h's RecipeNames()) and its
  // options, "name=value,name=value" (see core/options.h;
  // RecipeOptionsHelp lists them), and a registered scheduler. No
  // defaults: the engine names no algorithm and no scheduler.
  std::string algorithm;
  std::string algorithm_options;
  std::string scheduler;
  // Pipeline stages; for recipes whose every block is a stage
  // (CutRule::kOnePerBlock) the number of devices.
  int stages = 2;
  // Micro-batches of each model's pipeline.
  int microbatches = 4;
  // Samples per mini-batch; recipes that train several models split it
  // evenly between them.
  int batch_size = 64;
  // Blocks per stage; empty = as even as possible (see PlanBalances for the
  // measured alternative).
  std::vector<int> balance;
  std::vector<int> teacher_balance;  // Empty = as even as possible.
  // Teacher weights of a run whose student had the teacher's shape: a
  // LibTorch archive (Trainer::SaveModel) or a safetensors file
  // (ExportModel, or PyTorch's save_file with the same names), loaded
  // strictly (engine/model_files.h); empty = the recipe's initialisation (a
  // random teacher: fine for throughput, useless for accuracy).
  std::string teacher_checkpoint;
  // Initial student weights (same formats); empty = random initialisation.
  std::string initial_checkpoint;
  // Update policy for momentum teachers ("sync", "tspipe_delayed"); empty =
  // the one the scheduler's action order gives.
  std::string update_policy;
  // Measured per-stage costs (ms per micro-batch) for schedulers that plan
  // with costs (see BalancePlan); empty = unit costs.
  std::vector<double> forward_ms;
  std::vector<double> backward_ms;
  std::vector<double> teacher_ms;
  // Total optimizer steps planned (momentum ramps); 0 = unknown.
  int total_steps = 0;
  // "sgd" (with momentum) or "adamw" (decoupled weight decay, as DistilBERT
  // trains). Frozen parameters (requires_grad false) are left out.
  std::string optimizer = "sgd";
  double learning_rate = 0.05;
  double momentum = 0.9;  // SGD.
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;  // AdamW.
  double weight_decay = 0;
  // Learning rate by step: a linear warm-up from 0 over the first
  // warmup_steps, then, when total_steps is known (> 0), a linear decay to
  // 0 at total_steps (Hugging Face's get_linear_schedule_with_warmup);
  // constant when both are 0.
  int warmup_steps = 0;
  bool decay_learning_rate = false;
  // Weight decay by phase: {first step, value} pairs, ascending; from each
  // step (1-based) on, its value replaces weight_decay. Empty = constant.
  std::vector<std::pair<int, double>> weight_decay_schedule;
  // > 0: gradients are scaled before each step so that their global 2-norm
  // over the whole student is at most this (torch.nn.utils.clip_grad_norm_;
  // DistilBERT clips at 5). Across stages it costs an all-reduce of one
  // number after each rank's last backward. 0 = off.
  double clip_grad_norm = 0;
  // Seeds initialisation, then the recipe's data (order, augmentations).
  int seed = 0;
  // Floating-point type of the models and data: "float32" or "float64"
  // (numerical checks against other implementations).
  std::string dtype = "float32";
  // "synthetic" or one of the recipe's real data sets; data_dir empty = the
  // recipe's default location.
  std::string data = "synthetic";
  std::string data_dir;
  // Use only the first N training examples (0 = all): quick runs and tests.
  int train_samples = 0;
  // Synthetic: distinct batches generated up front and cycled.
  int num_batches = 4;
  // The held-out split for evaluation when the data set does not say
  // (image folders: ROOT/<class>/<image> like data_dir).
  std::string eval_dir;
  // As DataRequest's (image folders).
  int data_threads = 2;
  bool skip_bad_images = false;
  bool plain_resize = false;
  // "cpu" (every rank on the CPU; a rank is a thread), "cuda" (rank r on
  // cuda:r) or "cuda:K" (every rank on cuda:K); CUDA needs --config=cuda.
  std::string device = "cpu";
  // Steps per Train() call in benchmarks (see Trainer::Train).
  int steps_per_iteration = 4;
  // Null: every rank is a thread of this process. Otherwise this process is
  // one rank of that c10d world and the others are processes too.
  std::shared_ptr<World> world;
  // c10d: how long a rank waits for a peer before failing, naming it.
  int peer_timeout_seconds = 60;
};

// Trains the recipe's student (and runs its teacher) under the configured
// scheduler, on the single-process backend or as one rank of a c10d world.
class Trainer {
 public:
  // Throws std::invalid_argument (or std::runtime_error for missing data or
  // checkpoint files) naming the problem: unknown algorithm or scheduler, a
  // bad option, a bad balance, micro-batches not dividing the batch, a
  // checkpoint of another shape...
  explicit Trainer(const TrainConfig& config);
  ~Trainer();

  // `steps` optimizer steps back to back (no barrier between iterations,
  // the next batch's teacher forwards overlapping); returns the last loss.
  double Train(int steps);
  // The recipe's figures for the trained student (single-process backend).
  // `train_limit`/`test_limit` use only the first N examples (0 = all).
  Metrics Evaluate(int train_limit = 0, int test_limit = 0);
  // Writes the student's parameters and buffers atomically (a temporary
  // file renamed over `path`), loadable as TrainConfig::teacher_checkpoint
  // or initial_checkpoint. `model`: which of num_models(). Under c10d only
  // a process that holds every stage of the model may (std::logic_error).
  void SaveModel(const std::string& path, int model = 0);
  // Writes the student in the recipe's exchange format (Recipe::ExportTensors:
  // PyTorch's state_dict names by default, Hugging Face's for BERT) as a
  // safetensors file, atomically: loadable with safetensors.torch.load_file
  // (tools/pytorch_forward.py), and back as a teacher or initial student.
  // Under c10d as SaveModel.
  void ExportModel(const std::string& path, int model = 0);
  // max |a - b| over the parameters of every model of the two runs (same
  // shapes required).
  double MaxParameterDifference(const Trainer& other) const;
  int num_devices() const;
  // The ranks holding each stage, "0;0;1|2" (FormatPlacement).
  const std::string& placement() const;
  // This process's rank under c10d (0 for the local backend).
  int rank() const;
  int batch_size() const;
  // Training examples behind the data (0 for synthetic data).
  int64_t train_set_size() const;
  // Trains `steps` steps to warm up, then times `steps` more: samples/s.
  double MeasureSamplesPerSecond(int steps);
  // Steady-state bubble of this run's schedule under the simulator with
  // the configured stage costs (unit costs when none are given).
  double simulated_bubble() const;
  // The most micro-batches any stage of this run's schedule holds for a
  // backward (PeakStashes): activation memory in micro-batches.
  int stash_peak() const;
  // Seconds training has waited for its data source so far (the loader's
  // queue empty): what --data=imagefolder's decoder threads did not hide.
  double data_wait_seconds() const;
  // Recipe::Tokens summed over every mini-batch trained on so far (0 when
  // the recipe's samples are not token sequences).
  int64_t tokens_trained() const;
  // Payload bytes per optimizer step so far that each device (rank) of this
  // process sent on average (messages and collectives, counted as
  // Transport::bytes_sent says).
  double bytes_sent_per_step_per_device() const;
  // Records when every action of this process's ranks starts and ends
  // from the next Train on (off at first): two clock reads per action.
  void RecordTrace(bool on);
  // What Train recorded since the last call, with the schedule it ran
  // (named after the scheduler), for core/trace.h's summaries and files.
  TraceRun TakeTrace();
  // Models trained together (Recipe::num_models); the loss Train returns
  // is their mean, SaveModel and ExportModel take the model's index.
  int num_models() const;

  // Writes a checkpoint of everything the next Train depends on into `dir`
  // (layout and atomicity: engine/checkpoint.h): every model's parameters
  // and buffers, a teacher that changes (momentum target, peer copies),
  // each stage's optimizer state, teacher outputs already computed for the
  // next batch, step and token counts, the data position, the random
  // generators, and the configuration's fingerprint. Keeps the newest
  // `keep`. Under c10d every process writes its own ranks' state and rank 0
  // the manifest last; all processes call it at the same step.
  void SaveCheckpoint(const std::string& dir, int keep);
  // Continues a fresh trainer (nothing trained yet) from the newest
  // complete checkpoint in `dir`, as if it had trained those steps itself.
  // Returns that step, or -1 when `dir` holds none (nothing changes then).
  // Checkpoints with a damaged file are passed over for older ones, each
  // with a line in `skipped`. Throws std::invalid_argument when the newest
  // was written by another configuration (saying which settings differ) or
  // another c10d world size.
  int64_t Resume(const std::string& dir, std::vector<std::string>* skipped = nullptr);
  // Optimizer steps trained (resumed ones included).
  int64_t steps_done() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Planning a run (block costs, the cut search, timed trials):
// engine/planning.h. What is registered by name: engine/catalog.h.

// Threads each device (rank) may use for intra-op parallelism. On CPU a
// device is a core: 1 thread per rank keeps ranks from competing for cores.
void SetIntraOpThreads(int threads);

}  // namespace tspipe

#endif  // TSPIPE_ENGINE_TRAINER_H_
