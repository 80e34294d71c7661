// The trainer's internals, shared by engine/trainer.cc (building a run,
// training, evaluation, model files) and engine/trainer_checkpoint.cc
// (checkpoints and resuming). Not part of the trainer's interface: include
// engine/trainer.h.
#ifndef TSPIPE_ENGINE_TRAINER_IMPL_H_
#define TSPIPE_ENGINE_TRAINER_IMPL_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "backends/executor.h"
#include "backends/transport.h"
#include "core/message.h"
#include "engine/batch_stream.h"
#include "engine/recipe.h"
#include "engine/trainer.h"

namespace tspipe {

class Trainer::Impl {
 public:
  explicit Impl(const TrainConfig& config);

  double Train(int steps);
  Metrics Evaluate(int train_limit, int test_limit);
  void SaveModel(const std::string& path, int model);
  void ExportModel(const std::string& path, int model);
  double MaxParameterDifference(const Impl& other) const;

  int num_devices() const { return devices_; }
  const std::string& placement() const { return placement_; }
  int rank() const { return rank_; }
  int batch_size() const { return config_.batch_size; }
  void RecordTrace(bool on) {
    executor_->set_record_trace(on);
    data_->set_record_waits(on);
  }
  double data_wait_seconds() const { return data_->wait_seconds(); }
  TraceRun TakeTrace();
  int64_t train_set_size() const { return data_->size(); }
  double bytes_sent_per_step_per_device() const;
  double simulated_bubble() const { return bubble_; }
  int64_t tokens_trained() const { return tokens_; }
  int stash_peak() const { return stash_peak_; }
  int num_models() const { return num_models_; }
  int64_t steps_done() const { return executor_->steps_done(); }

  // Checkpoints (trainer_checkpoint.cc).
  void SaveCheckpoint(const std::string& dir, int keep);
  int64_t Resume(const std::string& dir, std::vector<std::string>* skipped);

 private:
  // Building a run (trainer.cc), in this order.
  void BuildModels();
  // Cuts the models into stages and builds the schedule for them.
  Schedule BuildPlan(ExecutorOptions* eo, std::vector<Stage>* teacher_stages);
  // Joins the c10d world (or makes the in-process transport) for `schedule`.
  void Connect(const Schedule& schedule, ExecutorOptions* eo);
  void MakeData();

  // A c10d process holds only its own rank's stages: a model can be
  // written only by a process that holds all of it.
  void RequireWholeModel(const char* what, int model) const;
  std::vector<ModelSet*> AllModels();
  const ModelSet& Model(int model) const;

  // Process number of this process in a checkpoint: its c10d rank, or 0.
  int process() const { return world_ ? rank_ : 0; }
  int processes() const { return world_ ? world_->world_size() : 1; }
  // The sum of `value` over every process (a barrier under c10d).
  double SumOverProcesses(double value, const CollectiveId& id);
  // What a resumed run must share with the one that wrote the checkpoint.
  std::string CheckpointFingerprint() const;
  std::string ProcessState();
  void LoadProcessState(const std::string& payload, const std::string& what);
  // CUDA devices whose generators a checkpoint holds: those of a GPU run.
  int CudaDevices() const;

  TrainConfig config_;
  std::unique_ptr<Recipe> recipe_;
  std::string recipe_options_;
  std::unique_ptr<Algorithm> algorithm_;
  // Model 0 (the only one, unless the recipe trains several), and the others.
  int num_models_ = 1;
  ModelSet models_;
  std::vector<ModelSet> peers_;
  std::vector<Stage> stages_;
  torch::Dtype dtype_ = torch::kFloat32;
  // Device of each student block of each model, for evaluation.
  std::vector<std::vector<torch::Device>> block_devices_;
  // Null for the single-process backend.
  std::shared_ptr<World> world_;
  // The transport the executor uses (metered), and the ranks this process
  // runs.
  std::shared_ptr<Transport> transport_;
  std::vector<int> local_ranks_;
  int64_t steps_ = 0;
  int64_t tokens_ = 0;  // Recipe::Tokens of every batch trained on.
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<BatchStream> data_;
  int devices_ = 1;
  std::string placement_;
  int rank_ = 0;
  std::set<int> models_here_;  // Under c10d: models whose every stage is on rank_.
  double bubble_ = 0;
  int stash_peak_ = 0;       // PeakStashes' most student micro-batches on a stage.
  int64_t sent_before_ = 0;  // Bytes the transport had sent before this trainer.
};

}  // namespace tspipe

#endif  // TSPIPE_ENGINE_TRAINER_IMPL_H_
