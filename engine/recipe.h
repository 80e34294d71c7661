// A recipe: everything that makes a teacher-student method one module. The
// engine (engine/trainer.h) asks a recipe for its options, models, data,
// profiling sample, loss (an Algorithm) and evaluation, and knows no method
// by name; schedulers and executors see only the Algorithm and the blocks.
//
// Adding a method: subclass Recipe in its own .cc, register it with
// TSPIPE_REGISTER_RECIPE, link the library with alwayslink (see
// docs/ADDING_AN_ALGORITHM.md).
#ifndef TSPIPE_ENGINE_RECIPE_H_
#define TSPIPE_ENGINE_RECIPE_H_

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/algorithm.h"
#include "core/batch_source.h"
#include "core/microbatch.h"
#include "core/options.h"
#include "core/partition.h"
#include "core/registry.h"
#include "io/safetensors.h"
#include "engine/cut_search.h"
#include "engine/metrics.h"

namespace tspipe {

// The networks of a run as block sequences (what balances cut), and the
// modules that own them (what checkpoints save and load).
struct ModelSet {
  // Owns every student parameter and buffer; saved by Trainer::SaveModel
  // and loaded from TrainConfig::initial_checkpoint.
  std::shared_ptr<torch::nn::Module> student;
  BlockList student_blocks;
  // Null (and no blocks) without a teacher. Loaded from
  // TrainConfig::teacher_checkpoint when the teacher is frozen.
  std::shared_ptr<torch::nn::Module> teacher;
  BlockList teacher_blocks;
  // Shapes in words, for messages about checkpoints that do not fit
  // ("widths 8,16, blocks 1,1").
  std::string student_shape;
  std::string teacher_shape;
  // Student parameters that are one parameter of the model's math held by
  // two blocks (BERT's decoder and its word embeddings), as pairs of the
  // blocks' parameter tensors, equal at the start. Wherever the cut puts
  // them, their gradients are summed before each step, so they stay equal
  // (the first is the one gradient clipping counts). Both must train.
  std::vector<std::pair<torch::Tensor, torch::Tensor>> student_ties;
  // Applied to a safetensors file's tensors before the strict load of the
  // student (initial_checkpoint) or teacher (teacher_checkpoint): a ViT's
  // position embeddings made for another image size are resampled, as timm
  // does (models/vision_models.h). Empty = the tensors as they are.
  std::function<void(NamedTensors&)> adapt_student_file;
  std::function<void(NamedTensors&)> adapt_teacher_file;
};

struct EvalRequest {
  // Use only the first N examples of the training / held-out split
  // (0 = all); what a split is used for is the recipe's business.
  int train_limit = 0;
  int test_limit = 0;
  std::string data_dir;  // As DataRequest::data_dir.
  // The data set trained on (DataRequest::data), and where its held-out
  // split lives when it is not the recipe's to know (an image folder's
  // evaluation folder); decoding as DataRequest's.
  std::string data;
  std::string eval_dir;
  int data_threads = 2;
  bool skip_bad_images = false;
  bool plain_resize = false;
};

// What an evaluation may touch (valid only during Recipe::Evaluate): the
// trained students (one per model; see
// Recipe::num_models), block by block on the device the executor put each
// block on, in eval mode.
class EvalContext {
 public:
  using Forward = std::function<Activation(const Activation& input, int num_blocks, int model)>;
  EvalContext(int num_models, Forward forward, EvalRequest request)
      : num_models_(num_models), forward_(std::move(forward)), request_(std::move(request)) {}

  // Runs the first `num_blocks` blocks (-1 = all) of student `model` on
  // `input` without gradients; the output is on the last block's device.
  Activation ForwardStudent(const Activation& input, int num_blocks = -1, int model = 0) const {
    return forward_(input, num_blocks, model);
  }
  int num_models() const { return num_models_; }
  const EvalRequest& request() const { return request_; }

 private:
  int num_models_;
  Forward forward_;
  EvalRequest request_;
};

class Recipe {
 public:
  virtual ~Recipe() = default;

  // The options this recipe takes: names, defaults, help, valid values.
  virtual std::vector<OptionSpec> Options() const = 0;
  // Takes the parsed values (every declared option present, each already
  // valid on its own). Throws std::invalid_argument for combinations that
  // do not fit together. Called once, before anything below.
  virtual void Configure(const OptionValues& values) = 0;

  // The loss and teacher update, configured by the options.
  virtual std::unique_ptr<Algorithm> MakeAlgorithm() const = 0;
  // Fresh networks, initialised from the global generator (the engine seeds
  // it first).
  virtual ModelSet BuildModels() const = 0;
  // Models that teach each other (codistillation): the engine calls
  // BuildModels once per model (each drawing its own initial values; the
  // recipe builds students only), makes each model's teacher from stale
  // copies of the others (MakePeerTeachers), trains model g on the g-th
  // share of every mini-batch on its own ranks (ReplicateModels), and needs
  // an algorithm with TeacherKind::kPeers. 1 = one student.
  virtual int num_models() const { return 1; }
  // How the networks may be cut into stages.
  virtual CutRule cut_rule() const { return CutRule{}; }
  // Called after the student was loaded from a checkpoint: a momentum
  // teacher starts again from the loaded student.
  virtual void StudentLoaded(ModelSet& models) const {}

  // Real data sets the recipe can train on, besides "synthetic".
  virtual std::vector<std::string> DataSets() const = 0;
  // Throws std::invalid_argument for an unknown data set, or
  // std::runtime_error naming a missing file (and how to get it).
  virtual std::unique_ptr<BatchSource> MakeData(const DataRequest& request) const = 0;
  // One micro-batch of `samples` student inputs, for timing blocks.
  virtual Activation ExampleInput(int64_t samples) const = 0;
  // Tokens the student trains on in `batch`, for tokens/s in the benchmark
  // tables (sequence models count real tokens, not padding); 0 = the
  // recipe's samples are not token sequences.
  virtual int64_t Tokens(const Batch& batch) const { return 0; }

  // The student's tensors as other tools name them (Trainer::ExportModel
  // writes them as safetensors). The default: the student module's
  // parameters and buffers under their LibTorch names.
  virtual NamedTensors ExportTensors(const ModelSet& models) const {
    NamedTensors out;
    for (const auto& p : models.student->named_parameters()) out[p.key()] = p.value().detach().to(torch::kCPU);
    for (const auto& b : models.student->named_buffers()) out[b.key()] = b.value().detach().to(torch::kCPU);
    return out;
  }

  // Figures of the trained student. The default throws std::logic_error.
  virtual Metrics Evaluate(const EvalContext& context) const {
    throw std::logic_error("this algorithm has no evaluation");
  }
};

using RecipeRegistry = Registry<Recipe>;

// The registered recipe `name`; throws std::invalid_argument listing the
// registered ones when there is none (engine/catalog.cc).
std::unique_ptr<Recipe> CreateRecipe(const std::string& name);

// A recipe configured from "name=value,..." options, with the canonical
// text of its options ("name=value" lines: its part of the fingerprint).
struct ConfiguredRecipe {
  std::unique_ptr<Recipe> recipe;
  std::string options;
};
// Throws std::invalid_argument with a one-line message for an unknown
// recipe, option or bad value.
ConfiguredRecipe ConfigureRecipe(const std::string& name, const std::string& options);

}  // namespace tspipe

#define TSPIPE_REGISTER_RECIPE(name, help, type)                           \
  static const bool tspipe_recipe_registered_##type =                      \
      ::tspipe::RecipeRegistry::Global().Register(                         \
          name, help, [] { return std::unique_ptr<::tspipe::Recipe>(new type()); })

#endif  // TSPIPE_ENGINE_RECIPE_H_
