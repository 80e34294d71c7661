#include "data/idx.h"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>

namespace tspipe {

const char kDefaultFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";

namespace {

constexpr uint8_t kUnsignedByteType = 0x08;
// Real IDX files have at most a handful of dimensions; a larger count means
// the header is garbage.
constexpr int kMaxDims = 16;
// Read in chunks, so a corrupt header announcing terabytes fails as truncated
// instead of allocating them up front.
constexpr size_t kChunk = size_t{1} << 20;

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

[[noreturn]] void Fail(const std::string& path, const std::string& problem) {
  throw std::runtime_error("IDX file " + path + ": " + problem);
}

struct GzCloser {
  void operator()(gzFile f) const { gzclose(f); }
};
using GzPtr = std::unique_ptr<gzFile_s, GzCloser>;

// Reads up to `n` bytes; fewer only at end of file. gzread also reads files
// that are not gzipped, byte for byte.
size_t ReadSome(gzFile f, const std::string& path, uint8_t* out, size_t n) {
  size_t done = 0;
  while (done < n) {
    unsigned want = static_cast<unsigned>(std::min(n - done, kChunk));
    int got = gzread(f, out + done, want);
    if (got <= 0) {
      // zlib reports a gzip stream cut short (no CRC trailer) as a short read
      // plus an error state, not as -1, so check the state on every stop.
      int err = Z_OK;
      const char* msg = gzerror(f, &err);
      if (err != Z_OK) Fail(path, std::string("corrupt or truncated gzip stream: ") + msg);
      if (got < 0) Fail(path, std::string("read error: ") + std::strerror(errno));
      break;
    }
    done += static_cast<size_t>(got);
  }
  return done;
}

std::string DimsString(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) s += ",";
    s += std::to_string(dims[i]);
  }
  return s + "]";
}

}  // namespace

IdxArray ReadIdx(const std::string& path) {
  if (!FileExists(path)) Fail(path, "is missing");
  GzPtr f(gzopen(path.c_str(), "rb"));
  if (!f) Fail(path, std::string("cannot open: ") + std::strerror(errno));
  gzbuffer(f.get(), 1 << 17);

  uint8_t header[4];
  if (ReadSome(f.get(), path, header, 4) < 4) {
    Fail(path, "truncated: shorter than the 4-byte IDX header");
  }
  if (header[0] != 0 || header[1] != 0) {
    char buf[80];
    std::snprintf(buf, sizeof(buf), "bad magic: first bytes 0x%02x 0x%02x, expected 0x00 0x00",
                  header[0], header[1]);
    Fail(path, buf);
  }
  if (header[2] != kUnsignedByteType) {
    char buf[96];
    std::snprintf(buf, sizeof(buf),
                  "unsupported element type 0x%02x (only 0x08, unsigned byte, is supported)",
                  header[2]);
    Fail(path, buf);
  }
  int ndims = header[3];
  if (ndims > kMaxDims) {
    Fail(path, "header claims " + std::to_string(ndims) + " dimensions (at most " +
                   std::to_string(kMaxDims) + " supported)");
  }

  IdxArray out;
  uint64_t total = 1;
  for (int d = 0; d < ndims; ++d) {
    uint8_t b[4];
    if (ReadSome(f.get(), path, b, 4) < 4) {
      Fail(path, "truncated: header ends inside the size of dimension " + std::to_string(d));
    }
    uint64_t size = (uint64_t{b[0]} << 24) | (uint64_t{b[1]} << 16) | (uint64_t{b[2]} << 8) | b[3];
    out.dims.push_back(static_cast<int64_t>(size));
    // Sizes are below 2^32 each, so this only overflows after the check fails.
    if (size != 0 && total > std::numeric_limits<uint64_t>::max() / size) {
      Fail(path, "dimensions " + DimsString(out.dims) + " overflow");
    }
    total *= size;
  }

  out.data.reserve(static_cast<size_t>(std::min<uint64_t>(total, kChunk)));
  while (out.data.size() < total) {
    size_t old = out.data.size();
    size_t want = static_cast<size_t>(std::min<uint64_t>(total - old, kChunk));
    out.data.resize(old + want);
    size_t got = ReadSome(f.get(), path, out.data.data() + old, want);
    if (got < want) {
      Fail(path, "truncated: dimensions " + DimsString(out.dims) + " need " +
                     std::to_string(total) + " data bytes but the file has only " +
                     std::to_string(old + got));
    }
  }
  uint8_t extra;
  if (ReadSome(f.get(), path, &extra, 1) != 0) {
    Fail(path, "trailing bytes after the " + std::to_string(total) + " data bytes of dimensions " +
                   DimsString(out.dims));
  }
  return out;
}

namespace {

// The .gz name when present, else the uncompressed name; throws the install
// hint when neither exists.
std::string FindFashionMnistFile(const std::string& dir, const std::string& base) {
  std::string gz = dir + "/" + base + ".gz";
  if (FileExists(gz)) return gz;
  std::string raw = dir + "/" + base;
  if (FileExists(raw)) return raw;
  throw std::runtime_error("Fashion-MNIST file " + gz +
                           " is missing; install the Debian package dataset-fashion-mnist "
                           "(tools/setup.sh does) or pass the directory holding the IDX files");
}

}  // namespace

FashionMnistSplit LoadFashionMnist(const std::string& dir, bool train) {
  const std::string prefix = train ? "train" : "t10k";
  std::string images_path = FindFashionMnistFile(dir, prefix + "-images-idx3-ubyte");
  std::string labels_path = FindFashionMnistFile(dir, prefix + "-labels-idx1-ubyte");
  FashionMnistSplit split{ReadIdx(images_path), ReadIdx(labels_path)};
  const auto& im = split.images.dims;
  const auto& lb = split.labels.dims;
  if (im.size() != 3) {
    throw std::runtime_error("Fashion-MNIST images " + images_path + " have dimensions " +
                             DimsString(im) + "; expected 3 (N, rows, cols)");
  }
  if (lb.size() != 1) {
    throw std::runtime_error("Fashion-MNIST labels " + labels_path + " have dimensions " +
                             DimsString(lb) + "; expected 1 (N)");
  }
  if (im[0] != lb[0]) {
    throw std::runtime_error("Fashion-MNIST images " + images_path + " hold " +
                             std::to_string(im[0]) + " images but labels " + labels_path +
                             " hold " + std::to_string(lb[0]) + " labels");
  }
  const auto& labels = split.labels.data;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] >= 10) {
      throw std::runtime_error("Fashion-MNIST labels " + labels_path + ": label " +
                               std::to_string(i) + " is " + std::to_string(labels[i]) +
                               "; expected 0..9");
    }
  }
  return split;
}

}  // namespace tspipe
