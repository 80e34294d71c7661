#include "cli/cli.h"

#include <glog/logging.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "core/update_policy.h"
#include "engine/catalog.h"
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


namespace {

// A label as one file-name component: "kd/tspipe" -> "kd_tspipe".
std::string FileNamePart(const std::string& label) {
  std::string name = label;
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') c = '_';
  }
  return name;
}

}  // namespace

std::string CheckpointDirFor(const CheckpointSettings& settings, const std::string& label) {
  return settings.dir + "/" + FileNamePart(label);
}

std::string ExportPathFor(const std::string& path, const std::string& label) {
  if (label.empty()) return path;
  const std::string suffix = ".safetensors";
  const bool has_suffix = path.size() > suffix.size() &&
                          path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
  const std::string stem = has_suffix ? path.substr(0, path.size() - suffix.size()) : path;
  return stem + "." + FileNamePart(label) + suffix;
}

void ExportStudent(Trainer& trainer, const std::string& path, const std::string& label,
                   int model) {
  if (path.empty()) return;
  const std::string out = ExportPathFor(path, label);
  trainer.ExportModel(out, model);
  LOG(INFO) << "exported " << (label.empty() ? "the student" : label) << " to " << out;
}

double TrainWithProgress(Trainer& trainer, int steps, const std::string& label, int log_every,
                         const CheckpointSettings& checkpoints) {
  const std::string dir = checkpoints.dir.empty() ? "" : CheckpointDirFor(checkpoints, label);
  int done = 0;
  if (!dir.empty() && checkpoints.resume) {
    std::vector<std::string> skipped;
    const int64_t step = trainer.Resume(dir, &skipped);
    for (const std::string& s : skipped) LOG(WARNING) << label << ": passed over " << s;
    if (step > steps) {
      throw std::invalid_argument(label + ": the checkpoint in " + dir + " is at step " +
                                  std::to_string(step) + ", past this run's " +
                                  std::to_string(steps) + " steps");
    }
    if (step >= 0) {
      done = static_cast<int>(step);
      LOG(INFO) << label << ": resumed from " << dir << " at step " << done << " of " << steps;
    } else {
      LOG(INFO) << label << ": no checkpoint in " << dir << " yet; starting fresh";
    }
  }
  const int start = done;
  Progress progress(label, steps - start, trainer.batch_size());
  const int chunk = log_every > 0 ? log_every : std::max(1, steps);
  while (done < steps) {
    int n = std::min(chunk, steps - done);
    if (!dir.empty() && checkpoints.every > 0) {
      n = std::min(n, checkpoints.every - done % checkpoints.every);
    }
    const double loss = trainer.Train(n);
    done += n;
    if (log_every > 0 && (done % chunk == 0 || done == steps)) {
      LOG(INFO) << progress.Line(done - start, loss)
                << (start > 0 ? " (resumed at " + std::to_string(start) + ")" : std::string());
    }
    if (!dir.empty() && ((checkpoints.every > 0 && done % checkpoints.every == 0) || done == steps)) {
      trainer.SaveCheckpoint(dir, checkpoints.keep);
    }
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

bool AddBenchmarkDefaults(int argc, char** argv, std::vector<char*>* args) {
  // Launched as a rank (tools/launch, torchrun) counts as c10d too.
  bool c10d = std::getenv("WORLD_SIZE") != nullptr;
  bool repetitions = false, interleaving = false, min_time = false;
  // A --flagfile's lines count as arguments too (a preset may set
  // --benchmark_repetitions=1); its Google Benchmark flags are passed on
  // the command line as well, since Google Benchmark reads only argv.
  std::vector<std::string> words;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    words.push_back(a);
    if (a.rfind("--flagfile=", 0) != 0) continue;
    std::ifstream in(a.substr(11));
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("--", 0) != 0) continue;
      words.push_back(line);
      if (line.rfind("--benchmark_", 0) == 0) {
        static std::vector<std::unique_ptr<std::string>> kept;  // Outlive argv's use.
        kept.push_back(std::make_unique<std::string>(line));
        args->push_back(&(*kept.back())[0]);
      }
    }
  }
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& a = words[i];
    const std::string next = i + 1 < words.size() ? words[i + 1] : "";
    c10d |= a == "--backend=c10d" || a == "-backend=c10d" ||
            ((a == "--backend" || a == "-backend") && next == "c10d");
    repetitions |= a.rfind("--benchmark_repetitions", 0) == 0;
    interleaving |= a.rfind("--benchmark_enable_random_interleaving", 0) == 0;
    min_time |= a.rfind("--benchmark_min_time", 0) == 0;
  }
  static char kRepetitions[] = "--benchmark_repetitions=5";
  static char kInterleave[] = "--benchmark_enable_random_interleaving=true";
  static char kMinTime[] = "--benchmark_min_time=1";
  if (!c10d && !repetitions) args->push_back(kRepetitions);
  if (!c10d && !interleaving) args->push_back(kInterleave);
  if (!c10d && !min_time) args->push_back(kMinTime);
  return c10d && interleaving;
}

void RequireDataSet(const std::string& flag, const std::string& algorithm,
                    const std::string& data) {
  const std::vector<std::string> sets = RecipeDataSets(algorithm);
  if (data != "synthetic" && std::find(sets.begin(), sets.end(), data) == sets.end()) {
    std::string choices = "synthetic";
    for (const std::string& d : sets) choices += ", " + d;
    throw std::invalid_argument("--" + flag + "=" + data + ": " + algorithm + " trains on " +
                                choices);
  }
}

void RequirePolicy(const std::string& flag, const std::string& policy) {
  const auto& policies = UpdatePolicyRegistry::Global();
  if (!policy.empty() && !policies.Contains(policy)) {
    std::string choices;
    for (const std::string& p : policies.Names()) choices += (choices.empty() ? "" : ", ") + p;
    throw std::invalid_argument("--" + flag + "=" + policy + ": use " + choices);
  }
}

}  // namespace tspipe
