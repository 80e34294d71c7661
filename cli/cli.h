// Helpers shared by the benchmark mains (lists, paths, progress). Torch-free,
// like the mains: they use glog, whose macros clash with c10's.
#ifndef TSPIPE_CLI_CLI_H_
#define TSPIPE_CLI_CLI_H_

#include <string>
#include <vector>

#include "cli/flag_checks.h"
#include "engine/trainer.h"

namespace tspipe {

// `bazel run` starts binaries in their runfiles tree; users mean paths
// relative to where they typed the command (BUILD_WORKING_DIRECTORY).
std::string UserPath(const std::string& path);
bool FileExists(const std::string& path);
// Checkpoints of a main's training runs (flags.h's CheckpointFlags).
struct CheckpointSettings {
  std::string dir;  // Empty: no checkpoints.
  int every = 0;    // Steps between checkpoints; 0 = at the end of each run only.
  int keep = 2;     // Newest checkpoints kept per run.
  bool resume = false;
};

// Where a run labelled `label` ("kd/tspipe") keeps its checkpoints:
// <dir>/kd_tspipe.
std::string CheckpointDirFor(const CheckpointSettings& settings, const std::string& label);

// Where the student of run `label` goes when a main exports several:
// "out/student.safetensors" and "kd/tspipe" give
// "out/student.kd_tspipe.safetensors". An empty label: `path` itself.
std::string ExportPathFor(const std::string& path, const std::string& label);
// Writes `model` of `trainer` to ExportPathFor(path, label) (nothing when
// `path` is empty) and logs where.
void ExportStudent(Trainer& trainer, const std::string& path, const std::string& label,
                   int model = 0);

// Trains until `steps` steps are done in chunks of `log_every`, logging
// step, loss, samples/s and ETA after each (engine/progress.h); returns the
// seconds taken. With checkpoints: resumes from the run's newest one first
// (when asked), writes one every `every` steps and one at the end.
double TrainWithProgress(Trainer& trainer, int steps, const std::string& label, int log_every,
                         const CheckpointSettings& checkpoints = {});
// Every name in the comma-separated `list` is a registered scheduler.
void RequireSchedulers(const std::string& flag, const std::string& list);
// "31.2/23" for per-stage milliseconds.
std::string FormatMs(const std::vector<double>& ms);

// Google Benchmark's defaults for this noisy machine class, added to `args`
// unless given: each scheduler runs 5 repetitions in random interleaved
// order and the table reports each one's median. Not under c10d (or as a
// launched rank), where every rank must run the same sequence of
// iterations. Returns whether interleaving was asked for on a c10d rank
// (an error). Lines of a --flagfile count as given, and its Google Benchmark
// flags are added to `args` (Google Benchmark reads only the command line).
bool AddBenchmarkDefaults(int argc, char** argv, std::vector<char*>* args);

// Throw std::invalid_argument naming --`flag` when `data` is not one of
// `algorithm`'s data sets (or synthetic), or `policy` not a registered
// update policy (empty: the scheduler's own).
void RequireDataSet(const std::string& flag, const std::string& algorithm,
                    const std::string& data);
void RequirePolicy(const std::string& flag, const std::string& policy);

}  // namespace tspipe

#endif  // TSPIPE_CLI_CLI_H_
