#include "data/idx.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <zlib.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace tspipe {
namespace {

std::string TmpDir() {
  const char* d = std::getenv("TEST_TMPDIR");
  return d ? d : "/tmp";
}

// A fresh directory per test, so fake data sets never see each other's files.
std::string MakeDir(const std::string& name) {
  std::string dir = TmpDir() + "/" + name;
  ::mkdir(dir.c_str(), 0755);
  return dir;
}

// The IDX encoding of `data` with sizes `dims` and element type `type`.
std::string IdxBytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data,
                     uint8_t type = 0x08) {
  std::string s = {0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) s += static_cast<char>((d >> shift) & 0xff);
  }
  s.append(data.begin(), data.end());
  return s;
}

void WriteRaw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), bytes.size());
  ASSERT_TRUE(out.good()) << path;
}

void WriteGz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

// The message ReadIdx/LoadFashionMnist throws; fails the test when none is.
template <typename F>
std::string ErrorOf(F f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no std::runtime_error thrown";
  return "";
}

std::vector<uint8_t> Iota(size_t n, int mod = 256) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i * 7 + 3) % mod);
  return v;
}

TEST(ReadIdxTest, RawAndGzippedReadBackWhatWasWritten) {
  std::string dir = MakeDir("roundtrip");
  std::vector<uint8_t> data = Iota(3 * 4 * 5);
  std::string bytes = IdxBytes({3, 4, 5}, data);
  WriteRaw(dir + "/a.idx", bytes);
  WriteGz(dir + "/a.idx.gz", bytes);

  IdxArray raw = ReadIdx(dir + "/a.idx");
  EXPECT_EQ(raw.dims, (std::vector<int64_t>{3, 4, 5}));
  EXPECT_EQ(raw.data, data);
  IdxArray gz = ReadIdx(dir + "/a.idx.gz");
  EXPECT_EQ(gz.dims, raw.dims);
  EXPECT_EQ(gz.data, raw.data);
}

TEST(ReadIdxTest, LargerThanOneChunk) {
  // More than the reader's 1 MiB chunk, so the chunked loop is exercised.
  std::string dir = MakeDir("large");
  std::vector<uint8_t> data = Iota(3 * 1000 * 1000, 251);
  std::string bytes = IdxBytes({3, 1000, 1000}, data);
  WriteGz(dir + "/big.gz", bytes);
  IdxArray a = ReadIdx(dir + "/big.gz");
  EXPECT_EQ(a.dims, (std::vector<int64_t>{3, 1000, 1000}));
  EXPECT_EQ(a.data, data);
}

TEST(ReadIdxTest, MissingFileNamesThePath) {
  std::string path = TmpDir() + "/no-such.idx";
  std::string msg = ErrorOf([&] { ReadIdx(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
}

TEST(ReadIdxTest, TruncatedDataRejected) {
  std::string dir = MakeDir("truncated");
  std::string bytes = IdxBytes({2, 10}, Iota(19));  // One byte short.
  for (bool gz : {false, true}) {
    std::string path = dir + (gz ? "/t.gz" : "/t.idx");
    gz ? WriteGz(path, bytes) : WriteRaw(path, bytes);
    std::string msg = ErrorOf([&] { ReadIdx(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
    EXPECT_NE(msg.find("20"), std::string::npos) << msg;
    EXPECT_NE(msg.find("19"), std::string::npos) << msg;
  }
}

TEST(ReadIdxTest, TruncatedHeaderRejected) {
  std::string dir = MakeDir("short_header");
  std::string bytes = IdxBytes({2, 10}, {}).substr(0, 6);
  WriteRaw(dir + "/h.idx", bytes);
  EXPECT_NE(ErrorOf([&] { ReadIdx(dir + "/h.idx"); }).find("truncated"), std::string::npos);
  WriteRaw(dir + "/e.idx", "");
  EXPECT_NE(ErrorOf([&] { ReadIdx(dir + "/e.idx"); }).find("truncated"), std::string::npos);
}

TEST(ReadIdxTest, TrailingBytesRejected) {
  std::string dir = MakeDir("trailing");
  std::string bytes = IdxBytes({4}, Iota(4)) + "x";
  WriteRaw(dir + "/x.idx", bytes);
  std::string msg = ErrorOf([&] { ReadIdx(dir + "/x.idx"); });
  EXPECT_NE(msg.find("trailing"), std::string::npos) << msg;
}

TEST(ReadIdxTest, BadMagicRejected) {
  std::string dir = MakeDir("magic");
  std::string bytes = IdxBytes({4}, Iota(4));
  bytes[1] = 0x01;
  WriteRaw(dir + "/m.idx", bytes);
  std::string msg = ErrorOf([&] { ReadIdx(dir + "/m.idx"); });
  EXPECT_NE(msg.find(dir + "/m.idx"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bad magic"), std::string::npos) << msg;
}

TEST(ReadIdxTest, OtherElementTypesRejected) {
  std::string dir = MakeDir("type");
  WriteRaw(dir + "/f.idx", IdxBytes({4}, Iota(16), /*type=*/0x0d));  // float32
  std::string msg = ErrorOf([&] { ReadIdx(dir + "/f.idx"); });
  EXPECT_NE(msg.find("0x0d"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unsupported element type"), std::string::npos) << msg;
}

TEST(ReadIdxTest, CorruptGzipRejected) {
  std::string dir = MakeDir("corrupt_gz");
  WriteGz(dir + "/c.gz", IdxBytes({100}, Iota(100)));
  std::string bytes;
  {
    std::ifstream in(dir + "/c.gz", std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  // Cut the deflate stream in half: valid gzip magic, no end.
  WriteRaw(dir + "/c.gz", bytes.substr(0, bytes.size() / 2));
  std::string msg = ErrorOf([&] { ReadIdx(dir + "/c.gz"); });
  EXPECT_NE(msg.find(dir + "/c.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gzip"), std::string::npos) << msg;
  // All IDX bytes present, only the gzip trailer (CRC, length) missing: the
  // stream is still incomplete and must not pass silently.
  WriteRaw(dir + "/c.gz", bytes.substr(0, bytes.size() - 8));
  msg = ErrorOf([&] { ReadIdx(dir + "/c.gz"); });
  EXPECT_NE(msg.find("truncated gzip"), std::string::npos) << msg;
  // A flipped bit in the CRC.
  std::string bad_crc = bytes;
  bad_crc[bad_crc.size() - 8] ^= 1;
  WriteRaw(dir + "/c.gz", bad_crc);
  msg = ErrorOf([&] { ReadIdx(dir + "/c.gz"); });
  EXPECT_NE(msg.find("gzip"), std::string::npos) << msg;
}

// Writes a fake split into `dir`: `n` images of 28x28 and the given labels.
void WriteSplit(const std::string& dir, const std::string& prefix, uint32_t n,
                const std::vector<uint8_t>& labels, bool gz = true) {
  std::string images = IdxBytes({n, 28, 28}, Iota(n * 28 * 28));
  std::string label_bytes = IdxBytes({static_cast<uint32_t>(labels.size())}, labels);
  std::string suffix = gz ? ".gz" : "";
  auto write = gz ? WriteGz : WriteRaw;
  write(dir + "/" + prefix + "-images-idx3-ubyte" + suffix, images);
  write(dir + "/" + prefix + "-labels-idx1-ubyte" + suffix, label_bytes);
}

TEST(LoadFashionMnistTest, LoadsATinyFakeDataSet) {
  std::string dir = MakeDir("fake_ok");
  WriteSplit(dir, "train", 3, {0, 9, 4});
  WriteSplit(dir, "t10k", 2, {1, 2}, /*gz=*/false);  // Uncompressed names work too.
  FashionMnistSplit train = LoadFashionMnist(dir, /*train=*/true);
  EXPECT_EQ(train.images.dims, (std::vector<int64_t>{3, 28, 28}));
  EXPECT_EQ(train.images.data, Iota(3 * 28 * 28));
  EXPECT_EQ(train.labels.dims, (std::vector<int64_t>{3}));
  EXPECT_EQ(train.labels.data, (std::vector<uint8_t>{0, 9, 4}));
  FashionMnistSplit test = LoadFashionMnist(dir, /*train=*/false);
  EXPECT_EQ(test.images.dims, (std::vector<int64_t>{2, 28, 28}));
  EXPECT_EQ(test.labels.data, (std::vector<uint8_t>{1, 2}));
}

TEST(LoadFashionMnistTest, MissingFileSaysHowToInstall) {
  std::string dir = MakeDir("fake_empty");
  std::string msg = ErrorOf([&] { LoadFashionMnist(dir, /*train=*/true); });
  EXPECT_NE(msg.find(dir + "/train-images-idx3-ubyte.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("dataset-fashion-mnist"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
}

TEST(LoadFashionMnistTest, CountMismatchRejected) {
  std::string dir = MakeDir("fake_mismatch");
  WriteSplit(dir, "train", 3, {0, 1});
  std::string msg = ErrorOf([&] { LoadFashionMnist(dir, /*train=*/true); });
  EXPECT_NE(msg.find("3 images"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2 labels"), std::string::npos) << msg;
}

TEST(LoadFashionMnistTest, LabelOutOfRangeRejected) {
  std::string dir = MakeDir("fake_label");
  WriteSplit(dir, "train", 3, {0, 10, 1});
  std::string msg = ErrorOf([&] { LoadFashionMnist(dir, /*train=*/true); });
  EXPECT_NE(msg.find("train-labels-idx1-ubyte.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("label 1 is 10"), std::string::npos) << msg;
}

TEST(LoadFashionMnistTest, WrongImageRankRejected) {
  std::string dir = MakeDir("fake_rank");
  WriteGz(dir + "/train-images-idx3-ubyte.gz", IdxBytes({3, 784}, Iota(3 * 784)));
  WriteGz(dir + "/train-labels-idx1-ubyte.gz", IdxBytes({3}, {0, 1, 2}));
  std::string msg = ErrorOf([&] { LoadFashionMnist(dir, /*train=*/true); });
  EXPECT_NE(msg.find("[3,784]"), std::string::npos) << msg;
}

// Runs only where the Debian package dataset-fashion-mnist is installed.
TEST(LoadFashionMnistTest, RealDataSet) {
  struct stat st;
  if (::stat(kDefaultFashionMnistDir, &st) != 0) {
    GTEST_SKIP() << kDefaultFashionMnistDir << " absent";
  }
  FashionMnistSplit train = LoadFashionMnist(kDefaultFashionMnistDir, /*train=*/true);
  EXPECT_EQ(train.images.dims, (std::vector<int64_t>{60000, 28, 28}));
  EXPECT_EQ(train.labels.dims, (std::vector<int64_t>{60000}));
  std::set<uint8_t> classes(train.labels.data.begin(), train.labels.data.end());
  EXPECT_EQ(classes.size(), 10u);
  FashionMnistSplit test = LoadFashionMnist(kDefaultFashionMnistDir, /*train=*/false);
  EXPECT_EQ(test.images.dims, (std::vector<int64_t>{10000, 28, 28}));
  EXPECT_EQ(test.labels.dims, (std::vector<int64_t>{10000}));
}

}  // namespace
}  // namespace tspipe
