// Trains an algorithm's models (ResNets, or a ViT for MoCo v3) on synthetic
// 28x28 images (or Fashion-MNIST) under one or more schedulers and compares
// their throughput in one run.
//
//   ./tools/bazel run //benchmarks:supervised -- --scheduler=gpipe,sequential
//       --stages=2 --microbatches=4 --batch_size=64  (one line)
//
// Each benchmark iteration is one training step (one mini-batch). Counters:
// samples_per_second, devices, simulated bubble. With several schedulers (or
// --scheduler=all) a table compares each against sequential and against the
// ideal (sequential throughput x devices).
#include <benchmark/benchmark.h>
#include <gflags/gflags.h>
#include <glog/logging.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "benchmarks/cli.h"
#include "benchmarks/flags.h"
#include "benchmarks/harness.h"
#include "core/balance.h"
#include "core/file_util.h"

DEFINE_string(scheduler, "gpipe,sequential",
              "Comma-separated schedulers to compare, or 'all'. See --help for the list.");
DEFINE_int32(steps, 0, "Timed iterations per scheduler; 0 lets Google Benchmark decide.");
DEFINE_int32(steps_per_iteration, 4,
             "Optimizer steps per benchmark iteration, run back to back with no barrier "
             "between them (TSPipe overlaps one step's drain with the next one's fill).");
DEFINE_int32(balance_trials, 6,
             "--balance=auto: time up to this many cuts whose simulated speed is within 10% of "
             "the best, and keep the fastest (1 = trust the simulator).");
DEFINE_string(teacher_balance, "",
              "Teacher blocks per stage, e.g. '4,4'; empty = chosen with --balance "
              "(auto: jointly; otherwise even).");
DEFINE_string(policy, "",
              "Update policy for momentum teachers (byol): sync or tspipe_delayed; empty = "
              "each scheduler's own (tspipe: tspipe_delayed, others: sync). A scheduler that "
              "cannot honour the policy fails with an error.");
DEFINE_int32(vit_patch, 4, "MoCo v3 ViT patch size.");
DEFINE_int32(vit_dim, 64, "MoCo v3 ViT width.");
DEFINE_int32(vit_depth, 4, "MoCo v3 ViT transformer blocks.");
DEFINE_int32(vit_heads, 4, "MoCo v3 ViT attention heads.");
DEFINE_string(backend, "local",
              "local (every rank a thread of this process) or c10d (this process is one rank; "
              "start one per rank with tools/launch, which sets RANK, WORLD_SIZE, MASTER_ADDR, "
              "MASTER_PORT like torchrun). c10d needs --steps (every rank runs the same count).");
DEFINE_int32(peer_timeout, 60,
             "c10d: seconds a rank waits for a peer (rendezvous, messages) before failing.");
DEFINE_string(data, "synthetic",
              "synthetic (random tensors, for throughput) or fashion_mnist (--data_dir).");
DEFINE_string(plot, "", "If set, write an SVG bar chart of throughput to this path.");

// Which algorithm this binary benchmarks: set per target by the BUILD file.
#ifndef TSPIPE_BENCHMARK_ALGORITHM
#define TSPIPE_BENCHMARK_ALGORITHM supervised
#endif
#define TSPIPE_STRINGIFY_INNER(x) #x
#define TSPIPE_STRINGIFY(x) TSPIPE_STRINGIFY_INNER(x)

namespace {

const char kAlgorithm[] = TSPIPE_STRINGIFY(TSPIPE_BENCHMARK_ALGORITHM);

using tspipe::ParseInts;

std::vector<std::string> Schedulers() {
  if (FLAGS_scheduler == "all") return tspipe::SchedulerNames();
  return tspipe::SplitList(FLAGS_scheduler);
}

struct Measured {
  double samples_per_second = 0;
  int devices = 1;
  double bubble = 0;
};
std::map<std::string, Measured> g_results;

// A failed training step. Locally the scheduler's row is dropped and the
// next scheduler runs; under c10d the peers cannot follow (they may be in
// this scheduler still, or gone), so the rank exits at once: a process
// group with a dead peer may block in its destructor.
void FailRun(benchmark::State& state, const tspipe::TrainConfig& config, const std::exception& e) {
  LOG(ERROR) << config.scheduler << ": " << e.what();
  if (config.backend == "c10d") {
    google::FlushLogFiles(google::GLOG_INFO);
    std::fflush(nullptr);
    _exit(1);
  }
  state.SkipWithError(e.what());
}

// Built once in main (which also fails fast on bad configurations before
// any timing starts) and trained by the benchmark.
std::map<std::string, std::unique_ptr<tspipe::Trainer>> g_trainers;

void RunTraining(benchmark::State& state, tspipe::TrainConfig config) {
  tspipe::Trainer* trainer = g_trainers.at(config.scheduler).get();
  try {
    trainer->Train(config.steps_per_iteration);  // Warm-up: allocator, prologue.
  } catch (const std::exception& e) {
    FailRun(state, config, e);
    return;
  }
  const auto start = std::chrono::steady_clock::now();
  int64_t step = 0;
  double loss = 0;
  for (auto _ : state) {
    try {
      loss = trainer->Train(config.steps_per_iteration);
    } catch (const std::exception& e) {
      FailRun(state, config, e);
      return;
    }
    step += config.steps_per_iteration;
    if (FLAGS_log_every > 0 && step % FLAGS_log_every < config.steps_per_iteration) {
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      double rate = step * config.batch_size / secs;
      std::ostringstream eta;
      if (FLAGS_steps > 0) {
        int64_t total = static_cast<int64_t>(FLAGS_steps) * config.steps_per_iteration;
        eta << ", ETA " << static_cast<int>((total - step) * secs / step) << " s";
      }
      LOG(INFO) << config.scheduler << " step " << step << ", loss " << loss << ", " << rate
                << " samples/s" << eta.str();
    }
  }
  state.counters["samples_per_second"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * config.steps_per_iteration * config.batch_size,
      benchmark::Counter::kIsRate);
  state.counters["devices"] = trainer->num_devices();
  state.counters["sim_bubble"] = trainer->simulated_bubble();
  state.counters["loss"] = loss;
}

// Remembers each scheduler's throughput for the comparison table.
class ComparisonReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      // With repetitions, the median of a scheduler's repetitions stands for
      // it (and later single runs do not overwrite it).
      const bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
      if (run.run_type == Run::RT_Aggregate && !median) continue;
      std::string name = run.benchmark_name();
      std::string scheduler = name.substr(name.find('/') + 1);
      scheduler = scheduler.substr(0, scheduler.find('/'));
      if (!median && has_median_.count(scheduler)) continue;
      if (median) has_median_.insert(scheduler);
      Measured m;
      m.samples_per_second = run.counters.at("samples_per_second");
      m.devices = static_cast<int>(run.counters.at("devices"));
      m.bubble = run.counters.at("sim_bubble");
      g_results[scheduler] = m;
    }
  }

 private:
  std::set<std::string> has_median_;
};

std::string BarChartSvg(const std::vector<std::string>& names) {
  double top = 0;
  for (const auto& [n, m] : g_results) top = std::max(top, m.samples_per_second);
  std::ostringstream out;
  const int bar = 50, gap = 30, height = 300, left = 60;
  int width = left + static_cast<int>(names.size()) * (bar + gap) + 40;
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\""
      << height + 80 << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<text x=\"10\" y=\"20\" font-size=\"14\">" << kAlgorithm << " throughput (samples/s), "
      << FLAGS_stages << " stages, " << FLAGS_microbatches << " micro-batches, batch "
      << FLAGS_batch_size << "</text>\n";
  int x = left;
  for (const std::string& n : names) {
    auto it = g_results.find(n);
    if (it == g_results.end()) continue;
    double h = top > 0 ? it->second.samples_per_second / top * (height - 40) : 0;
    out << "<rect x=\"" << x << "\" y=\"" << height - h + 30 << "\" width=\"" << bar
        << "\" height=\"" << h << "\" fill=\"#4e79a7\"/>\n"
        << "<text x=\"" << x << "\" y=\"" << height - h + 25 << "\">"
        << static_cast<int>(it->second.samples_per_second) << "</text>\n"
        << "<text x=\"" << x << "\" y=\"" << height + 50 << "\">" << n << "</text>\n";
    x += bar + gap;
  }
  out << "</svg>\n";
  return out.str();
}

void PrintComparison(const std::vector<std::string>& names) {
  auto seq = g_results.find("sequential");
  std::printf("\n%-12s %7s %12s %14s %18s %12s\n", "scheduler", "devices", "samples/s",
              "vs_sequential", "fraction_of_ideal", "sim_bubble");
  for (const std::string& n : names) {
    auto it = g_results.find(n);
    if (it == g_results.end()) continue;
    const Measured& m = it->second;
    if (seq != g_results.end()) {
      double speedup = m.samples_per_second / seq->second.samples_per_second;
      std::printf("%-12s %7d %12.1f %14.3f %18.3f %12.4f\n", n.c_str(), m.devices,
                  m.samples_per_second, speedup, speedup / m.devices, m.bubble);
    } else {
      std::printf("%-12s %7d %12.1f %14s %18s %12.4f\n", n.c_str(), m.devices,
                  m.samples_per_second, "-", "-", m.bubble);
    }
  }
  if (seq == g_results.end()) {
    std::printf("(add 'sequential' to --scheduler for ratios against the ideal)\n");
  } else {
    std::printf("ideal = sequential samples/s x devices; fraction_of_ideal = vs_sequential / "
                "devices\n");
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      std::string("Compares schedulers training on 28x28 images (algorithm: ") +
      TSPIPE_STRINGIFY(TSPIPE_BENCHMARK_ALGORITHM) + ").\n"
      "Google Benchmark flags (--benchmark_min_time=...) are accepted too.\nSchedulers:\n" +
      tspipe::DescribeSchedulers());
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-help" || arg == "--helpfull") {
      gflags::ParseCommandLineFlags(&argc, &argv, true);  // Prints and exits.
    }
  }
  // Defaults for Google Benchmark's own flags: this machine class is noisy,
  // so each scheduler runs 5 repetitions in random interleaved order and
  // the table reports each one's median. Not under c10d, where every rank
  // must run the same sequence of iterations.
  std::vector<char*> args(argv, argv + argc);
  // Launched as a rank (tools/launch, torchrun) counts as c10d too.
  bool c10d = std::getenv("WORLD_SIZE") != nullptr;
  bool repetitions = false, interleaving = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const std::string next = i + 1 < argc ? argv[i + 1] : "";
    c10d |= a == "--backend=c10d" || a == "-backend=c10d" ||
            ((a == "--backend" || a == "-backend") && next == "c10d");
    repetitions |= a.rfind("--benchmark_repetitions", 0) == 0;
    interleaving |= a.rfind("--benchmark_enable_random_interleaving", 0) == 0;
  }
  static char kRepetitions[] = "--benchmark_repetitions=5";
  static char kInterleave[] = "--benchmark_enable_random_interleaving=true";
  static char kMinTime[] = "--benchmark_min_time=1";
  bool min_time = false;
  for (int i = 1; i < argc; ++i) min_time |= std::string(argv[i]).rfind("--benchmark_min_time", 0) == 0;
  if (!c10d && !repetitions) args.push_back(kRepetitions);
  if (!c10d && !interleaving) args.push_back(kInterleave);
  if (!c10d && !min_time) args.push_back(kMinTime);
  args.push_back(nullptr);
  argc = static_cast<int>(args.size()) - 1;
  argv = args.data();
  benchmark::Initialize(&argc, argv);
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  if (FLAGS_backend == "c10d" && interleaving) {
    LOG(ERROR) << "--benchmark_enable_random_interleaving cannot be used with --backend=c10d: "
                  "every rank must run the schedulers in the same order";
    return 1;
  }

  tspipe::SetIntraOpThreads(FLAGS_threads_per_device);
  tspipe::TrainConfig base = tspipe::ConfigFromFlags();
  base.algorithm = kAlgorithm;
  base.steps_per_iteration = FLAGS_steps_per_iteration;
  base.teacher_balance = ParseInts(FLAGS_teacher_balance, "teacher_balance");
  base.update_policy = FLAGS_policy;
  base.backend = FLAGS_backend;
  base.peer_timeout_seconds = FLAGS_peer_timeout;
  if (FLAGS_backend == "c10d" && FLAGS_steps <= 0) {
    // Google Benchmark would pick an iteration count per process from its
    // own timings; ranks that disagree would wait for each other forever.
    FLAGS_steps = 20;
    LOG(INFO) << "--backend=c10d: running --steps=20 iterations on every rank";
  }
  base.vit_patch = FLAGS_vit_patch;
  base.vit_dim = FLAGS_vit_dim;
  base.vit_depth = FLAGS_vit_depth;
  base.vit_heads = FLAGS_vit_heads;
  base.data = FLAGS_data;
  // --balance=auto: block costs are measured once; each scheduler gets the
  // cut its simulated steady state likes best.
  tspipe::BlockCosts costs;
  const bool auto_balance = FLAGS_balance == "auto";
  if (auto_balance) {
    try {
      costs = tspipe::MeasureBlockCosts(base);
      LOG(INFO) << "block ms per micro-batch: student forward "
                << tspipe::FormatMs(costs.student_forward) << ", backward "
                << tspipe::FormatMs(costs.student_backward)
                << (costs.teacher_forward.empty()
                        ? std::string()
                        : ", teacher forward " + tspipe::FormatMs(costs.teacher_forward));
    } catch (const std::exception& e) {
      LOG(ERROR) << e.what();
      return 1;
    }
  }

  std::vector<std::string> requested = Schedulers();
  std::vector<std::string> names;
  const auto known = tspipe::SchedulerNames();
  for (const std::string& n : requested) {
    if (std::find(known.begin(), known.end(), n) == known.end()) {
      LOG(ERROR) << "unknown scheduler '" << n << "'; choices:\n" << tspipe::DescribeSchedulers();
      return 1;
    }
    tspipe::TrainConfig config = base;
    config.scheduler = n;
    // Fail fast on bad configurations, before any timing starts.
    try {
      if (auto_balance) {
        // The simulator ranks the cuts; with several close ones, a short
        // timed trial of each picks the one that is fastest in practice
        // (single process only: c10d ranks would have to agree on it).
        std::vector<tspipe::BalancePlan> plans = tspipe::PlanBalances(
            config, costs, FLAGS_backend == "local" ? FLAGS_balance_trials : 1, 0.10);
        size_t chosen = 0;
        // Equal periods: the cut does not matter to this scheduler (one rank
        // runs every stage), so there is nothing to try.
        if (plans.size() > 1 && plans.back().period_ms > plans.front().period_ms * (1 + 1e-9)) {
          // Two rounds, candidates in turn, each keeping its better figure:
          // a slow moment of the machine then hurts one trial, not a choice.
          std::vector<std::unique_ptr<tspipe::Trainer>> trials;
          for (const tspipe::BalancePlan& plan : plans) {
            tspipe::TrainConfig trial = config;
            tspipe::ApplyPlan(plan, &trial);
            trials.push_back(std::make_unique<tspipe::Trainer>(trial));
          }
          std::vector<double> rate(plans.size(), 0.0);
          for (int round = 0; round < 2; ++round) {
            for (size_t i = 0; i < plans.size(); ++i) {
              rate[i] = std::max(
                  rate[i], trials[i]->MeasureSamplesPerSecond(config.steps_per_iteration));
            }
          }
          for (size_t i = 0; i < plans.size(); ++i) {
            LOG(INFO) << n << ": trial " << tspipe::DescribePlan(plans[i]) << ": " << rate[i]
                      << " samples/s";
            if (rate[i] > rate[chosen]) chosen = i;
          }
        }
        tspipe::ApplyPlan(plans[chosen], &config);
        LOG(INFO) << n << ": auto balance " << tspipe::DescribePlan(plans[chosen]);
      }
      g_trainers[n] = std::make_unique<tspipe::Trainer>(config);
      LOG(INFO) << n << ": ranks per stage " << g_trainers[n]->placement();
    } catch (const std::invalid_argument& e) {
      // "all" means every scheduler that can run this configuration (dp
      // cannot split MoCo's batch, for one); a scheduler named explicitly
      // must run.
      if (FLAGS_scheduler == "all") {
        LOG(WARNING) << "skipping " << n << ": " << e.what();
        continue;
      }
      LOG(ERROR) << n << ": " << e.what();
      return 1;
    } catch (const std::exception& e) {
      LOG(ERROR) << n << ": " << e.what();
      return 1;
    }
    names.push_back(n);
    auto* b = benchmark::RegisterBenchmark(("train/" + n).c_str(), RunTraining, config);
    b->UseRealTime()->Unit(benchmark::kMillisecond);
    if (FLAGS_steps > 0) b->Iterations(FLAGS_steps);
  }
  if (names.empty()) {
    LOG(ERROR) << "no scheduler can run this configuration (see the warnings above)";
    return 1;
  }
  ComparisonReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  PrintComparison(names);
  if (!FLAGS_plot.empty()) {
    tspipe::WriteFileAtomically(tspipe::UserPath(FLAGS_plot), BarChartSvg(names));
    LOG(INFO) << "wrote " << tspipe::UserPath(FLAGS_plot);
  }
  benchmark::Shutdown();
  g_trainers.clear();
  return g_results.size() == names.size() ? 0 : 1;
}
