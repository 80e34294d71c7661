// Checks of command-line values for mains (benchmarks, tools), run before
// any work starts. Torch-free, so that tools without LibTorch use them too.
#ifndef TSPIPE_CLI_FLAG_CHECKS_H_
#define TSPIPE_CLI_FLAG_CHECKS_H_

#include <string>
#include <vector>

namespace tspipe {

// "a,b" -> {"a", "b"}.
std::vector<std::string> SplitList(const std::string& text);

// Checks of one flag's value for mains, run before any work starts. Each
// throws std::invalid_argument with one line naming the flag and the value,
// e.g. "--batch_size=-3: must be at least 1".
void RequireAtLeast(const std::string& flag, long long value, long long least);
// A finite number >= `least` (> `least` when `strictly`): refuses nan, inf.
void RequireNumber(const std::string& flag, double value, double least, bool strictly = false);
// An output file: empty (not asked for) or a path whose directory exists
// and is writable and which is not a directory itself. Creates nothing.
void RequireWritable(const std::string& flag, const std::string& path);
// "0,0.5,3" -> numbers, each finite and >= `least`.
std::vector<double> ParseNumbers(const std::string& flag, const std::string& text, double least);
// The flags every accuracy main shares: --steps >= 1, --train_samples and
// --eval_samples >= 0 (0 = all), --report writable (already a user path).
void RequireAccuracyRunFlags(int steps, int train_samples, int eval_samples,
                             const std::string& report);

}  // namespace tspipe

#endif  // TSPIPE_CLI_FLAG_CHECKS_H_
