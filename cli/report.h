// The benchmarks' comparison table and throughput chart: Google Benchmark
// runs each scheduler, this collects each one's median figures and prints
// them against sequential and the ideal (sequential x devices).
#ifndef TSPIPE_CLI_REPORT_H_
#define TSPIPE_CLI_REPORT_H_

#include <benchmark/benchmark.h>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace tspipe {

struct Measured {
  double samples_per_second = 0;
  // Real tokens trained per second (Recipe::Tokens); 0 = not sequences.
  double tokens_per_second = 0;
  int devices = 1;
  double bubble = 0;
  // From the recorded actions of the last timed iteration (steady steps):
  // idle share, period, and the simulator's period from the measured
  // per-action costs; < 0 = not recorded.
  double measured_bubble = -1;
  // Peak memory of the last timed iteration (MiB), when it was recorded.
  double peak_mib = -1;
  // The simulated stash peaks in bytes (measured bytes per forward), summed
  // over stages, when recorded.
  double sim_stash_mib = -1;
  double measured_period_ms = -1;
  double predicted_period_ms = -1;
  // Share of the timed iterations spent waiting for the data source.
  double data_wait = 0;
  // Most micro-batches a stage holds for a backward (simulated schedule).
  int stash_peak = 0;
  // Payload bytes each device sent per optimizer step (Transport::bytes_sent).
  double bytes_per_step_per_device = 0;
};
using Results = std::map<std::string, Measured>;

// Console output as usual, and each "train/<scheduler>" run's counters
// (samples_per_second, devices, sim_bubble) into `results`: with
// repetitions, the median stands for the scheduler.
class ComparisonReporter : public benchmark::ConsoleReporter {
 public:
  explicit ComparisonReporter(Results* results) : results_(results) {}
  void ReportRuns(const std::vector<Run>& runs) override;

 private:
  Results* results_;
  std::set<std::string> has_median_;
};

// The table, in the order of `names`, to stdout (with a tokens/s column when
// any run counted tokens); speeds are compared with the `baseline` row's
// (the one-device scheduler) scaled by each row's devices.
// --trace=x.json: the SVG timeline x.svg beside it.
std::string TraceSvgPath(const std::string& trace);

void PrintComparison(const Results& results, const std::vector<std::string>& names,
                     const std::string& baseline);

// An SVG bar chart of samples/s per scheduler under `title`.
std::string BarChartSvg(const Results& results, const std::vector<std::string>& names,
                        const std::string& title);

}  // namespace tspipe

#endif  // TSPIPE_CLI_REPORT_H_
