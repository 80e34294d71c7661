// The comparison benchmark's own flags (benchmarks/train_benchmark.cc:
// which schedulers, how long, what to draw and record, how ranks meet),
// beside the training flags every main takes (cli/flags.h), and their
// checks. Mains only.
#ifndef TSPIPE_CLI_BENCHMARK_FLAGS_H_
#define TSPIPE_CLI_BENCHMARK_FLAGS_H_

#include <gflags/gflags.h>

#include <string>

DECLARE_string(scheduler);
DECLARE_int32(steps);
DECLARE_int32(steps_per_iteration);
DECLARE_int32(balance_trials);
DECLARE_string(policy);
DECLARE_string(backend);
DECLARE_int32(peer_timeout);
DECLARE_double(emulate_link_ms_per_mb);
DECLARE_string(data);
DECLARE_string(teacher_weights);
DECLARE_string(student_weights);
DECLARE_string(simulate_stages);
DECLARE_bool(simulate_only);
DECLARE_string(plot);
DECLARE_string(trace);
DECLARE_bool(record);
DECLARE_bool(trace_overhead);

namespace tspipe {

// Checks the benchmark's flags for `algorithm` before anything is built or
// timed; throws std::invalid_argument with a one-line message naming the
// flag. Files the run will write are checked writable now, not after the
// whole benchmark has run.
void CheckBenchmarkFlags(const std::string& algorithm);

}  // namespace tspipe

#endif  // TSPIPE_CLI_BENCHMARK_FLAGS_H_
