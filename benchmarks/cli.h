// Helpers shared by the benchmark mains (lists, paths, progress). Torch-free,
// like the mains: they use glog, whose macros clash with c10's.
#ifndef TSPIPE_BENCHMARKS_CLI_H_
#define TSPIPE_BENCHMARKS_CLI_H_

#include <string>
#include <vector>

#include "benchmarks/flag_checks.h"
#include "engine/trainer.h"

namespace tspipe {

// `bazel run` starts binaries in their runfiles tree; users mean paths
// relative to where they typed the command (BUILD_WORKING_DIRECTORY).
std::string UserPath(const std::string& path);
bool FileExists(const std::string& path);
// Trains `steps` steps in chunks of `log_every`, logging step, loss,
// samples/s and ETA after each (engine/progress.h); returns the seconds
// taken.
double TrainWithProgress(Trainer& trainer, int steps, const std::string& label, int log_every);
// Every name in the comma-separated `list` is a registered scheduler.
void RequireSchedulers(const std::string& flag, const std::string& list);
// "31.2/23" for per-stage milliseconds.
std::string FormatMs(const std::vector<double>& ms);

}  // namespace tspipe

#endif  // TSPIPE_BENCHMARKS_CLI_H_
