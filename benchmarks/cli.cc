#include "benchmarks/cli.h"

#include <glog/logging.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

#include "engine/progress.h"

namespace tspipe {

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
  Progress progress(label, steps, trainer.batch_size());
  const int chunk = log_every > 0 ? log_every : std::max(1, steps);
  int done = 0;
  while (done < steps) {
    const int n = std::min(chunk, steps - done);
    const double loss = trainer.Train(n);
    done += n;
    if (log_every > 0) LOG(INFO) << progress.Line(done, loss);
  }
  return progress.ElapsedSeconds();
}

void RequireSchedulers(const std::string& flag, const std::string& list) {
  const std::vector<std::string> known = SchedulerNames();
  const std::vector<std::string> names = SplitList(list);
  if (names.empty()) throw std::invalid_argument("--" + flag + "=" + list + ": names no scheduler");
  for (const std::string& n : names) {
    if (std::find(known.begin(), known.end(), n) == known.end()) {
      std::string choices;
      for (const std::string& k : known) choices += (choices.empty() ? "" : ", ") + k;
      throw std::invalid_argument("--" + flag + "=" + list + ": unknown scheduler '" + n +
                                  "'; choices: " + choices);
    }
  }
}

std::string FormatMs(const std::vector<double>& ms) {
  std::ostringstream out;
  out.precision(3);
  for (size_t i = 0; i < ms.size(); ++i) out << (i ? "/" : "") << ms[i];
  return out.str();
}

}  // namespace tspipe
