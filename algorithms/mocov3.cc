#include "algorithms/mocov3.h"

#include <memory>
#include <stdexcept>

#include "algorithms/image_recipe.h"
#include "engine/recipe.h"
#include "algorithms/momentum.h"
#include "models/vision_models.h"
#include "models/vit.h"

namespace tspipe {

torch::Tensor MocoV3Loss(const torch::Tensor& q1, const torch::Tensor& q2,
                         const torch::Tensor& k1, const torch::Tensor& k2, double temperature) {
  namespace F = torch::nn::functional;
  auto ctr = [temperature](const torch::Tensor& q, const torch::Tensor& k) {
    torch::Tensor qn = F::normalize(q, F::NormalizeFuncOptions().dim(1));
    torch::Tensor kn = F::normalize(k.detach(), F::NormalizeFuncOptions().dim(1));
    torch::Tensor logits = torch::matmul(qn, kn.t()) / temperature;
    torch::Tensor labels =
        torch::arange(q.size(0), torch::TensorOptions().dtype(torch::kInt64).device(q.device()));
    return F::cross_entropy(logits, labels) * (2.0 * temperature);
  };
  return ctr(q1, k2) + ctr(q2, k1);
}

Workload MocoV3::workload() const {
  Workload w;
  w.teacher = TeacherKind::kMomentum;
  w.full_batch_loss = true;  // Negatives span the whole mini-batch.
  return w;
}

torch::Tensor MocoV3::Loss(const LossInputs& in) const {
  TORCH_CHECK(in.student != nullptr && in.student->size() == 2,
              "mocov3 needs two views from the query encoder");
  TORCH_CHECK(in.teacher != nullptr && in.teacher->size() == 2,
              "mocov3 needs two views from the momentum encoder");
  return MocoV3Loss((*in.student)[0], (*in.student)[1], (*in.teacher)[0], (*in.teacher)[1],
                    options_.temperature);
}

namespace {

// MoCo v3 on two augmented views: a ViT query encoder (the built-in small
// one on 28x28 images by default, or any named network at any image shape)
// with projector and predictor, its EMA key encoder cut like it.
constexpr char kSmallVit[] = "small_vit";

class MocoV3Recipe : public ImageRecipe {
 public:
  MocoV3Recipe() : ImageRecipe(/*views=*/2) {}

  std::vector<OptionSpec> Options() const override {
    const VitOptions v;
    const MocoV3Options m;
    std::string names;
    for (const std::string& n : VisionModelNames()) names += ", " + n;
    std::vector<OptionSpec> o = {
        StringOption("encoder", kSmallVit,
                     std::string("the encoder: ") + kSmallVit +
                         " (the built-in ViT for 28x28 images, shaped by patch, dim, depth and "
                         "heads)" + names),
        SmallStemOption(), HalfBlocksOption()};
    for (OptionSpec& s : ImageShapeOptions()) o.push_back(s);
    std::vector<OptionSpec> rest = {
            IntOption("patch", v.patch, "ViT patch size (must divide 28)").AtLeast(1),
            IntOption("dim", v.dim, "ViT width").AtLeast(1),
            IntOption("depth", v.depth, "ViT transformer blocks").AtLeast(1),
            IntOption("heads", v.heads, "ViT attention heads (must divide dim)").AtLeast(1),
            IntOption("hidden", 256, "projector and predictor hidden width").AtLeast(1),
            IntOption("projection", 64, "projection size").AtLeast(1),
            DoubleOption("temperature", m.temperature, "InfoNCE temperature tau").Above(0),
            DoubleOption("base_momentum", m.base_momentum,
                         "EMA momentum at step 0, cosine-ramped to 1 over the run")
                .AtLeast(0)
                .AtMost(1)};
    o.insert(o.end(), rest.begin(), rest.end());
    return o;
  }
  void Configure(const OptionValues& v) override {
    ConfigureImageShape(v);
    encoder_ = v.GetString("encoder");
    small_stem_ = v.GetBool("small_stem") && encoder_.rfind("resnet", 0) == 0;
    half_blocks_ = v.GetBool("half_blocks") && encoder_.rfind("vit_", 0) == 0;
    if (encoder_ != kSmallVit) CheckImageNetwork("mocov3", "encoder", kSmallVit, EncoderOptions());
    shape_.encoder.patch = v.GetInt("patch");
    shape_.encoder.dim = v.GetInt("dim");
    shape_.encoder.depth = v.GetInt("depth");
    shape_.encoder.heads = v.GetInt("heads");
    shape_.hidden = v.GetInt("hidden");
    shape_.projection = v.GetInt("projection");
    moco_.temperature = v.GetDouble("temperature");
    moco_.base_momentum = v.GetDouble("base_momentum");
    shape_.encoder.in_channels = image_shape().channels;
    if (!named() && image_shape().image_size != shape_.encoder.image_size) {
      throw std::invalid_argument("mocov3's " + std::string(kSmallVit) + " takes 28x28 images; use " +
                                  "a named encoder (encoder=vit_small_patch16) for image_size=" +
                                  std::to_string(image_shape().image_size));
    }
    if (shape_.encoder.image_size % shape_.encoder.patch != 0) {
      throw std::invalid_argument("mocov3 option patch=" + std::to_string(shape_.encoder.patch) +
                                  " does not divide the 28-pixel images");
    }
    if (shape_.encoder.dim % shape_.encoder.heads != 0) {
      throw std::invalid_argument("mocov3 option heads=" + std::to_string(shape_.encoder.heads) +
                                  " does not divide dim=" + std::to_string(shape_.encoder.dim));
    }
  }
  std::unique_ptr<Algorithm> MakeAlgorithm() const override {
    return std::make_unique<MocoV3>(moco_);
  }
  bool named() const { return encoder_ != kSmallVit; }
  VisionModelOptions EncoderOptions() const {
    VisionModelOptions o{encoder_, image_shape(), small_stem_};
    o.half_blocks = half_blocks_;
    return o;
  }
  ModelSet BuildModels() const override {
    if (named()) {
      const int features = VisionModelFeatures(EncoderOptions());
      const int hidden = shape_.hidden, projection = shape_.projection;
      return MakeMomentumPair(
          EncoderOptions(),
          {{"projector", torch::nn::AnyModule(MocoMlp(3, features, hidden, projection, true))},
           {"predictor", torch::nn::AnyModule(MocoMlp(2, projection, hidden, projection, false))}});
    }
    ModelSet m;
    torch::nn::Sequential online = MakeMocoV3Online(shape_);
    torch::nn::Sequential target = MakeMomentumTarget(online);
    m.student = online.ptr();
    m.student_blocks = MultiViewBlocksFromSequential(online);
    m.teacher = target.ptr();
    m.teacher_blocks = MultiViewBlocksFromSequential(target);
    m.student_shape = "ViT patch " + std::to_string(shape_.encoder.patch) + ", dim " +
                      std::to_string(shape_.encoder.dim) + ", depth " +
                      std::to_string(shape_.encoder.depth);
    m.teacher_shape = "its key encoder";
    return m;
  }
  CutRule cut_rule() const override { return {CutRule::Kind::kShared, 1}; }
  void StudentLoaded(ModelSet& m) const override {
    if (named()) return ResetMomentumTarget(m);
    auto online = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(m.student);
    CopyState(*MakeMomentumTarget(torch::nn::Sequential(online)), *m.teacher);
  }
  Metrics Evaluate(const EvalContext& c) const override {
    const int encoder_blocks =
        named() ? VisionModelBlocks(EncoderOptions()) : MocoEncoderBlocks(shape_);
    return {{"linear_top1", LinearProbeTop1(c, image_shape(), encoder_blocks)}};
  }

 private:
  std::string encoder_;
  bool small_stem_ = false;
  bool half_blocks_ = false;
  MocoNetOptions shape_;
  MocoV3Options moco_;
};

}  // namespace

TSPIPE_REGISTER_RECIPE("mocov3",
                       "MoCo v3: a query encoder (ViTs and ResNets by name) against its EMA key "
                       "encoder, InfoNCE over the whole mini-batch",
                       MocoV3Recipe);

}  // namespace tspipe
