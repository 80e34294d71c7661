// Exported students against PyTorch: the golden files were made by
// tools/make_export_goldens.sh, which exports a trained student with the
// benchmark's --export and runs tools/pytorch_forward.py on it (the network
// rebuilt in plain PyTorch, loaded with load_state_dict(strict=True), one
// forward). Here the same file is loaded through the path teachers and
// initial students take (LoadModelFile) into tspipe's own network, and its
// forward must match PyTorch's; no Python is needed.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <string>

#include "io/file_util.h"
#include "io/safetensors.h"
#include "engine/model_files.h"
#include "engine/trainer.h"
#include "models/resnet.h"

namespace tspipe {
namespace {

// The shapes tools/make_export_goldens.sh trains (2 groups; the first of 2
// blocks with identity shortcuts, the second with a projection).
constexpr char kKdStudent[] = "tests/golden/kd_student.safetensors";
constexpr char kKdForward[] = "tests/golden/kd_student_pytorch_forward.safetensors";
constexpr char kByolStudent[] = "tests/golden/byol_student.safetensors";
constexpr char kByolForward[] = "tests/golden/byol_student_pytorch_forward.safetensors";
constexpr char kShapeOptions[] = "widths=8,16,blocks=2,1";

ResNetOptions KdShape() {
  ResNetOptions o;
  o.widths = {8, 16};
  o.blocks_per_group = {2, 1};
  return o;
}

ByolNetOptions ByolShape() {
  ByolNetOptions o;
  o.encoder = KdShape();
  o.hidden = 32;
  o.projection = 16;
  return o;
}

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name;
}

// max |a - b| / (1 + max |b|).
double RelativeError(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>() / (1 + b.abs().max().item<double>());
}

void ExpectForwardMatchesPytorch(torch::nn::Sequential net, const std::string& student,
                                 const std::string& forward) {
  LoadModelFile(student, "student", "golden", *net);
  const NamedTensors golden = ReadSafetensors(forward);
  const torch::Tensor x = golden.at("input");
  torch::NoGradGuard no_grad;
  net->eval();
  const torch::Tensor eval_out = net->forward(x);
  ASSERT_EQ(eval_out.sizes(), golden.at("eval_output").sizes());
  // Float32 on both sides, same LibTorch kernels or not: a few ulps.
  EXPECT_LT(RelativeError(eval_out, golden.at("eval_output")), 1e-5);
  // Train mode: batch norm with the batch's statistics.
  net->train();
  EXPECT_LT(RelativeError(net->forward(x), golden.at("train_output")), 1e-5);
  // The outputs are not trivially equal (a net that ignored batch norm's
  // mode would pass the two checks with one output).
  EXPECT_GT((golden.at("eval_output") - golden.at("train_output")).abs().max().item<double>(),
            1e-3);
}

TEST(ExportTest, KdStudentForwardEqualsPytorch) {
  ExpectForwardMatchesPytorch(MakeResNet(KdShape()), kKdStudent, kKdForward);
}

TEST(ExportTest, ByolOnlineNetworkForwardEqualsPytorch) {
  ExpectForwardMatchesPytorch(MakeByolOnline(ByolShape()), kByolStudent, kByolForward);
}

// The names are PyTorch's own: what PyTorch's load_state_dict(strict=True)
// took, read back without any mapping.
TEST(ExportTest, NamesArePytorchStateDictNames) {
  const NamedTensors t = ReadSafetensors(kKdStudent);
  for (const char* name : {"0.conv.weight", "0.bn.running_var", "0.bn.num_batches_tracked",
                           "1.conv1.weight", "2.bn2.bias", "3.shortcut.0.weight",
                           "3.shortcut.1.running_mean", "4.fc.weight", "4.fc.bias"}) {
    EXPECT_TRUE(t.count(name)) << name;
  }
  EXPECT_FALSE(t.count("1.shortcut.0.weight"));  // Identity shortcut: no tensors.
  EXPECT_EQ(t.at("0.bn.num_batches_tracked").scalar_type(), torch::kInt64);
  EXPECT_GT(t.at("0.bn.num_batches_tracked").item<int64_t>(), 0);  // Trained.
}

TrainConfig KdConfig() {
  TrainConfig c;
  c.algorithm = "kd";
  c.algorithm_options = std::string(kShapeOptions) + ",teacher_widths=8,16,teacher_blocks=2,1";
  c.scheduler = "sequential";
  c.stages = 1;
  c.batch_size = 4;
  c.microbatches = 1;
  return c;
}

// Import and export are each other's inverse through the Trainer: a student
// started from the file and exported untrained is the file, tensor for
// tensor, and a teacher of the student's shape loads from it too.
TEST(ExportTest, TrainerLoadsWhatItExports) {
  TrainConfig c = KdConfig();
  c.initial_checkpoint = kKdStudent;
  c.teacher_checkpoint = kKdStudent;
  Trainer trainer(c);
  const std::string out = TempPath("reexported.safetensors");
  trainer.ExportModel(out);
  const NamedTensors a = ReadSafetensors(kKdStudent), b = ReadSafetensors(out);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, tensor] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_TRUE(torch::equal(tensor, b.at(name))) << name;
  }
}

TEST(ExportTest, TeacherOfAnotherShapeIsRefusedNamingTheTensor) {
  TrainConfig c = KdConfig();
  c.algorithm_options = std::string(kShapeOptions) + ",teacher_widths=8,32,teacher_blocks=2,1";
  c.teacher_checkpoint = kKdStudent;
  try {
    Trainer t(c);
    FAIL() << "a teacher of widths 8,32 loaded a student of widths 8,16";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("teacher checkpoint tests/golden/kd_student.safetensors does not fit the "
                        "teacher (widths 8,32"),
              std::string::npos)
        << what;
    // The first misfit in name order: a batch norm of the second group.
    EXPECT_NE(what.find("3.bn1.bias has shape [16] in the file but [32] in the model"),
              std::string::npos)
        << what;
  }
}

std::string LoadError(const std::string& path, torch::nn::Module& module) {
  try {
    LoadModelFile(path, "teacher", "widths 8,16, blocks 2,1", module);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(ExportTest, BadFilesAreRefusedAndLeaveTheModelAsItWas) {
  torch::nn::Sequential net = MakeResNet(KdShape());
  const torch::Tensor before = net->parameters()[0].clone();
  const std::string bytes = ReadFile(kKdStudent);
  auto expect_refused = [&](const std::string& path, const std::string& words) {
    const std::string error = LoadError(path, *net);
    EXPECT_NE(error.find(words), std::string::npos) << "error: '" << error << "'";
    EXPECT_NE(error.find(path), std::string::npos) << error;
    EXPECT_TRUE(torch::equal(net->parameters()[0], before)) << path;
  };

  const std::string truncated = TempPath("truncated.safetensors");
  WriteFileAtomically(truncated, bytes.substr(0, bytes.size() - 100));
  expect_refused(truncated, "(truncated)");
  const std::string header_only = TempPath("header_only.safetensors");
  WriteFileAtomically(header_only, bytes.substr(0, 12));
  expect_refused(header_only, "safetensors");
  const std::string text = TempPath("notes.safetensors");
  WriteFileAtomically(text, "these are not weights\n");
  expect_refused(text, "is neither a LibTorch archive");
  expect_refused(TempPath("absent.safetensors"), "cannot open");

  NamedTensors file = ReadSafetensors(kKdStudent);
  NamedTensors t = file;
  t.erase("4.fc.bias");
  WriteSafetensors(TempPath("missing.safetensors"), t);
  expect_refused(TempPath("missing.safetensors"), "1 tensor(s) missing: 4.fc.bias");
  t = file;
  t["5.extra.weight"] = torch::zeros({2});
  WriteSafetensors(TempPath("extra.safetensors"), t);
  expect_refused(TempPath("extra.safetensors"), "1 unexpected tensor(s): 5.extra.weight");
  t = file;
  t["4.fc.weight"] = torch::zeros({10, 8});
  WriteSafetensors(TempPath("shape.safetensors"), t);
  expect_refused(TempPath("shape.safetensors"),
                 "4.fc.weight has shape [10, 8] in the file but [10, 16] in the model");
  t = file;
  t["0.bn.num_batches_tracked"] = torch::zeros({}, torch::kFloat32);
  WriteSafetensors(TempPath("kind.safetensors"), t);
  expect_refused(TempPath("kind.safetensors"),
                 "0.bn.num_batches_tracked is Float in the file but Long in the model");

  // The whole file loads, and then the model holds it.
  EXPECT_EQ(LoadError(kKdStudent, *net), "");
  EXPECT_TRUE(torch::equal(net->parameters()[0], file.at("0.conv.weight")));
}

// A float64 file (a student trained with dtype=float64) loads into a
// float32 network, converted as PyTorch's load_state_dict does.
TEST(ExportTest, FloatingTensorsAreConverted) {
  NamedTensors t = ReadSafetensors(kKdStudent);
  for (auto& [name, tensor] : t) {
    if (tensor.is_floating_point()) tensor = tensor.to(torch::kFloat64);
  }
  WriteSafetensors(TempPath("float64.safetensors"), t);
  torch::nn::Sequential net = MakeResNet(KdShape());
  EXPECT_EQ(LoadError(TempPath("float64.safetensors"), *net), "");
  EXPECT_TRUE(torch::allclose(net->parameters()[0].to(torch::kFloat64), t.at("0.conv.weight")));
}

}  // namespace
}  // namespace tspipe
