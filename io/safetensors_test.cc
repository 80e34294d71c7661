#include "io/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "io/file_util.h"

namespace tspipe {
namespace {

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name;
}

std::string Header(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

std::string ErrorOf(const std::string& path) {
  try {
    ReadSafetensors(path);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

// A file written by Hugging Face's safetensors library
// (tools/make_bert_goldens.py): its int64 ids and float32 states read back
// with the shapes and values the JSON header and the sentences imply.
TEST(SafetensorsTest, ReadsAFileWrittenByThePythonLibrary) {
  NamedTensors t = ReadSafetensors("tests/golden/minilm_hidden.safetensors");
  ASSERT_EQ(t.size(), 3u);
  const torch::Tensor ids = t.at("input_ids");
  EXPECT_EQ(ids.scalar_type(), torch::kInt64);
  ASSERT_EQ(ids.dim(), 2);
  EXPECT_EQ(ids[0][0].item<int64_t>(), 101);  // [CLS]
  EXPECT_EQ(t.at("attention_mask").sizes(), ids.sizes());
  EXPECT_EQ(t.at("last_hidden_state").sizes(), (std::vector<int64_t>{ids.size(0), ids.size(1), 384}));
  EXPECT_EQ(t.at("last_hidden_state").scalar_type(), torch::kFloat32);
  // Every sequence ends in [SEP] at its last real position.
  for (int64_t r = 0; r < ids.size(0); ++r) {
    const int64_t len = t.at("attention_mask")[r].sum().item<int64_t>();
    EXPECT_EQ(ids[r][len - 1].item<int64_t>(), 102) << r;
  }
}

TEST(SafetensorsTest, WritesWhatItReads) {
  NamedTensors in = {{"b", torch::arange(6, torch::kInt64).view({2, 3})},
                     {"a", torch::randn({4, 1, 2}, torch::kFloat64)},
                     {"c", torch::tensor({true, false})},
                     {"empty", torch::zeros({0, 3})}};
  const std::string path = TempPath("roundtrip.safetensors");
  WriteSafetensors(path, in, {{"format", "pt"}});
  NamedTensors out = ReadSafetensors(path);
  ASSERT_EQ(out.size(), in.size());
  for (const auto& [name, t] : in) {
    EXPECT_EQ(out.at(name).scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(out.at(name), t)) << name;
  }
  // The header is padded to 8 bytes, so the data is aligned.
  const std::string bytes = ReadFile(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes[8], '{');
}

TEST(SafetensorsTest, BadFilesNameTheProblem) {
  const std::string good = TempPath("good.safetensors");
  WriteSafetensors(good, {{"w", torch::ones({4, 4})}});
  const std::string bytes = ReadFile(good);

  EXPECT_NE(ErrorOf(TempPath("missing.safetensors")).find("cannot read"), std::string::npos);

  const std::string tiny = TempPath("tiny.safetensors");
  WriteFileAtomically(tiny, "abc");
  EXPECT_NE(ErrorOf(tiny).find("less than the 8-byte header length"), std::string::npos);

  const std::string long_header = TempPath("long_header.safetensors");
  WriteFileAtomically(long_header, Header(1u << 30) + bytes.substr(8));
  EXPECT_NE(ErrorOf(long_header).find("bad header length"), std::string::npos) << ErrorOf(long_header);

  const std::string truncated = TempPath("truncated.safetensors");
  WriteFileAtomically(truncated, bytes.substr(0, bytes.size() - 10));
  EXPECT_NE(ErrorOf(truncated).find("(truncated)"), std::string::npos) << ErrorOf(truncated);

  const std::string not_json = TempPath("not_json.safetensors");
  WriteFileAtomically(not_json, Header(5) + "{oops");
  EXPECT_NE(ErrorOf(not_json).find("not JSON"), std::string::npos) << ErrorOf(not_json);

  const std::string bad_span = TempPath("bad_span.safetensors");
  const std::string header = R"({"w":{"dtype":"F32","shape":[4,4],"data_offsets":[0,60]}})";
  WriteFileAtomically(bad_span, Header(header.size()) + header + std::string(64, '\0'));
  EXPECT_NE(ErrorOf(bad_span).find("needs 64 bytes"), std::string::npos) << ErrorOf(bad_span);

  const std::string bad_dtype = TempPath("bad_dtype.safetensors");
  const std::string header2 = R"({"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})";
  WriteFileAtomically(bad_dtype, Header(header2.size()) + header2 + std::string(1, '\0'));
  EXPECT_NE(ErrorOf(bad_dtype).find("unsupported dtype F8_E4M3"), std::string::npos);
}

TEST(SafetensorsTest, TakeTensorChecksShapeAndDtype) {
  NamedTensors t = {{"w", torch::ones({2, 3})}};
  EXPECT_TRUE(torch::equal(TakeTensor(t, "w", {2, 3}, torch::kFloat32, "f"), t.at("w")));
  auto error = [&](auto&& f) {
    try {
      f();
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(error([&] { TakeTensor(t, "w", {3, 2}, torch::kFloat32, "f.safetensors"); }),
            "f.safetensors: tensor 'w' has shape [2, 3], expected [3, 2]");
  EXPECT_EQ(error([&] { TakeTensor(t, "w", {2, 3}, torch::kFloat64, "f.safetensors"); }),
            "f.safetensors: tensor 'w' has dtype Float, expected Double");
  EXPECT_EQ(error([&] { TakeTensor(t, "v", {2, 3}, torch::kFloat32, "f.safetensors"); }),
            "f.safetensors has no tensor 'v'");
}

}  // namespace
}  // namespace tspipe
