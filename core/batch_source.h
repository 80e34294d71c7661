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
};

// An endless stream of mini-batches (epochs are the source's business).
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual Batch Next() = 0;
  // Training examples behind the stream (0 for synthetic data).
  virtual int64_t size() const { return 0; }
};

}  // namespace tspipe

#endif  // TSPIPE_CORE_BATCH_SOURCE_H_
