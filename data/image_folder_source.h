// The image-folder loader: a user's ImageFolder tree (data/image_folder.h)
// as mini-batches, decoded and augmented in C++ (data/image_decode.h,
// data/image_transforms.h) by `threads` decoder threads that fill a bounded
// queue of ready batches ahead of the step that needs them. No interpreter
// lock and no worker processes: a batch is built in place and handed over.
//
// Every batch is a pure function of (seed, its position in the stream):
// epoch e visits the images in a permutation drawn from (seed, e), the
// incomplete tail dropped, and image i's augmentation draws from
// ImageGenerator(seed, e, position, view). So every scheduler sees the same
// batches, and a resumed run (BatchSource::Seek) continues with the same
// pixels, whichever thread decodes what.
#ifndef TSPIPE_DATA_IMAGE_FOLDER_SOURCE_H_
#define TSPIPE_DATA_IMAGE_FOLDER_SOURCE_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/batch_source.h"
#include "data/image_folder.h"
#include "data/image_shape.h"

namespace tspipe {

struct ImageFolderOptions {
  std::string root;
  // Images come out at shape.channels x image_size x image_size; the folder's
  // classes must fit in shape.num_classes.
  ImageShape shape;
  int batch_size = 64;
  uint64_t seed = 0;
  // 0: one tensor of images (RandomResizedCrop and flip, or the evaluation
  // resize and centre crop when !augment); n > 0: n views (BYOL's two view
  // pipelines, alternating) for self-supervised methods.
  int views = 0;
  bool augment = true;
  // Every image resized whole to image_size instead, in training and
  // evaluation alike (no crops, no augmentation): for folders of images
  // already cropped to the object, e.g. a copy of Fashion-MNIST, to compare
  // with the IDX files. Views (views > 0) keep their augmentations.
  bool plain_resize = false;
  // Visit the images in order instead of a permutation per epoch
  // (evaluation).
  bool shuffle = true;
  // Use only N images (0 = all), spread evenly over the folder's order
  // (which is sorted by class, so the first N would be a few classes).
  int64_t limit = 0;
  // When given, the folder must have exactly these classes (an evaluation
  // folder against its training folder's ImageFolderClasses).
  std::vector<std::string> classes;
  int threads = 2;
  // Ready batches held ahead (0: 2 per thread).
  int prefetch = 0;
  // Non-image files are skipped and counted instead of refused, and an
  // image that does not decode is replaced by the next one in the folder's
  // order that does (the same one every time), each reported once.
  bool skip_bad_images = false;
};

// Loader figures for reports.
struct LoaderStats {
  int64_t batches = 0;       // Handed out by Next().
  double wait_seconds = 0;   // Next() blocked waiting for a batch.
  double last_wait_seconds = 0;
  int64_t bad_images = 0;    // Skipped (skip_bad_images).
};

class ImageFolderSource : public BatchSource {
 public:
  // Scans the folder (ScanImageFolder's errors) and starts the threads.
  // Throws std::invalid_argument naming the option for a folder with more
  // classes than num_classes or fewer images than one batch.
  explicit ImageFolderSource(const ImageFolderOptions& options);
  ~ImageFolderSource() override;

  // The next batch; rethrows, as std::runtime_error naming the file, what
  // stopped a decoder thread (a corrupt image without skip_bad_images).
  Batch Next() override;
  int64_t size() const override;
  bool Seek(int64_t batches) override;

  const ImageFolder& folder() const;
  LoaderStats stats() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Every image of `options.root` (the first options.limit if > 0) in the
// folder's order through the evaluation pipeline (resize to image_size /
// 0.875, centre crop, normalise; or plain_resize), decoded by options.threads threads:
// images [N, C, S, S] and int64 labels [N]. Bad images as the source
// treats them (options.skip_bad_images).
struct EvalImages {
  torch::Tensor images;
  torch::Tensor labels;
};
EvalImages LoadImageFolderForEval(const ImageFolderOptions& options);

}  // namespace tspipe

#endif  // TSPIPE_DATA_IMAGE_FOLDER_SOURCE_H_
