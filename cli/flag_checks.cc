#include "cli/flag_checks.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

namespace tspipe {

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(item);
  return out;
}

void RequireAtLeast(const std::string& flag, long long value, long long least) {
  if (value < least) {
    throw std::invalid_argument("--" + flag + "=" + std::to_string(value) + ": must be at least " +
                                std::to_string(least));
  }
}

void RequireNumber(const std::string& flag, double value, double least, bool strictly) {
  if (std::isfinite(value) && (strictly ? value > least : value >= least)) return;
  std::ostringstream out;
  out << "--" << flag << "=" << value << ": must be a finite number "
      << (strictly ? "above " : "of at least ") << least;
  throw std::invalid_argument(out.str());
}

void RequireWritable(const std::string& flag, const std::string& path) {
  if (path.empty()) return;
  const std::string where = "--" + flag + "=" + path + ": ";
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    throw std::invalid_argument(where + "is a directory; name a file");
  }
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw std::invalid_argument(where + "no directory " + dir);
  }
  if (::access(dir.c_str(), W_OK) != 0) {
    throw std::invalid_argument(where + "directory " + dir + " is not writable");
  }
}

std::vector<double> ParseNumbers(const std::string& flag, const std::string& text, double least) {
  std::vector<double> out;
  for (const std::string& item : SplitList(text)) {
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    if (item.empty() || end != item.c_str() + item.size() || !std::isfinite(v) || v < least) {
      std::ostringstream why;
      why << "--" << flag << "=" << text << ": '" << item << "' is not a number of at least "
          << least;
      throw std::invalid_argument(why.str());
    }
    out.push_back(v);
  }
  return out;
}

void RequireAccuracyRunFlags(int steps, int train_samples, int eval_samples,
                             const std::string& report) {
  RequireAtLeast("steps", steps, 1);
  RequireAtLeast("train_samples", train_samples, 0);
  RequireAtLeast("eval_samples", eval_samples, 0);
  RequireWritable("report", report);
}

}  // namespace tspipe
