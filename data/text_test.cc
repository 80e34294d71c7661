#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "io/file_util.h"
#include "data/text_corpus.h"
#include "data/wordpiece.h"

namespace tspipe {
namespace {

constexpr char kVocab[] = "external/minilm/model/vocab.txt";
constexpr char kGolden[] = "tests/golden/wordpiece_fortunes.json";

// Ids from Hugging Face's tokenizers (tools/make_bert_goldens.py): 2,000
// training fortunes, every non-ASCII fortune and hand-written Unicode cases.
TEST(WordPieceTest, MatchesHuggingFaceTokenizersOnTheCorpus) {
  WordPieceTokenizer tok = WordPieceTokenizer::FromVocabFile(kVocab);
  ASSERT_EQ(tok.vocab_size(), 30522);
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.unk_id(), 100);
  EXPECT_EQ(tok.cls_id(), 101);
  EXPECT_EQ(tok.sep_id(), 102);
  EXPECT_EQ(tok.mask_id(), 103);
  const nlohmann::json golden = nlohmann::json::parse(ReadFile(kGolden));
  const auto& cases = golden["cases"];
  ASSERT_GE(cases.size(), 2000u);
  int mismatches = 0;
  for (const auto& c : cases) {
    const std::string text = c["text"].get<std::string>();
    const std::vector<int64_t> want = c["ids"].get<std::vector<int64_t>>();
    const std::vector<int64_t> got = tok.EncodeForModel(text, 1 << 20);
    if (got != want && ++mismatches <= 5) {
      ADD_FAILURE() << "token ids differ for: " << text;
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << cases.size() << " texts";
}

TEST(WordPieceTest, TruncatesKeepingClsAndSep) {
  WordPieceTokenizer tok = WordPieceTokenizer::FromVocabFile(kVocab);
  const std::vector<int64_t> full = tok.EncodeForModel("one two three four five six", 100);
  ASSERT_EQ(full.size(), 8u);
  const std::vector<int64_t> cut = tok.EncodeForModel("one two three four five six", 5);
  EXPECT_EQ(cut, (std::vector<int64_t>{full[0], full[1], full[2], full[3], tok.sep_id()}));
  EXPECT_THROW(tok.EncodeForModel("x", 1), std::invalid_argument);
}

TEST(WordPieceTest, BadVocabularies) {
  EXPECT_THROW(WordPieceTokenizer::FromVocabFile("/nonexistent/vocab.txt"), std::runtime_error);
  // No [MASK]: a BERT vocabulary must have every special token.
  EXPECT_THROW(WordPieceTokenizer({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"}), std::invalid_argument);
  EXPECT_THROW(WordPieceTokenizer({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "a"}),
               std::invalid_argument);
}

// The corpus as the golden script read it, independently: the first 2,000
// training fortunes are the golden's first texts, and the split sizes agree.
TEST(TextCorpusTest, ReadsTheFortunesAsTheGoldenScriptDoes) {
  const TextCorpus corpus = ReadFortunes(kDefaultFortuneDir);
  const nlohmann::json golden = nlohmann::json::parse(ReadFile(kGolden));
  EXPECT_EQ(corpus.train.size(), golden["num_train"].get<size_t>());
  EXPECT_EQ(corpus.held_out.size(), golden["num_held_out"].get<size_t>());
  ASSERT_GE(corpus.train.size(), 2000u);
  for (size_t i = 0; i < 2000; ++i) {
    ASSERT_EQ(corpus.train[i], golden["cases"][i]["text"].get<std::string>()) << "fortune " << i;
  }
  // One in ten is held out.
  const double share = static_cast<double>(corpus.held_out.size()) /
                       static_cast<double>(corpus.train.size() + corpus.held_out.size());
  EXPECT_NEAR(share, 0.1, 0.001);
}

TEST(TextCorpusTest, MissingDatabasesNameThePackage) {
  try {
    ReadFortunes("/nonexistent/fortunes");
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("install the Debian package fortunes"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(ReadFortunes(kDefaultFortuneDir, 1), std::invalid_argument);
}

}  // namespace
}  // namespace tspipe
