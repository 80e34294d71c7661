#include "data/wordpiece.h"

#include <utf8proc.h>

#include <fstream>
#include <stdexcept>

namespace tspipe {
namespace {

constexpr const char* kSpecialTokens[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
// BertTokenizer's max_input_chars_per_word.
constexpr size_t kMaxCharsPerWord = 100;

std::u32string DecodeUtf8(const std::string& text) {
  std::u32string out;
  out.reserve(text.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(text.size());
  while (left > 0) {
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t n = utf8proc_iterate(p, left, &cp);
    if (n <= 0) {  // An invalid byte: U+FFFD, then resynchronise on the next byte.
      cp = 0xFFFD;
      n = 1;
    }
    out.push_back(static_cast<char32_t>(cp));
    p += n;
    left -= n;
  }
  return out;
}

std::string EncodeUtf8(const std::u32string& text) {
  std::string out;
  out.reserve(text.size());
  utf8proc_uint8_t buf[4];
  for (char32_t c : text) {
    utf8proc_ssize_t n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(c), buf);
    out.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
  }
  return out;
}

utf8proc_category_t Category(char32_t c) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(c));
}

// Rust's char::is_whitespace (Unicode White_Space) with \t \n \r, as the
// tokenizers crate tests it.
bool IsWhitespace(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r' || c == ' ') return true;
  if ((c >= 0x0B && c <= 0x0C) || c == 0x85) return true;
  utf8proc_category_t k = Category(c);
  return k == UTF8PROC_CATEGORY_ZS || k == UTF8PROC_CATEGORY_ZL || k == UTF8PROC_CATEGORY_ZP;
}

// The "other" categories (Cc, Cf, Cs, Co, Cn), except \t \n \r.
bool IsControl(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  switch (Category(c)) {
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
      return true;
    default:
      return false;
  }
}

// ASCII punctuation (which includes $ + < = > ^ ` | ~, symbols to Unicode)
// or any Unicode punctuation category.
bool IsPunctuation(char32_t c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
      (c >= 123 && c <= 126)) {
    return true;
  }
  switch (Category(c)) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

// The CJK Unified Ideograph blocks BERT isolates (its _is_chinese_char).
bool IsCjk(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// Canonical decomposition with canonical ordering (NFD), by utf8proc.
std::u32string Nfd(const std::u32string& text) {
  const std::string utf8 = EncodeUtf8(text);
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(utf8.data());
  const auto options = static_cast<utf8proc_option_t>(UTF8PROC_DECOMPOSE | UTF8PROC_STABLE);
  utf8proc_ssize_t n =
      utf8proc_decompose(p, static_cast<utf8proc_ssize_t>(utf8.size()), nullptr, 0, options);
  if (n < 0) throw std::runtime_error(std::string("NFD failed: ") + utf8proc_errmsg(n));
  std::vector<utf8proc_int32_t> buf(static_cast<size_t>(n));
  n = utf8proc_decompose(p, static_cast<utf8proc_ssize_t>(utf8.size()), buf.data(), n, options);
  if (n < 0) throw std::runtime_error(std::string("NFD failed: ") + utf8proc_errmsg(n));
  return std::u32string(buf.begin(), buf.begin() + n);
}

// BertNormalizer: clean, isolate CJK, strip accents, lowercase.
std::u32string Normalize(const std::u32string& text) {
  std::u32string cleaned;
  cleaned.reserve(text.size());
  for (char32_t c : text) {
    if (c == 0 || c == 0xFFFD || IsControl(c)) continue;
    if (IsWhitespace(c)) {
      cleaned.push_back(' ');
    } else if (IsCjk(c)) {
      cleaned.push_back(' ');
      cleaned.push_back(c);
      cleaned.push_back(' ');
    } else {
      cleaned.push_back(c);
    }
  }
  std::u32string out;
  out.reserve(cleaned.size());
  for (char32_t c : Nfd(cleaned)) {
    if (Category(c) == UTF8PROC_CATEGORY_MN) continue;
    out.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
  }
  return out;
}

}  // namespace

WordPieceTokenizer::WordPieceTokenizer(std::vector<std::string> vocab) : vocab_(std::move(vocab)) {
  for (size_t i = 0; i < vocab_.size(); ++i) {
    if (!ids_.emplace(vocab_[i], static_cast<int64_t>(i)).second) {
      throw std::invalid_argument("WordPiece vocabulary repeats the token '" + vocab_[i] +
                                  "' (ids " + std::to_string(ids_[vocab_[i]]) + " and " +
                                  std::to_string(i) + ")");
    }
  }
  pad_ = Id("[PAD]");
  unk_ = Id("[UNK]");
  cls_ = Id("[CLS]");
  sep_ = Id("[SEP]");
  mask_ = Id("[MASK]");
}

WordPieceTokenizer WordPieceTokenizer::FromVocabFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read the WordPiece vocabulary " + path);
  std::vector<std::string> vocab;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    vocab.push_back(line);
  }
  if (vocab.empty()) throw std::runtime_error("the WordPiece vocabulary " + path + " is empty");
  return WordPieceTokenizer(std::move(vocab));
}

int64_t WordPieceTokenizer::Id(const std::string& token) const {
  auto it = ids_.find(token);
  if (it == ids_.end()) {
    throw std::invalid_argument("'" + token + "' is not in the WordPiece vocabulary");
  }
  return it->second;
}

const std::string& WordPieceTokenizer::Token(int64_t id) const {
  if (id < 0 || id >= vocab_size()) {
    throw std::out_of_range("token id " + std::to_string(id) + " is outside the vocabulary of " +
                            std::to_string(vocab_size()));
  }
  return vocab_[static_cast<size_t>(id)];
}

bool WordPieceTokenizer::IsSpecial(int64_t id) const {
  return id == pad_ || id == unk_ || id == cls_ || id == sep_ || id == mask_;
}

void WordPieceTokenizer::AppendWord(const std::u32string& word, std::vector<std::string>& out) const {
  if (word.size() > kMaxCharsPerWord) {
    out.push_back("[UNK]");
    return;
  }
  std::vector<std::string> pieces;
  size_t start = 0;
  while (start < word.size()) {
    size_t end = word.size();
    std::string match;
    while (end > start) {
      std::string piece = EncodeUtf8(word.substr(start, end - start));
      if (start > 0) piece = "##" + piece;
      if (ids_.count(piece) != 0) {
        match = std::move(piece);
        break;
      }
      --end;
    }
    if (match.empty()) {  // Some part matches nothing: the whole word is unknown.
      out.push_back("[UNK]");
      return;
    }
    pieces.push_back(std::move(match));
    start = end;
  }
  out.insert(out.end(), pieces.begin(), pieces.end());
}

std::vector<std::string> WordPieceTokenizer::Tokenize(const std::string& text) const {
  std::vector<std::string> out;
  // Splits one stretch of ordinary text into words and those into pieces.
  auto tokenize_plain = [&](const std::string& plain) {
    std::u32string word;
    auto flush = [&] {
      if (!word.empty()) AppendWord(word, out);
      word.clear();
    };
    for (char32_t c : Normalize(DecodeUtf8(plain))) {
      if (IsWhitespace(c)) {
        flush();
      } else if (IsPunctuation(c)) {
        flush();
        AppendWord(std::u32string(1, c), out);
      } else {
        word.push_back(c);
      }
    }
    flush();
  };
  // Special tokens in the raw text are matched first, case-sensitively and
  // before normalisation, leftmost first (the tokenizer's added tokens).
  size_t pos = 0;
  while (pos < text.size()) {
    size_t best = std::string::npos;
    std::string best_token;
    for (const char* special : kSpecialTokens) {
      size_t at = text.find(special, pos);
      if (at < best) {
        best = at;
        best_token = special;
      }
    }
    if (best == std::string::npos) {
      tokenize_plain(text.substr(pos));
      break;
    }
    tokenize_plain(text.substr(pos, best - pos));
    out.push_back(best_token);
    pos = best + best_token.size();
  }
  return out;
}

std::vector<int64_t> WordPieceTokenizer::Encode(const std::string& text) const {
  std::vector<int64_t> ids;
  for (const std::string& piece : Tokenize(text)) ids.push_back(Id(piece));
  return ids;
}

std::vector<int64_t> WordPieceTokenizer::EncodeForModel(const std::string& text,
                                                        int max_length) const {
  if (max_length < 2) {
    throw std::invalid_argument("a maximum sequence length of " + std::to_string(max_length) +
                                " leaves no room for [CLS] and [SEP]");
  }
  std::vector<int64_t> pieces = Encode(text);
  if (pieces.size() > static_cast<size_t>(max_length - 2)) pieces.resize(max_length - 2);
  std::vector<int64_t> ids;
  ids.reserve(pieces.size() + 2);
  ids.push_back(cls_);
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  ids.push_back(sep_);
  return ids;
}

}  // namespace tspipe
