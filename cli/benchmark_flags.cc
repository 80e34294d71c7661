#include "cli/benchmark_flags.h"

#include <stdexcept>

#include "cli/cli.h"
#include "cli/flags.h"
#include "cli/report.h"
#include "core/options.h"
#include "core/update_policy.h"
#include "io/file_util.h"

DEFINE_string(scheduler, "gpipe,sequential",
              "Comma-separated schedulers to compare, or 'all'. See --help for the list.");
DEFINE_int32(steps, 0, "Timed iterations per scheduler; 0 lets Google Benchmark decide.");
DEFINE_int32(steps_per_iteration, 4,
             "Optimizer steps per benchmark iteration, run back to back with no barrier "
             "between them (TSPipe overlaps one step's drain with the next one's fill).");
DEFINE_int32(balance_trials, 6,
             "--balance=auto: time up to this many cuts whose simulated speed is within 10% of "
             "the best, and keep the fastest (1 = trust the simulator).");
DEFINE_string(policy, "",
              "Update policy for momentum teachers (byol, mocov3): sync or tspipe_delayed; "
              "empty = each scheduler's own (tspipe: tspipe_delayed, others: sync). A scheduler "
              "that cannot honour the policy fails with an error.");
DEFINE_string(backend, "local",
              "local (every rank a thread of this process) or c10d (this process is one rank; "
              "start one per rank with tools/launch, which sets RANK, WORLD_SIZE, MASTER_ADDR, "
              "MASTER_PORT like torchrun). c10d needs --steps (every rank runs the same count).");
DEFINE_int32(peer_timeout, 60,
             "c10d: seconds a rank waits for a peer (rendezvous, messages) before failing.");
DEFINE_double(emulate_link_ms_per_mb, 0,
              "c10d: make every transfer take at least this many ms per MB sent, to measure a "
              "slower link than this machine's (0: the real link).");
DEFINE_string(data, "synthetic",
              "synthetic (random tensors, for throughput) or the algorithm's real data set "
              "(fashion_mnist, or imagefolder with --data_dir=ROOT, for the image algorithms).");
DEFINE_string(teacher_weights, "",
              "Teacher weights: a safetensors file under PyTorch's state_dict names (torchvision, "
              "timm; tools/pth_to_safetensors.py converts a .pth) or a LibTorch archive, loaded "
              "strictly. Empty = random initialisation (fine for throughput).");
DEFINE_string(student_weights, "", "Initial student weights, as --teacher_weights.");
DEFINE_string(simulate_stages, "",
              "With --balance=auto: also simulate each scheduler at these stage counts "
              "(\"8,16\") from the measured block costs, with N-1, 2N and 4N micro-batches, "
              "against inter-layer model parallelism (the paper's headline comparison).");
DEFINE_bool(simulate_only, false, "Stop after --simulate_stages (no timed runs).");
DEFINE_string(plot, "", "If set, write an SVG bar chart of throughput to this path.");
DEFINE_string(trace, "",
              "If set, write the last timed iteration of each scheduler as a Chrome trace / "
              "Perfetto JSON file here (open it in ui.perfetto.dev or chrome://tracing), and "
              "beside it (.json replaced by .svg) its measured timeline above the simulated one.");
DEFINE_bool(record, true,
            "Record every action's start and end during the timed iterations (two clock reads "
            "each): the table's measured bubble and period come from it. false times without.");
DEFINE_bool(trace_overhead, false,
            "Also run each scheduler without recording (rows '<scheduler>:untraced'), "
            "interleaved with the recorded runs: what recording costs.");

namespace tspipe {

void CheckBenchmarkFlags(const std::string& algorithm) {
  if (!FLAGS_export.empty() && FLAGS_backend == "c10d") {
    throw std::invalid_argument("--export=" + FLAGS_export +
                                ": only with --backend=local (a c10d process holds only its "
                                "own stages)");
  }
  RequireAtLeast("steps", FLAGS_steps, 0);
  RequireAtLeast("steps_per_iteration", FLAGS_steps_per_iteration, 1);
  RequireAtLeast("balance_trials", FLAGS_balance_trials, 1);
  RequireAtLeast("peer_timeout", FLAGS_peer_timeout, 1);
  RequireNumber("emulate_link_ms_per_mb", FLAGS_emulate_link_ms_per_mb, 0);
  RequireWritable("plot", UserPath(FLAGS_plot));
  RequireWritable("trace", UserPath(FLAGS_trace));
  if (!FLAGS_trace.empty()) {
    RequireWritable("trace", TraceSvgPath(UserPath(FLAGS_trace)));
    if (!FLAGS_record) throw std::invalid_argument("--trace needs --record (the default)");
    if (FLAGS_backend == "c10d") {
      throw std::invalid_argument("--trace=" + FLAGS_trace +
                                  ": only with --backend=local (a c10d process sees its own "
                                  "rank only)");
    }
  }
  if (FLAGS_trace_overhead && !FLAGS_record) {
    throw std::invalid_argument("--trace_overhead compares recording with not recording; it "
                                "needs --record (the default)");
  }
  RequireDataSet("data", algorithm, FLAGS_data);
  for (int n : ParseIntList(FLAGS_simulate_stages, "--simulate_stages=" + FLAGS_simulate_stages)) {
    RequireAtLeast("simulate_stages", n, 1);
  }
  if (!FLAGS_simulate_stages.empty() && FLAGS_balance != "auto") {
    throw std::invalid_argument("--simulate_stages=" + FLAGS_simulate_stages +
                                " needs --balance=auto (the measured block costs)");
  }
  if (FLAGS_simulate_only && FLAGS_simulate_stages.empty()) {
    throw std::invalid_argument("--simulate_only needs --simulate_stages");
  }
  RequirePolicy("policy", FLAGS_policy);
  if (FLAGS_scheduler != "all") RequireSchedulers("scheduler", FLAGS_scheduler);
}

}  // namespace tspipe
