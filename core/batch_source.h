// Where training batches come from: the interface a data set implements
// (data/ has Fashion-MNIST, the fortune corpus and synthetic sources) and
// what the engine asks of it. Recipes pick a source (engine/recipe.h).
#ifndef TSPIPE_CORE_BATCH_SOURCE_H_
#define TSPIPE_CORE_BATCH_SOURCE_H_

#include <cstdint>
#include <string>

#include "core/microbatch.h"

namespace tspipe {

// What the engine asks of a batch source.
struct DataRequest {
  // "synthetic" (random batches, for throughput) or one of the recipe's
  // real data sets (Recipe::DataSets).
  std::string data = "synthetic";
  // Where the real data set lives; empty = the recipe's default.
  std::string data_dir;
  int batch_size = 64;
  int seed = 0;
  // Use only the first N training examples (0 = all).
  int train_samples = 0;
  // Synthetic: distinct batches generated up front and cycled, so that
  // generating data is not timed.
  int num_batches = 4;
  // Sources that decode files (image folders): decoder threads, and whether
  // a bad file is skipped (and counted) instead of ending the run.
  int data_threads = 2;
  bool skip_bad_images = false;
  // Image folders: each image resized whole, no crops or flips
  // (ImageFolderOptions::plain_resize).
  bool plain_resize = false;
};

// An endless stream of mini-batches (epochs are the source's business).
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual Batch Next() = 0;
  // Training examples behind the stream (0 for synthetic data).
  virtual int64_t size() const { return 0; }
  // Moves a fresh source to where it would be after `batches` calls of
  // Next(), without making those batches (a resumed run's data position),
  // and returns true; false when the source cannot, and the caller draws
  // and drops them instead. Sources whose batches are a pure function of
  // their position (the image-folder loader) can.
  virtual bool Seek(int64_t batches) {
    (void)batches;
    return false;
  }
};

}  // namespace tspipe

#endif  // TSPIPE_CORE_BATCH_SOURCE_H_
