// The image-folder data path against torchvision and Pillow, from golden
// files tools/make_augment_goldens.py made (no Python needed here): JPEG and
// PNG decoding, every augmentation operation, ImageFolder's class and file
// order; and the loader's own promises: the same batches from any number of
// threads, a seek equal to drawing, bad data refused or skipped by name.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "data/image_decode.h"
#include "data/image_folder.h"
#include "data/image_folder_source.h"
#include "data/image_transforms.h"
#include "io/file_util.h"
#include "io/safetensors.h"

namespace tspipe {
namespace {

namespace fs = std::filesystem;

constexpr char kGolden[] = "tests/golden/augment_ops.safetensors";
constexpr char kJpeg[] = "tests/golden/augment_tiny.jpg";
constexpr char kPng[] = "tests/golden/augment_tiny.png";

// The formula image both sides compute.
RgbImage FormulaImage() {
  RgbImage im;
  im.height = 37;
  im.width = 53;
  im.pixels.resize(37 * 53 * 3);
  for (int y = 0; y < 37; ++y) {
    for (int x = 0; x < 53; ++x) {
      for (int c = 0; c < 3; ++c) {
        im.pixels[(y * 53 + x) * 3 + c] =
            static_cast<uint8_t>((y * 7 + x * 13 + c * 101 + (x * y) % 17) % 256);
      }
    }
  }
  return im;
}

torch::Tensor ToTensor(const FloatImage& im) {
  return torch::from_blob(const_cast<float*>(im.data.data()), {im.channels, im.height, im.width})
      .clone();
}

FloatImage FromTensor(const torch::Tensor& t) {
  FloatImage im;
  im.channels = static_cast<int>(t.size(0));
  im.height = static_cast<int>(t.size(1));
  im.width = static_cast<int>(t.size(2));
  torch::Tensor c = t.to(torch::kFloat32).contiguous();
  im.data.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  return im;
}

double MaxDiff(const FloatImage& a, const torch::Tensor& golden) {
  torch::Tensor t = ToTensor(a);
  EXPECT_EQ(t.sizes(), golden.sizes());
  if (t.sizes() != golden.sizes()) return 1e9;
  return (t - golden).abs().max().item<double>();
}

class AugmentGoldenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { golden_ = new NamedTensors(ReadSafetensors(kGolden)); }
  static const torch::Tensor& G(const std::string& name) { return golden_->at(name); }
  static NamedTensors* golden_;
};
NamedTensors* AugmentGoldenTest::golden_ = nullptr;

// Pixels are in [0, 1]. Resampling sums up to ~50 products in float32 in a
// different order than aten (and with weights computed in double here, in
// float there): 1e-5 is ~1/400 of one 8-bit level. The colour operations
// are elementwise float32 on the same formulas: 1e-5 too, except hue, whose
// HSV round trip divides by small ranges (2e-5).
constexpr double kTolerance = 1e-5;

TEST_F(AugmentGoldenTest, DecodingEqualsPillow) {
  const RgbImage input = FormulaImage();
  EXPECT_LT(MaxDiff(ToFloat(input), G("input")), 1e-7);
  // Both are libjpeg-turbo with its defaults: the same bytes.
  EXPECT_EQ(MaxDiff(ToFloat(DecodeImageFile(kJpeg)), G("jpeg_decoded")), 0.0);
  const RgbImage png = DecodeImageFile(kPng);
  EXPECT_EQ(png.pixels, input.pixels);
}

TEST_F(AugmentGoldenTest, ResizesEqualTorchvisionAntialiasedBilinear) {
  const RgbImage input = FormulaImage();
  EXPECT_LT(MaxDiff(ResizedCrop(input, {5, 7, 25, 40}, 20, 24), G("crop_down")), kTolerance);
  EXPECT_LT(MaxDiff(ResizedCrop(input, {3, 4, 10, 12}, 31, 29), G("crop_up")), kTolerance);
  EXPECT_LT(MaxDiff(ResizedCrop(input, {0, 0, 37, 53}, 24, 24), G("crop_full")), kTolerance);
  EXPECT_LT(MaxDiff(ResizedCrop(ToFloat(input), {5, 7, 25, 40}, 20, 24), G("crop_down")),
            kTolerance);
  EXPECT_LT(MaxDiff(ResizeCenterCrop(input, 32, 28), G("eval")), kTolerance);
}

TEST_F(AugmentGoldenTest, ColourAndFilterOperationsEqualTorchvision) {
  const FloatImage base = FromTensor(G("crop_down"));
  auto check = [&](const std::string& name, double tolerance, auto op) {
    FloatImage im = base;
    op(im);
    EXPECT_LE(MaxDiff(im, G(name)), tolerance) << name;
  };
  check("hflip", 0.0, [](FloatImage& im) { HorizontalFlip(im); });
  check("brightness", kTolerance, [](FloatImage& im) { AdjustBrightness(im, 1.3f); });
  check("contrast", kTolerance, [](FloatImage& im) { AdjustContrast(im, 0.7f); });
  check("saturation", kTolerance, [](FloatImage& im) { AdjustSaturation(im, 1.4f); });
  check("hue_pos", 2e-5, [](FloatImage& im) { AdjustHue(im, 0.08f); });
  check("hue_neg", 2e-5, [](FloatImage& im) { AdjustHue(im, -0.1f); });
  check("grayscale", kTolerance, [](FloatImage& im) { ToGrayscale(im, 3); });
  check("blur", kTolerance, [](FloatImage& im) { GaussianBlur(im, 7, 1.3f); });
  check("blur_big", kTolerance, [](FloatImage& im) { GaussianBlur(im, 23, 2.0f); });
  check("solarize", 0.0, [](FloatImage& im) { Solarize(im, 0.5f); });
  check("normalize", 1e-4, [](FloatImage& im) {
    Normalize(im, {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f});
  });
  check("jitter_chain", 2e-5, [](FloatImage& im) {
    AdjustContrast(im, 0.8f);
    AdjustHue(im, -0.05f);
    AdjustBrightness(im, 1.2f);
    AdjustSaturation(im, 0.6f);
  });
}

// A tree of files under a fresh temporary root.
class TempTree {
 public:
  TempTree() {
    root_ = fs::path(testing::TempDir()) /
            ("tree_" + std::to_string(counter_++) + "_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  ~TempTree() { fs::remove_all(root_); }
  void Add(const std::string& rel, const std::string& bytes = "") {
    fs::create_directories((root_ / rel).parent_path());
    std::ofstream(root_ / rel, std::ios::binary) << bytes;
  }
  std::string root() const { return root_.string(); }

 private:
  fs::path root_;
  static int counter_;
};
int TempTree::counter_ = 0;

TEST(ImageFolderTest, OrderIsTorchvisionImageFolders) {
  std::istringstream golden(ReadFile("tests/golden/image_folder_order.txt"));
  std::string classes_line;
  std::getline(golden, classes_line);
  std::vector<std::pair<int, std::string>> expected;
  int label;
  std::string rel;
  while (golden >> label >> rel) expected.push_back({label, rel});
  TempTree tree;
  for (const auto& [l, r] : expected) tree.Add(r);
  tree.Add(".DS_Store");  // System files are ignored (torchvision would refuse none).
  tree.Add("apple/.hidden.jpg");
  const ImageFolder folder = ScanImageFolder(tree.root());
  std::string classes;
  for (const std::string& c : folder.classes) classes += (classes.empty() ? "" : " ") + c;
  EXPECT_EQ(classes, classes_line);
  ASSERT_EQ(folder.samples.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(folder.samples[i].label, expected[i].first) << i;
    EXPECT_EQ(fs::relative(folder.samples[i].path, tree.root()).string(), expected[i].second) << i;
  }
}

// The one-line message `scan` throws contains `part`.
template <typename F>
void ExpectError(F scan, const std::string& part) {
  try {
    scan();
    ADD_FAILURE() << "no error; wanted one containing: " << part;
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
  }
}

TEST(ImageFolderTest, BadFoldersAreNamed) {
  TempTree tree;
  ExpectError([&] { ScanImageFolder(tree.root() + "/missing"); }, "/missing: no such folder");
  ExpectError([&] { ScanImageFolder(tree.root()); }, ": no class folders");
  tree.Add("a/x.jpg");
  tree.Add("b/notes.txt");
  ExpectError([&] { ScanImageFolder(tree.root()); }, "b/notes.txt: not an image");
  tree.Add("b/y.png");
  const ImageFolder skipped = ScanImageFolder(tree.root(), /*skip_non_images=*/true);
  EXPECT_EQ(skipped.samples.size(), 2u);
  EXPECT_EQ(skipped.skipped.size(), 1u);
  tree.Add("c/sub/readme");
  ExpectError([&] { ScanImageFolder(tree.root(), true); }, "/c: class folder has no images");
  ExpectError([&] { DecodeImage("", "e.jpg"); }, "e.jpg: not a JPEG or PNG image (empty file)");
  const std::string jpeg = ReadFile(kJpeg);
  ExpectError([&] { DecodeImage(jpeg.substr(0, jpeg.size() / 2), "half.jpg"); },
              "half.jpg: corrupt or truncated JPEG");
  const std::string png = ReadFile(kPng);
  ExpectError([&] { DecodeImage(png.substr(0, png.size() / 2), "half.png"); },
              "half.png: corrupt or truncated PNG");
}

// A folder of 2 classes x 6 copies of the golden images.
ImageFolderOptions SmallFolder(TempTree& tree) {
  const std::string jpeg = ReadFile(kJpeg), png = ReadFile(kPng);
  for (int i = 0; i < 6; ++i) {
    tree.Add("cat/" + std::to_string(i) + ".jpg", jpeg);
    tree.Add("dog/" + std::to_string(i) + ".png", png);
  }
  ImageFolderOptions o;
  o.root = tree.root();
  o.shape = {16, 3, 2};
  o.batch_size = 4;
  o.seed = 7;
  return o;
}

std::vector<Batch> Draw(BatchSource& source, int n) {
  std::vector<Batch> out;
  for (int i = 0; i < n; ++i) out.push_back(source.Next());
  return out;
}

void ExpectSame(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].inputs.size(), b[i].inputs.size());
    for (size_t v = 0; v < a[i].inputs.size(); ++v) {
      EXPECT_TRUE(torch::equal(a[i].inputs[v], b[i].inputs[v])) << "batch " << i << " view " << v;
    }
    EXPECT_TRUE(torch::equal(a[i].targets[0], b[i].targets[0])) << "batch " << i;
  }
}

TEST(ImageFolderSourceTest, SameBatchesFromAnyThreadsAndAfterASeek) {
  TempTree tree;
  ImageFolderOptions o = SmallFolder(tree);
  o.views = 2;
  o.threads = 0;
  ImageFolderSource inline_source(o);
  EXPECT_EQ(inline_source.size(), 12);
  // 3 batches per epoch: 7 batches cross two epoch boundaries.
  const std::vector<Batch> reference = Draw(inline_source, 7);
  o.threads = 3;
  ImageFolderSource threaded(o);
  ExpectSame(Draw(threaded, 7), reference);
  ImageFolderSource resumed(o);
  ASSERT_TRUE(resumed.Seek(4));
  ExpectSame(Draw(resumed, 3), {reference.begin() + 4, reference.end()});
  // Each epoch visits every image once; the views differ; shapes follow.
  torch::Tensor labels = torch::cat({reference[0].targets[0], reference[1].targets[0],
                                     reference[2].targets[0]});
  EXPECT_EQ(labels.sum().item<int64_t>(), 6);
  EXPECT_EQ(reference[0].inputs[0].sizes(), (std::vector<int64_t>{4, 3, 16, 16}));
  EXPECT_FALSE(torch::equal(reference[0].inputs[0], reference[0].inputs[1]));
  EXPECT_FALSE(torch::equal(reference[0].inputs[0], reference[3].inputs[0]));
}

TEST(ImageFolderSourceTest, CorruptImagesAreRefusedOrSkippedByName) {
  TempTree tree;
  ImageFolderOptions o = SmallFolder(tree);
  // Image 6 of 13 in the folder's order (the last cat), in the second batch.
  tree.Add("cat/9_corrupt.jpg", "not a jpeg at all");
  o.shuffle = false;
  o.threads = 2;
  {
    ImageFolderSource source(o);
    Draw(source, 1);
    ExpectError([&] { source.Next(); }, "cat/9_corrupt.jpg: not a JPEG or PNG image");
  }
  o.skip_bad_images = true;
  ImageFolderSource source(o);
  const std::vector<Batch> batches = Draw(source, 3);
  EXPECT_EQ(source.stats().bad_images, 1);
  // The next image (the first dog) takes its place, with its own label.
  EXPECT_TRUE(torch::equal(batches[1].targets[0], torch::tensor({0, 0, 1, 1}, torch::kInt64)));
  o.shape.num_classes = 1;
  ExpectError([&] { ImageFolderSource s(o); }, "has 2 class folders; num_classes=1");
  o.shape.num_classes = 2;
  o.batch_size = 64;
  ExpectError([&] { ImageFolderSource s(o); }, "has 13 images, fewer than one batch of 64");
}

TEST(ImageFolderSourceTest, LimitsSpreadOverClassesAndEvalClassesMustMatch) {
  TempTree tree;
  ImageFolderOptions o = SmallFolder(tree);
  o.shuffle = false;
  o.threads = 0;
  o.limit = 4;  // Of 12 in class order: images 0, 3, 6, 9 (two cats, two dogs).
  ImageFolderSource source(o);
  EXPECT_EQ(source.size(), 4);
  EXPECT_TRUE(torch::equal(source.Next().targets[0], torch::tensor({0, 0, 1, 1}, torch::kInt64)));
  o.limit = 0;
  o.augment = false;
  const EvalImages eval = LoadImageFolderForEval(o);
  EXPECT_EQ(eval.images.sizes(), (std::vector<int64_t>{12, 3, 16, 16}));
  EXPECT_EQ(eval.labels.sum().item<int64_t>(), 6);
  o.classes = {"cat", "dog", "eel"};
  o.shape.num_classes = 3;
  ExpectError([&] { LoadImageFolderForEval(o); },
              "has class (none) where the training folder has eel (class 2)");
}

// A PNG header claiming 65500 x 65500 pixels: refused before allocating.
TEST(ImageFolderTest, DecompressionBombsAreRefused) {
  auto be32 = [](uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                       static_cast<char>(v >> 8), static_cast<char>(v)};
  };
  const std::string ihdr = "IHDR" + be32(65500) + be32(65500) + std::string("\x08\x02\x00\x00\x00", 5);
  auto crc = [&](const std::string& chunk) {
    return be32(static_cast<uint32_t>(
        crc32(0, reinterpret_cast<const Bytef*>(chunk.data()), static_cast<uInt>(chunk.size()))));
  };
  // libpng reads the header chunks up to the first IDAT before the size is
  // known: an empty one follows.
  const std::string png = std::string("\x89PNG\r\n\x1a\n", 8) + be32(13) + ihdr + crc(ihdr) +
                          be32(0) + "IDAT" + crc("IDAT");
  ExpectError([&] { DecodeImage(png, "bomb.png"); },
              "bomb.png: 65500x65500 pixels, over the 178956970-pixel limit");
}

}  // namespace
}  // namespace tspipe
