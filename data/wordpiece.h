// BERT's uncased WordPiece tokenizer, as Hugging Face's BertTokenizer (and
// its `tokenizers` twin with BertNormalizer + BertPreTokenizer + WordPiece)
// does it, so that a pretrained BERT sees the ids it was trained on:
//  1. special tokens ([PAD] [UNK] [CLS] [SEP] [MASK]) written in the raw text
//     are split out first and kept as they are;
//  2. clean: NUL, U+FFFD and control/format/unassigned characters go, every
//     whitespace character becomes a space;
//  3. CJK ideographs get a space on each side;
//  4. accents go: NFD, then nonspacing marks (Mn) dropped;
//  5. lowercase (Unicode simple case mapping);
//  6. words split on whitespace, each punctuation character its own word;
//  7. WordPiece: greedy longest match from the left, "##" on continuations;
//     a word longer than 100 characters, or one that cannot be matched
//     completely, is [UNK].
// Unicode categories, NFD and case mapping come from utf8proc. Invalid UTF-8
// bytes read as U+FFFD (as Python's errors="replace"), which step 2 drops.
#ifndef TSPIPE_DATA_WORDPIECE_H_
#define TSPIPE_DATA_WORDPIECE_H_

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace tspipe {

class WordPieceTokenizer {
 public:
  // `vocab[i]` is the token of id i. Throws std::invalid_argument when a
  // special token is missing or a token repeats.
  explicit WordPieceTokenizer(std::vector<std::string> vocab);
  // Reads a BERT vocab.txt (one token per line, id = line number). Throws
  // std::runtime_error naming the file when it is missing or empty.
  static WordPieceTokenizer FromVocabFile(const std::string& path);

  // Word pieces of `text` without [CLS]/[SEP].
  std::vector<std::string> Tokenize(const std::string& text) const;
  std::vector<int64_t> Encode(const std::string& text) const;
  // [CLS] pieces [SEP], the pieces cut so that the whole is at most
  // `max_length` ids (>= 2), as the tokenizer's truncation does.
  std::vector<int64_t> EncodeForModel(const std::string& text, int max_length) const;

  // The id of `token`; throws std::invalid_argument when it is not in the
  // vocabulary.
  int64_t Id(const std::string& token) const;
  const std::string& Token(int64_t id) const;
  int64_t vocab_size() const { return static_cast<int64_t>(vocab_.size()); }
  int64_t pad_id() const { return pad_; }
  int64_t unk_id() const { return unk_; }
  int64_t cls_id() const { return cls_; }
  int64_t sep_id() const { return sep_; }
  int64_t mask_id() const { return mask_; }
  // True for [PAD], [UNK], [CLS], [SEP] and [MASK].
  bool IsSpecial(int64_t id) const;

 private:
  void AppendWord(const std::u32string& word, std::vector<std::string>& out) const;

  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int64_t> ids_;
  int64_t pad_ = 0, unk_ = 0, cls_ = 0, sep_ = 0, mask_ = 0;
};

}  // namespace tspipe

#endif  // TSPIPE_DATA_WORDPIECE_H_
