// The named vision networks against torchvision and timm: the golden files
// were made by tools/make_vision_goldens.py (PyTorch 2.11, torchvision,
// timm). Names and shapes of every tensor; for small instances the forward
// in both batch-norm modes, every parameter's gradient summary and the
// batch-norm statistics after one training forward, all in float64 from
// weights both sides compute with the same rule (models/fill_rule.h). No
// Python needed.
#include "models/vision_models.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "engine/model_files.h"
#include "io/safetensors.h"
#include "models/fill_rule.h"
#include "models/mirror_student.h"

namespace tspipe {
namespace {

constexpr char kNames[] = "tests/golden/vision_names.txt";
constexpr char kForward[] = "tests/golden/vision_forward.safetensors";

std::map<std::string, torch::Tensor> AllTensors(torch::nn::Module& module) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : module.named_parameters()) out[p.key()] = p.value();
  for (const auto& b : module.named_buffers()) out[b.key()] = b.value();
  return out;
}

torch::Tensor RunBlocks(const VisionModel& model, torch::Tensor x) {
  Activation a{std::move(x)};
  for (const Block& b : model.blocks) a = b->Forward(a);
  return a[0];
}

// max |a - b| / max(1e-300, max |b|).
double RelativeError(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1e-300, b.abs().max().item<double>());
}

VisionModelOptions Options(const std::string& name, int size, int channels, int classes) {
  VisionModelOptions o;
  o.name = name;
  o.shape = {size, channels, classes};
  return o;
}

// At(golden, key), naming a missing key.
const torch::Tensor& At(const NamedTensors& golden, const std::string& key) {
  auto it = golden.find(key);
  if (it == golden.end()) throw std::out_of_range("golden file has no " + key);
  return it->second;
}

template <typename F>
std::string ErrorOf(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(VisionModelsTest, NamesAndShapesAreTorchvisionsAndTimms) {
  std::ifstream in(kNames);
  ASSERT_TRUE(in) << kNames;
  std::map<std::string, std::map<std::string, std::string>> golden;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string model, name, shape;
    fields >> model >> name >> shape;
    golden[model][name] = shape;
  }
  ASSERT_EQ(golden.size(), 6u);
  for (const auto& [model_name, tensors] : golden) {
    SCOPED_TRACE(model_name);
    const VisionModelOptions options = Options(model_name, 224, 3, 1000);
    VisionModel model = MakeVisionModel(options);
    EXPECT_EQ(VisionModelBlocks(options), static_cast<int>(model.blocks.size()));
    EXPECT_EQ(VisionModelFeatures(options), model.features);
    std::map<std::string, std::string> ours;
    for (const auto& [name, t] : AllTensors(*model.module)) {
      std::string shape;
      for (int64_t d : t.sizes()) shape += (shape.empty() ? "" : ",") + std::to_string(d);
      ours[name] = shape;
    }
    EXPECT_EQ(ours.size(), tensors.size());
    for (const auto& [name, shape] : tensors) {
      auto it = ours.find(name);
      if (it == ours.end()) {
        ADD_FAILURE() << "missing " << name;
      } else {
        EXPECT_EQ(it->second, shape) << name;
      }
    }
    for (const auto& [name, shape] : ours) EXPECT_TRUE(tensors.count(name)) << "extra " << name;
  }
}

// Forward (eval, then train), backward of sum(output * cosines), against
// PyTorch's in float64.
void ExpectMatchesGolden(const std::string& name) {
  SCOPED_TRACE(name);
  const NamedTensors golden = ReadSafetensors(kForward);
  const std::string prefix = name + ".";
  VisionModel model = MakeVisionModel(Options(name, 32, 3, 10));
  model.module->to(torch::kFloat64);
  Fill(*model.module);
  const torch::Tensor x = At(golden, prefix + "input");
  ASSERT_TRUE(x.equal(Sines({2, 3, 32, 32}, 0.1)));

  model.module->eval();
  {
    torch::NoGradGuard no_grad;
    EXPECT_LT(RelativeError(RunBlocks(model, x), At(golden, prefix + "eval_output")), 1e-10);
  }
  model.module->train();
  torch::Tensor y = RunBlocks(model, x);
  const torch::Tensor train_golden = At(golden, prefix + "train_output");
  EXPECT_LT(RelativeError(y, train_golden), 1e-10);
  // With batch norm the two modes differ, so a model that ignored one would
  // fail the other.
  if (name.rfind("resnet", 0) == 0) {
    EXPECT_GT((train_golden - At(golden, prefix + "eval_output")).abs().max().item<double>(),
              1e-3);
  }

  const int64_t n = y.numel();
  (y * torch::cos(torch::arange(n, torch::kFloat64) * 0.91).reshape(y.sizes())).sum().backward();
  int checked = 0;
  for (const auto& p : model.module->named_parameters()) {
    SCOPED_TRACE(p.key());
    ASSERT_TRUE(p.value().grad().defined());
    const double sum = At(golden, prefix + "grad_sum." + p.key()).item<double>();
    const double sumsq = At(golden, prefix + "grad_sumsq." + p.key()).item<double>();
    // Sums of gradients that cancel can be tiny: compare against the scale
    // of the squares.
    EXPECT_NEAR(p.value().grad().sum().item<double>(), sum, 1e-9 * (std::sqrt(sumsq) + 1e-12));
    EXPECT_NEAR(p.value().grad().pow(2).sum().item<double>(), sumsq, 1e-9 * sumsq);
    ++checked;
  }
  for (const auto& b : model.module->named_buffers()) {
    if (!b.value().is_floating_point() || IsStepCount(b.key())) continue;
    const double sum = At(golden, prefix + "buffer_sum." + b.key()).item<double>();
    EXPECT_NEAR(b.value().sum().item<double>(), sum, 1e-10 * (1 + std::abs(sum))) << b.key();
    ++checked;
  }
  EXPECT_GT(checked, 10);
}

TEST(VisionModelsTest, Resnet18MatchesTorchvision) { ExpectMatchesGolden("resnet18"); }
TEST(VisionModelsTest, Resnet50MatchesTorchvision) { ExpectMatchesGolden("resnet50"); }
TEST(VisionModelsTest, VitTinyMatchesTimm) { ExpectMatchesGolden("vit_tiny_patch16"); }

TEST(VisionModelsTest, PositionEmbeddingResamplesAsTimm) {
  const NamedTensors golden = ReadSafetensors(kForward);
  const torch::Tensor pos = Sines({1, 197, 192}, 0.2);
  const torch::Tensor out = ResamplePositionEmbedding(pos, 2);
  ASSERT_EQ(out.sizes(), At(golden, "resample.output").sizes());
  // Interpolated in float32 on both sides.
  EXPECT_LT(RelativeError(out, At(golden, "resample.output")), 1e-6);
  // A weight file made for 224x224 loads into a 32x32 ViT.
  VisionModelOptions o = Options("vit_tiny_patch16", 32, 3, 10);
  NamedTensors tensors{{"pos_embed", pos}};
  AdaptVisionTensors(o, tensors);
  EXPECT_EQ(tensors.at("pos_embed").sizes(), (std::vector<int64_t>{1, 5, 192}));
}

TEST(VisionModelsTest, BlocksCoverEveryTensorOnce) {
  // A balance cuts the blocks; together they must hold exactly the module's
  // tensors, each once (a tensor outside every block would never train).
  for (const std::string& name : {"resnet18", "resnet50", "vit_tiny_patch16"}) {
    VisionModel model = MakeVisionModel(Options(name, 32, 3, 10));
    std::map<const void*, int> seen;
    for (const Block& b : model.blocks) {
      for (const torch::Tensor& p : b->parameters()) ++seen[p.unsafeGetTensorImpl()];
    }
    const auto params = model.module->parameters();
    EXPECT_EQ(seen.size(), params.size()) << name;
    for (const torch::Tensor& p : params) EXPECT_EQ(seen[p.unsafeGetTensorImpl()], 1) << name;
  }
  // Stem, 8 basic blocks, head; embedding, 12 blocks, head.
  EXPECT_EQ(MakeVisionModel(Options("resnet18", 32, 3, 10)).blocks.size(), 10u);
  EXPECT_EQ(MakeVisionModel(Options("vit_tiny_patch16", 32, 3, 10)).blocks.size(), 14u);
}

TEST(VisionModelsTest, OtherShapesAndTheSmallStem) {
  VisionModelOptions o = Options("resnet34", 16, 1, 7);
  o.small_stem = true;
  VisionModel model = MakeVisionModel(o);
  EXPECT_EQ(RunBlocks(model, torch::randn({2, 1, 16, 16})).sizes(), (std::vector<int64_t>{2, 7}));
  EXPECT_EQ(model.module->named_parameters()["conv1.weight"].sizes(),
            (std::vector<int64_t>{64, 1, 3, 3}));
  VisionModel vit = MakeVisionModel(Options("vit_small_patch16", 48, 4, 5));
  EXPECT_EQ(RunBlocks(vit, torch::randn({2, 4, 48, 48})).sizes(), (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(vit.module->named_parameters()["pos_embed"].sizes(),
            (std::vector<int64_t>{1, 10, 384}));
}

TEST(VisionModelsTest, EncodersHaveNoClassifier) {
  // As timm's num_classes=0: the representation, no fc / head tensors.
  for (const std::string& name : {"resnet50", "vit_tiny_patch16"}) {
    VisionModelOptions o = Options(name, 32, 3, 10);
    o.classifier = false;
    VisionModel model = MakeVisionModel(o);
    EXPECT_EQ(RunBlocks(model, torch::randn({2, 3, 32, 32})).sizes(),
              (std::vector<int64_t>{2, VisionModelFeatures(o)}));
    for (const auto& p : model.module->named_parameters()) {
      EXPECT_NE(p.key().rfind("fc.", 0), 0u) << p.key();
      EXPECT_NE(p.key().rfind("head.", 0), 0u) << p.key();
    }
    EXPECT_EQ(VisionModelBlocks(o), static_cast<int>(model.blocks.size()));
  }
}

TEST(VisionModelsTest, HalfBlocksCutFinerWithTheSameNamesAndMath) {
  VisionModelOptions whole = Options("vit_tiny_patch16", 32, 3, 10), half = whole;
  half.half_blocks = true;
  VisionModel a = MakeVisionModel(whole), b = MakeVisionModel(half);
  EXPECT_EQ(b.blocks.size(), 26u);
  EXPECT_EQ(VisionModelBlocks(half), 26);
  std::vector<std::string> names_a, names_b;
  for (const auto& p : a.module->named_parameters()) names_a.push_back(p.key());
  for (const auto& p : b.module->named_parameters()) names_b.push_back(p.key());
  EXPECT_EQ(names_a, names_b);
  a.module->to(torch::kFloat64);
  b.module->to(torch::kFloat64);
  Fill(*a.module);
  Fill(*b.module);
  const torch::Tensor x = Sines({2, 3, 32, 32}, 0.3);
  EXPECT_LT(RelativeError(RunBlocks(b, x), RunBlocks(a, x)), 1e-12);
  VisionModelOptions resnet = Options("resnet18", 32, 3, 10);
  resnet.half_blocks = true;
  EXPECT_NE(ErrorOf([&] { MakeVisionModel(resnet); }).find("half_blocks is for ViTs"),
            std::string::npos);
}

TEST(VisionModelsTest, ReplicasAreDeepCopies) {
  VisionModel model = MakeVisionModel(Options("vit_tiny_patch16", 32, 3, 10));
  const torch::Tensor x = torch::randn({2, 3, 32, 32});
  model.module->eval();
  BlockList copies = ReplicateBlocks(model.blocks);
  Activation a{x}, b{x};
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < copies.size(); ++i) {
    copies[i]->eval();
    a = model.blocks[i]->Forward(a);
    b = copies[i]->Forward(b);
  }
  EXPECT_TRUE(a[0].equal(b[0]));
  // Changing the original leaves the copies alone.
  for (const torch::Tensor& p : model.module->parameters()) p.add_(1.0);
  for (size_t i = 0; i < copies.size(); ++i) {
    const auto original = model.blocks[i]->parameters(), copy = copies[i]->parameters();
    ASSERT_EQ(original.size(), copy.size());
    for (size_t j = 0; j < copy.size(); ++j) EXPECT_FALSE(copy[j].equal(original[j]));
  }
}

TEST(VisionModelsTest, WeightFilesLoadStrictlyUnderPytorchNames) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(tmp ? tmp : "/tmp") + "/resnet18.safetensors";
  VisionModel a = MakeVisionModel(Options("resnet18", 32, 3, 10));
  WriteSafetensors(path, ModuleTensors(*a.module));
  VisionModel b = MakeVisionModel(Options("resnet18", 32, 3, 10));
  LoadModelFile(path, "teacher", b.description, *b.module);
  EXPECT_TRUE(b.module->named_parameters()["layer4.1.conv2.weight"].equal(
      a.module->named_parameters()["layer4.1.conv2.weight"]));
  EXPECT_TRUE(b.module->named_buffers()["layer1.0.bn1.running_var"].equal(
      a.module->named_buffers()["layer1.0.bn1.running_var"]));

  // Another architecture: named tensors, one line, the model left as it was.
  VisionModel c = MakeVisionModel(Options("resnet34", 32, 3, 10));
  const torch::Tensor before = c.module->named_parameters()["fc.weight"].clone();
  const std::string error =
      ErrorOf([&] { LoadModelFile(path, "teacher", c.description, *c.module); });
  EXPECT_NE(error.find("missing: layer1.2.bn1.bias"), std::string::npos) << error;
  EXPECT_EQ(error.find('\n'), std::string::npos) << error;
  EXPECT_TRUE(c.module->named_parameters()["fc.weight"].equal(before));
  // Another class count: the shape named.
  VisionModel d = MakeVisionModel(Options("resnet18", 32, 3, 100));
  const std::string shape_error =
      ErrorOf([&] { LoadModelFile(path, "teacher", d.description, *d.module); });
  EXPECT_NE(shape_error.find("fc.bias has shape [10] in the file but [100] in the model"),
            std::string::npos)
      << shape_error;
}

TEST(VisionModelsTest, BadOptionsAreOneLineErrors) {
  const std::string unknown = ErrorOf([] { MakeVisionModel(Options("resnet19", 224, 3, 10)); });
  EXPECT_NE(unknown.find("unknown model 'resnet19' (known: resnet18, resnet34"),
            std::string::npos)
      << unknown;
  EXPECT_NE(unknown.find("vit_large_patch16"), std::string::npos) << unknown;
  const std::string small = ErrorOf([] { MakeVisionModel(Options("resnet50", 28, 1, 10)); });
  EXPECT_NE(small.find("image_size 28 is too small for resnet50's 7x7 stride-2 stem"),
            std::string::npos)
      << small;
  const std::string patch =
      ErrorOf([] { MakeVisionModel(Options("vit_base_patch16", 40, 3, 10)); });
  EXPECT_NE(patch.find("image_size 40 does not fit vit_base_patch16's patch size 16"),
            std::string::npos)
      << patch;
  VisionModelOptions vit_stem = Options("vit_tiny_patch16", 32, 3, 10);
  vit_stem.small_stem = true;
  EXPECT_NE(ErrorOf([&] { MakeVisionModel(vit_stem); }).find("small_stem is for ResNets"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { MakeVisionModel(Options("resnet18", 32, 0, 10)); })
                .find("positive image_size, channels and num_classes"),
            std::string::npos);
}


// Blockwise students of named teachers (models/mirror_student.h).
class MirrorStudentTest : public ::testing::TestWithParam<std::string> {};

TEST_P(MirrorStudentTest, EachBlockMirrorsItsTeacherBlockAndCostsLess) {
  torch::manual_seed(3);
  VisionModelOptions o = Options(GetParam(), 32, 3, 7);
  o.small_stem = GetParam().rfind("resnet", 0) == 0;
  VisionModel teacher = MakeVisionModel(o);
  std::map<std::string, torch::Tensor> before;
  for (const auto& [name, t] : AllTensors(*teacher.module)) before[name] = t.clone();

  MirrorStudent student = MakeMirrorStudent(teacher.blocks, o.shape);
  ASSERT_EQ(student.blocks.size(), teacher.blocks.size());
  // Shapes found without touching the teacher (batch-norm statistics
  // included).
  for (const auto& [name, t] : AllTensors(*teacher.module)) {
    EXPECT_TRUE(torch::equal(t, before.at(name))) << name;
  }
  // Student block i takes teacher block i's input and gives its output's
  // shape, so the blockwise losses are defined block by block.
  Activation x{torch::randn({2, 3, 32, 32})};
  for (size_t i = 0; i < teacher.blocks.size(); ++i) {
    const Activation t = teacher.blocks[i]->Forward(x);
    const Activation s = student.blocks[i]->Forward(x);
    EXPECT_EQ(s[0].sizes(), t[0].sizes()) << "block " << i;
    x = t;
  }
  EXPECT_EQ(x[0].sizes(), (std::vector<int64_t>{2, 7}));
  int64_t teacher_params = 0, student_params = 0;
  for (const auto& p : teacher.module->parameters()) teacher_params += p.numel();
  for (const auto& p : student.module->parameters()) student_params += p.numel();
  // Under 60% of the teacher's parameters (ViTs: about half, the MLP a
  // quarter as wide; ResNets: far less).
  EXPECT_LT(student_params * 10, teacher_params * 6);
  // The copied stem and head start from fresh values, not the teacher's.
  const auto first_teacher = teacher.blocks[0]->parameters();
  const auto first_student = student.blocks[0]->parameters();
  ASSERT_EQ(first_teacher.size(), first_student.size());
  for (size_t p = 0; p < first_teacher.size(); ++p) {
    if (first_teacher[p].dim() >= 2) EXPECT_FALSE(torch::equal(first_teacher[p], first_student[p]));
  }
}

INSTANTIATE_TEST_SUITE_P(Families, MirrorStudentTest,
                         ::testing::Values("resnet18", "resnet50", "vit_tiny_patch16"));

TEST(MirrorStudentTest, UnmirrorableBlocksAreNamed) {
  torch::nn::Sequential teacher(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 4, 3).padding(1)),
                                torch::nn::Flatten(), torch::nn::Linear(4 * 8 * 8, 3));
  try {
    MakeMirrorStudent(BlocksFromSequential(teacher), ImageShape{8, 1, 3});
    FAIL() << "mirrored a block that flattens";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("teacher block 1, which maps [1, 4, 8, 8] to [1, 256]"),
              std::string::npos)
        << e.what();
  }
  torch::nn::Sequential one(torch::nn::Linear(2, 2));
  EXPECT_THROW(MakeMirrorStudent(BlocksFromSequential(one), ImageShape{8, 1, 3}),
               std::invalid_argument);
}

}  // namespace
}  // namespace tspipe
