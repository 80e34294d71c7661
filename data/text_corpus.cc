#include "data/text_corpus.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <stdexcept>

namespace tspipe {

const char kDefaultFortuneDir[] = "/usr/share/games/fortunes";

namespace {

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string Strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

}  // namespace

TextCorpus ReadFortunes(const std::string& dir, int held_out_every) {
  if (held_out_every < 2) {
    throw std::invalid_argument("held_out_every must be at least 2, not " +
                                std::to_string(held_out_every));
  }
  const std::string install_hint =
      " (install the Debian package fortunes, or point --data_dir at fortune databases)";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) throw std::runtime_error("no fortune databases: " + dir + " is missing" + install_hint);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.empty() || name.find('.') != std::string::npos || name == "ascii-art") continue;
    if (IsRegularFile(dir + "/" + name) && IsRegularFile(dir + "/" + name + ".dat")) {
      names.push_back(name);
    }
  }
  ::closedir(d);
  if (names.empty()) throw std::runtime_error("no fortune databases in " + dir + install_hint);
  std::sort(names.begin(), names.end());

  TextCorpus corpus;
  int64_t index = 0;
  for (const std::string& name : names) {
    const std::string path = dir + "/" + name;
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read the fortune database " + path);
    std::string line, text;
    auto finish = [&] {
      std::string fortune = Strip(text);
      text.clear();
      if (fortune.empty()) return;
      (index % held_out_every == held_out_every - 1 ? corpus.held_out : corpus.train)
          .push_back(std::move(fortune));
      ++index;
    };
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line == "%") {
        finish();
      } else {
        text += line;
        text += '\n';
      }
    }
    if (in.bad()) throw std::runtime_error("cannot read the fortune database " + path);
    finish();
  }
  return corpus;
}

}  // namespace tspipe
