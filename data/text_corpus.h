// English text for the language-model algorithms: the fortune databases
// Debian's `fortunes` package installs. Kept free of LibTorch, like idx.h.
#ifndef TSPIPE_DATA_TEXT_CORPUS_H_
#define TSPIPE_DATA_TEXT_CORPUS_H_

#include <string>
#include <vector>

namespace tspipe {

// Where Debian's fortunes and fortunes-min install the databases.
extern const char kDefaultFortuneDir[];

// A corpus split deterministically into training and held-out texts.
struct TextCorpus {
  std::vector<std::string> train;
  std::vector<std::string> held_out;
};

// Reads every fortune database in `dir`: the files without an extension that
// have a `.dat` index beside them, in name order, except `ascii-art`
// (pictures, not prose). Fortunes are separated by lines holding only "%";
// each is its lines joined by "\n" with surrounding whitespace stripped
// (empty ones skipped). Counting fortunes from 0 over all databases, number
// i is held out when i % held_out_every == held_out_every - 1. Throws
// std::runtime_error naming `dir` when it holds no database (and how to
// install them) or a file cannot be read, and std::invalid_argument when
// held_out_every < 2. tools/make_bert_goldens.py reads the corpus the same
// way, independently.
TextCorpus ReadFortunes(const std::string& dir, int held_out_every = 10);

}  // namespace tspipe

#endif  // TSPIPE_DATA_TEXT_CORPUS_H_
