// Reader for IDX files, the format MNIST and Fashion-MNIST ship in. Kept free
// of LibTorch so it compiles fast and its error paths are cheap to test; the
// caller turns the bytes into tensors.
#ifndef TSPIPE_DATA_IDX_H_
#define TSPIPE_DATA_IDX_H_

#include <cstdint>
#include <string>
#include <vector>

namespace tspipe {

// Where the Debian package dataset-fashion-mnist installs the IDX files.
extern const char kDefaultFashionMnistDir[];

// An unsigned-byte IDX array: `data` holds prod(dims) bytes in row-major order.
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

// Reads an IDX file of unsigned bytes (type 0x08): two zero bytes, the type
// byte, the number of dimensions, that many big-endian uint32 sizes, then the
// data. Gzipped files are decompressed transparently. Throws
// std::runtime_error naming `path` and the problem when the file is missing,
// unreadable or corrupt, has a bad magic number or another element type, is
// truncated, or has bytes after the data.
IdxArray ReadIdx(const std::string& path);

// One split of Fashion-MNIST: images [N, rows, cols] and labels [N] in 0..9.
struct FashionMnistSplit {
  IdxArray images;
  IdxArray labels;
};

// Loads the train (60000 images) or test (10000 images) split from `dir`:
// {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz, or the same names without
// .gz when the gzipped file is absent. Throws std::runtime_error naming the
// file and the problem when a file is missing (and how to install it), the
// shapes are wrong or disagree, or a label is not below 10.
FashionMnistSplit LoadFashionMnist(const std::string& dir, bool train);

}  // namespace tspipe

#endif  // TSPIPE_DATA_IDX_H_
