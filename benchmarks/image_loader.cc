// Images per second of tspipe's image-folder loader alone (no training):
// the counterpart of tools/torch_loader_bench.py, which times PyTorch's
// DataLoader with torchvision's transforms on the same folder;
// tools/compare_loaders.sh runs the two interleaved.
//
//   ./tools/bazel run //benchmarks:image_loader -- --data_dir=ROOT --mode=byol
//
// Prints one line: tspipe_loader mode=<mode> threads=<n> batch_size=<b>
// image_size=<s> images_per_second=<x.x>
#include <gflags/gflags.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <string>

#include "data/image_folder_source.h"

DEFINE_string(data_dir, "", "The image folder (ROOT/<class>/<image>).");
DEFINE_string(mode, "train",
              "train (RandomResizedCrop, flip), byol (BYOL's two views) or eval (resize, "
              "centre crop).");
DEFINE_int32(image_size, 224, "Output side in pixels.");
DEFINE_int32(batch_size, 64, "Images per batch.");
DEFINE_int32(data_threads, 2, "Decoder threads.");
DEFINE_int32(batches, 40, "Timed batches.");
DEFINE_int32(warmup, 5, "Batches before timing starts (threads starting, queue filling).");

int main(int argc, char** argv) {
  gflags::SetUsageMessage("Times tspipe's image-folder loader alone.");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  try {
    if (FLAGS_mode != "train" && FLAGS_mode != "byol" && FLAGS_mode != "eval") {
      throw std::invalid_argument("--mode=" + FLAGS_mode + ": use train, byol or eval");
    }
    if (FLAGS_batches < 1 || FLAGS_warmup < 0) {
      throw std::invalid_argument("--batches must be at least 1 and --warmup at least 0");
    }
    tspipe::ImageFolderOptions o;
    o.root = FLAGS_data_dir;
    o.shape = {FLAGS_image_size, 3, 1 << 20};
    o.batch_size = FLAGS_batch_size;
    o.views = FLAGS_mode == "byol" ? 2 : 0;
    o.augment = FLAGS_mode != "eval";
    o.threads = FLAGS_data_threads;
    tspipe::ImageFolderSource source(o);
    for (int i = 0; i < FLAGS_warmup; ++i) source.Next();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < FLAGS_batches; ++i) source.Next();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("tspipe_loader mode=%s threads=%d batch_size=%d image_size=%d "
                "images_per_second=%.1f\n",
                FLAGS_mode.c_str(), FLAGS_data_threads, FLAGS_batch_size, FLAGS_image_size,
                FLAGS_batches * static_cast<double>(FLAGS_batch_size) / seconds);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "image_loader: %s\n", e.what());
    return 1;
  }
  return 0;
}
