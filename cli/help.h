// --help as a user wants it: the program's usage text, then the program's
// own flags (the main's first, then the shared ones of cli/flags.cc), not
// glog's and gflags' forty, which --helpfull still lists. gflags' own
// --help sorts flags by the file that defines them, so a main whose flags
// live beside it came after glog's, and --helpshort (flags of the file
// named like the program) printed nothing. Torch-free.
#ifndef TSPIPE_CLI_HELP_H_
#define TSPIPE_CLI_HELP_H_

#include <string>
#include <vector>

namespace tspipe {

// When argv asks for --help or --helpshort (or -help, -helpshort): prints
// gflags' usage message (set it first), the flags defined in `files` (paths
// as the flags record them, e.g. "benchmarks/train_benchmark.cc"; a
// trailing '/' matches a folder), in that order, and a line pointing at
// --helpfull, then exits 0. Otherwise returns. Call before parsing.
void HandleHelpFlags(int argc, char** argv, const std::vector<std::string>& files);

// The help text HandleHelpFlags prints (without the usage message).
std::string OwnFlagsHelp(const std::vector<std::string>& files);

}  // namespace tspipe

#endif  // TSPIPE_CLI_HELP_H_
