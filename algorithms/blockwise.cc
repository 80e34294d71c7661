#include "algorithms/blockwise.h"

#include "algorithms/image_recipe.h"
#include "engine/recipe.h"
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

// A frozen ResNet teacher and a student mirroring it block for block
// (MakeBlockwiseStudent); every block pair is a stage.
class BlockwiseRecipe : public ImageRecipe {
 public:
  std::vector<OptionSpec> Options() const override {
    return ResNetShapeOptions("teacher_", "teacher (the student mirrors it block for block)",
                              {32, 64, 128}, {2, 2, 2});
  }
  void Configure(const OptionValues& v) override {
    teacher_ = ResNetShapeFrom(v, "teacher_", "blockwise");
  }
  std::unique_ptr<Algorithm> MakeAlgorithm() const override {
    return std::make_unique<BlockwiseDistillation>();
  }
  ModelSet BuildModels() const override {
    ModelSet m;
    torch::nn::Sequential student = MakeBlockwiseStudent(teacher_);
    m.student = student.ptr();
    m.student_blocks = BlocksFromSequential(student);
    m.student_shape = "blockwise student of " + DescribeShape(teacher_);
    torch::nn::Sequential teacher = MakeResNet(teacher_);
    m.teacher = teacher.ptr();
    m.teacher_blocks = BlocksFromSequential(teacher);
    m.teacher_shape = DescribeShape(teacher_);
    return m;
  }
  CutRule cut_rule() const override { return {CutRule::Kind::kOnePerBlock, 0}; }
  // Evaluation (ImageRecipe's top-1): the blocks trained apart still form
  // one network end to end.

 private:
  ResNetOptions teacher_;
};

}  // namespace

TSPIPE_REGISTER_RECIPE("blockwise",
                       "blockwise distillation (DNA / Pipe-BD): student block i learns teacher "
                       "block i from the teacher's input (MSE; soft CE on the last)",
                       BlockwiseRecipe);

}  // namespace tspipe
