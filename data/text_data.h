// What masked-language-model recipes need from text: the fortune corpus
// tokenised with BERT's WordPiece, padded batches ({token ids, attention
// mask}), and DistilBERT's masking (Sanh et al. 2019; Hugging Face
// distiller.py prepare_batch_mlm).
#ifndef TSPIPE_DATA_TEXT_DATA_H_
#define TSPIPE_DATA_TEXT_DATA_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/batch_source.h"
#include "core/microbatch.h"
#include "data/wordpiece.h"

namespace tspipe {

// The real data set's name in DataRequest::data.
extern const char kFortunes[];

// Labels of positions the loss ignores (PyTorch's ignore_index).
constexpr int64_t kIgnoreLabel = -100;

struct MaskingOptions {
  // Share of the real tokens (ceil of it) to predict.
  double mask_prop = 0.15;
  // Positions are drawn without replacement with probability proportional
  // to count(token)^-smoothing (rarer tokens more often); special tokens
  // never.
  double smoothing = 0.7;
  // Of the predicted positions: replaced by [MASK], kept, a random token.
  double mask_share = 0.8;
  double keep_share = 0.1;
  double random_share = 0.1;
};

// A tokenised corpus: [CLS] pieces [SEP] per text, at most max_length ids.
struct TokenizedText {
  std::vector<std::vector<int64_t>> sequences;
  // count(token)^-smoothing over `sequences` (counts of at least 1), 0 for
  // special tokens: the masking weights. [vocab] float64.
  torch::Tensor token_weights;
};
TokenizedText TokenizeTexts(const std::vector<std::string>& texts,
                            const WordPieceTokenizer& tokenizer, int max_length,
                            double smoothing);

// Right-padded ids [N, T] and mask [N, T] (1 = real), T the longest.
std::pair<torch::Tensor, torch::Tensor> PadSequences(
    const std::vector<std::vector<int64_t>>& sequences, int64_t pad_id);

// DistilBERT's masking of a padded batch: ceil(mask_prop x real tokens)
// positions drawn by `token_weights` (never padding), each replaced by
// [MASK], kept or given a random token (uniform over the vocabulary).
// Returns {masked ids, labels}: labels hold the original id at predicted
// positions and kIgnoreLabel elsewhere. Draws from `generator` only.
std::pair<torch::Tensor, torch::Tensor> MaskTokens(const torch::Tensor& ids,
                                                   const torch::Tensor& mask,
                                                   const torch::Tensor& token_weights,
                                                   const MaskingOptions& options,
                                                   int64_t mask_id, torch::Generator& generator);

struct TextDataOptions {
  int max_length = 128;
  MaskingOptions masking;
  // Vocabulary file of the tokenizer (the teacher's vocab.txt).
  std::string vocab_path;
  int64_t vocab_size = 30522;
  int64_t mask_id = 103;
};

// Batches {ids, mask} -> targets {labels}, masked afresh for every batch:
// synthetic (random non-special ids, every sequence max_length long;
// `num_batches` cycled) or the fortunes' training split (the first
// train_samples texts if > 0), reshuffled every epoch with the seed, the
// incomplete tail dropped, each batch padded to its longest text. Throws
// std::runtime_error naming a missing corpus or vocabulary and the package
// that installs it.
std::unique_ptr<BatchSource> MakeTextData(const DataRequest& request,
                                          const TextDataOptions& options);

// The held-out split, masked with a fixed seed: what masked-token accuracy
// and perplexity are measured on. The first `limit` texts if > 0.
struct MaskedEvalSet {
  std::vector<Batch> batches;
  int64_t masked_tokens = 0;
};
MaskedEvalSet MakeMaskedEvalSet(const std::string& data_dir, const TextDataOptions& options,
                                int limit, int batch_size);

}  // namespace tspipe

#endif  // TSPIPE_DATA_TEXT_DATA_H_
