#include "algorithms/kd.h"

#include <stdexcept>

#include "algorithms/image_recipe.h"
#include "engine/recipe.h"
#include "models/resnet.h"

namespace tspipe {

KnowledgeDistillation::KnowledgeDistillation(const KdOptions& options) : options_(options) {
  if (options.temperature <= 0) {
    throw std::invalid_argument("KD temperature must be positive, got " +
                                std::to_string(options.temperature));
  }
  if (options.lambda < 0) {
    throw std::invalid_argument("KD lambda must not be negative, got " +
                                std::to_string(options.lambda));
  }
}

Workload KnowledgeDistillation::workload() const {
  Workload w;
  w.teacher = TeacherKind::kFrozen;  // Per-sample terms: exact under any micro-batching.
  return w;
}

torch::Tensor KdLoss(const torch::Tensor& s, const torch::Tensor& t, const torch::Tensor& y,
                     const KdOptions& o) {
  namespace F = torch::nn::functional;
  const double temp = o.temperature;
  torch::Tensor ce = F::cross_entropy(s, y);
  torch::Tensor kl = F::kl_div(F::log_softmax(s / temp, F::LogSoftmaxFuncOptions(1)),
                               F::softmax(t / temp, F::SoftmaxFuncOptions(1)),
                               F::KLDivFuncOptions().reduction(torch::kBatchMean));
  const double scale = o.scale_by_t_squared ? temp * temp : 1.0;
  return ce + o.lambda * scale * kl;
}

torch::Tensor KnowledgeDistillation::Loss(const LossInputs& in) const {
  TORCH_CHECK(in.student && !in.student->empty(), "KD needs student logits");
  TORCH_CHECK(in.teacher && !in.teacher->empty(), "KD needs teacher logits");
  TORCH_CHECK(in.targets && !in.targets->empty(), "KD needs labels");
  return KdLoss((*in.student)[0], (*in.teacher)[0].detach(), (*in.targets)[0], options_);
}

namespace {

// A teacher distilled into a student, each cut with its own balance: by
// default a larger built-in ResNet into a smaller one on 28x28 images; any
// named network (student=resnet18, teacher=vit_large_patch16) at any image
// shape.
class KdRecipe : public ImageRecipe {
 public:
  std::vector<OptionSpec> Options() const override {
    std::vector<OptionSpec> o =
        ImageNetworkOptions("student", "", "student", {16, 32, 64}, {1, 1, 1});
    for (OptionSpec& s :
         ImageNetworkOptions("teacher", "teacher_", "teacher", {32, 64, 128}, {2, 2, 2})) {
      o.push_back(s);
    }
    o.push_back(SmallStemOption());
    o.push_back(HalfBlocksOption());
    for (OptionSpec& s : ImageShapeOptions()) o.push_back(s);
    const KdOptions d;
    o.push_back(DoubleOption("temperature", d.temperature, "softmax temperature T").Above(0));
    o.push_back(DoubleOption("lambda", d.lambda, "weight of the soft-target KL term").AtLeast(0));
    o.push_back(BoolOption("t_squared", d.scale_by_t_squared,
                           "scale the KL term by T^2 (Hinton et al.), so lambda need not "
                           "change with T"));
    return o;
  }
  void Configure(const OptionValues& v) override {
    ConfigureImageShape(v);
    student_ = ImageNetworkFrom(v, "student", "", "kd", image_shape());
    teacher_ = ImageNetworkFrom(v, "teacher", "teacher_", "kd", image_shape());
    kd_.temperature = v.GetDouble("temperature");
    kd_.lambda = v.GetDouble("lambda");
    kd_.scale_by_t_squared = v.GetBool("t_squared");
  }
  std::unique_ptr<Algorithm> MakeAlgorithm() const override {
    return std::make_unique<KnowledgeDistillation>(kd_);
  }
  ModelSet BuildModels() const override {
    ModelSet m;
    ImageNetwork student = BuildImageNetwork(student_, image_shape());
    m.student = student.module;
    m.student_blocks = student.blocks;
    m.student_shape = student.shape;
    m.adapt_student_file = student.adapt_file;
    ImageNetwork teacher = BuildImageNetwork(teacher_, image_shape());
    m.teacher = teacher.module;
    m.teacher_blocks = teacher.blocks;
    m.teacher_shape = teacher.shape;
    m.adapt_teacher_file = teacher.adapt_file;
    return m;
  }

 private:
  ImageNetworkChoice student_, teacher_;
  KdOptions kd_;
};

}  // namespace

TSPIPE_REGISTER_RECIPE("kd",
                       "soft-target knowledge distillation from a frozen teacher into a smaller "
                       "student (CE + lambda T^2 KL_T); ResNets and ViTs by name",
                       KdRecipe);

}  // namespace tspipe
