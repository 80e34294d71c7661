#include "benchmarks/cli.h"

#include <glog/logging.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace tspipe {

std::vector<int> ParseInts(const std::string& text, const char* flag) {
  std::vector<int> out;
  for (const std::string& item : SplitList(text)) {
    try {
      size_t used = 0;
      out.push_back(std::stoi(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      LOG(FATAL) << "--" << flag << ": '" << item << "' is not an integer";
    }
  }
  return out;
}

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(item);
  return out;
}

std::string UserPath(const std::string& path) {
  const char* cwd = std::getenv("BUILD_WORKING_DIRECTORY");
  if (path.empty() || path[0] == '/' || cwd == nullptr) return path;
  return std::string(cwd) + "/" + path;
}

bool FileExists(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f != nullptr) std::fclose(f);
  return f != nullptr;
}

double TrainWithProgress(Trainer& trainer, int steps, const std::string& label, int log_every) {
  const auto start = std::chrono::steady_clock::now();
  const int chunk = log_every > 0 ? log_every : std::max(1, steps);
  int done = 0;
  while (done < steps) {
    const int n = std::min(chunk, steps - done);
    const double loss = trainer.Train(n);
    done += n;
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (log_every > 0) {
      const double rate = static_cast<double>(done) * trainer.batch_size() / secs;
      LOG(INFO) << label << ": step " << done << "/" << steps << ", loss " << loss << ", "
                << static_cast<int>(rate) << " samples/s, ETA "
                << static_cast<int>((steps - done) * secs / done) << " s";
    }
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string FormatMs(const std::vector<double>& ms) {
  std::ostringstream out;
  out.precision(3);
  for (size_t i = 0; i < ms.size(); ++i) out << (i ? "/" : "") << ms[i];
  return out.str();
}

}  // namespace tspipe
