#include "algorithms/blockwise.h"

#include "algorithms/image_recipe.h"
#include "engine/recipe.h"
#include "models/mirror_student.h"
#include "models/resnet.h"

namespace tspipe {

Workload BlockwiseDistillation::workload() const {
  Workload w;
  w.teacher = TeacherKind::kFrozen;
  w.local_losses = true;
  w.blockwise = true;
  return w;
}

torch::Tensor BlockMseLoss(const torch::Tensor& student, const torch::Tensor& teacher) {
  TORCH_CHECK(student.sizes() == teacher.sizes(), "a student block's output ", student.sizes(),
              " must have the teacher block's shape ", teacher.sizes());
  return torch::mse_loss(student, teacher);
}

torch::Tensor SoftCrossEntropy(const torch::Tensor& s, const torch::Tensor& t) {
  namespace F = torch::nn::functional;
  return -(F::softmax(t, F::SoftmaxFuncOptions(1)) * F::log_softmax(s, F::LogSoftmaxFuncOptions(1)))
              .sum(1)
              .mean();
}

torch::Tensor BlockwiseDistillation::Loss(const LossInputs& in) const {
  TORCH_CHECK(in.student && !in.student->empty(), "blockwise distillation needs the student output");
  TORCH_CHECK(in.teacher && !in.teacher->empty(), "blockwise distillation needs the teacher output");
  const torch::Tensor& s = (*in.student)[0];
  const torch::Tensor t = (*in.teacher)[0].detach();
  return in.last_stage ? SoftCrossEntropy(s, t) : BlockMseLoss(s, t);
}

namespace {

// A frozen teacher and a student mirroring it block for block; every block
// pair is a stage. The built-in small ResNet's student replaces each basic
// block with one conv-BN-ReLU (MakeBlockwiseStudent); a named network's
// student is models/mirror_student.h's.
class BlockwiseRecipe : public ImageRecipe {
 public:
  std::vector<OptionSpec> Options() const override {
    std::vector<OptionSpec> o = ImageNetworkOptions(
        "teacher", "teacher_", "teacher (the student mirrors it block for block)", {32, 64, 128},
        {2, 2, 2});
    o.push_back(SmallStemOption());
    o.push_back(HalfBlocksOption());
    for (OptionSpec& s : ImageShapeOptions()) o.push_back(s);
    return o;
  }
  void Configure(const OptionValues& v) override {
    ConfigureImageShape(v);
    teacher_ = ImageNetworkFrom(v, "teacher", "teacher_", "blockwise", image_shape());
  }
  std::unique_ptr<Algorithm> MakeAlgorithm() const override {
    return std::make_unique<BlockwiseDistillation>();
  }
  ModelSet BuildModels() const override {
    ModelSet m;
    if (teacher_.name == kSmallResNet) {
      ResNetOptions shape = teacher_.small;
      shape.in_channels = image_shape().channels;
      shape.num_classes = image_shape().num_classes;
      torch::nn::Sequential student = MakeBlockwiseStudent(shape);
      m.student = student.ptr();
      m.student_blocks = BlocksFromSequential(student);
      m.student_shape = "blockwise student of " + DescribeShape(shape);
      torch::nn::Sequential teacher = MakeResNet(shape);
      m.teacher = teacher.ptr();
      m.teacher_blocks = BlocksFromSequential(teacher);
      m.teacher_shape = DescribeShape(shape);
      return m;
    }
    ImageNetwork teacher = BuildImageNetwork(teacher_, image_shape());
    MirrorStudent student = MakeMirrorStudent(teacher.blocks, image_shape());
    m.student = student.module;
    m.student_blocks = student.blocks;
    m.student_shape = "blockwise student of " + teacher.shape;
    m.teacher = teacher.module;
    m.teacher_blocks = teacher.blocks;
    m.teacher_shape = teacher.shape;
    m.adapt_teacher_file = teacher.adapt_file;
    return m;
  }
  CutRule cut_rule() const override { return {CutRule::Kind::kOnePerBlock, 0}; }
  // Evaluation (ImageRecipe's top-1): the blocks trained apart still form
  // one network end to end.

 private:
  ImageNetworkChoice teacher_;
};

}  // namespace

TSPIPE_REGISTER_RECIPE("blockwise",
                       "blockwise distillation (DNA / Pipe-BD): student block i learns teacher "
                       "block i from the teacher's input (MSE; soft CE on the last)",
                       BlockwiseRecipe);

}  // namespace tspipe
