// Trains an algorithm's models under one or more schedulers and compares
// their throughput in one run.
//
//   ./tools/bazel run //benchmarks:kd -- --scheduler=tspipe,gpipe,sequential
//       --stages=2 --microbatches=4 --algorithm_options=temperature=2  (one line)
//
// Each benchmark iteration is --steps_per_iteration training steps. Counters:
// samples_per_second, tokens_per_second (sequence models), devices, simulated
// bubble. With several schedulers (or
// --scheduler=all) a table compares each against sequential and against the
// ideal (sequential throughput x devices).
#include <benchmark/benchmark.h>
#include <gflags/gflags.h>
#include <glog/logging.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "cli/benchmark_flags.h"
#include "cli/cli.h"
#include "cli/flags.h"
#include "cli/help.h"
#include "cli/report.h"
#include "core/options.h"
#include "io/file_util.h"
#include "core/trace.h"
#include "engine/catalog.h"
#include "engine/planning.h"
#include "engine/progress.h"
#include "engine/trainer.h"

// Which algorithm this binary benchmarks by default: set per target by the
// BUILD file.
#ifndef TSPIPE_BENCHMARK_ALGORITHM
#define TSPIPE_BENCHMARK_ALGORITHM supervised
#endif
#define TSPIPE_STRINGIFY_INNER(x) #x
#define TSPIPE_STRINGIFY(x) TSPIPE_STRINGIFY_INNER(x)

DEFINE_string(algorithm, TSPIPE_STRINGIFY(TSPIPE_BENCHMARK_ALGORITHM),
              "The algorithm (recipe) to train; see the list at the top of --help.");

namespace {

// A failed training step. Locally the scheduler's row is dropped and the
// next scheduler runs; under c10d the peers cannot follow (they may be in
// this scheduler still, or gone), so the rank exits at once: a process
// group with a dead peer may block in its destructor.
void FailRun(benchmark::State& state, const tspipe::TrainConfig& config, const std::exception& e) {
  LOG(ERROR) << config.scheduler << ": " << e.what();
  if (config.world) {
    google::FlushLogFiles(google::GLOG_INFO);
    std::fflush(nullptr);
    _exit(1);
  }
  state.SkipWithError(e.what());
}

// One trainer at a time, so that a model that fits once (BERT-large on a
// 24 GB machine) can be compared under every scheduler: main builds each
// scheduler's trainer to fail fast on bad configurations and drops it; a
// repetition builds its scheduler's trainer unless it is the one alive,
// freeing the old one first. Building is not timed.
std::unique_ptr<tspipe::Trainer> g_trainer;
std::string g_trainer_scheduler;
// --checkpoint_dir: each scheduler's trainer saves into <dir>/<scheduler>
// when it is dropped, at the end, and every --checkpoint_every steps (with
// the clock paused), and a trainer rebuilt for a later repetition continues
// from there; --resume continues from an earlier run's checkpoints.
tspipe::CheckpointSettings g_checkpoints;
std::set<std::string> g_saved;  // Schedulers that saved in this process.

void SaveTrainer() {
  if (g_checkpoints.dir.empty() || !g_trainer || g_trainer->steps_done() == 0) return;
  g_trainer->SaveCheckpoint(tspipe::CheckpointDirFor(g_checkpoints, g_trainer_scheduler),
                            g_checkpoints.keep);
  g_saved.insert(g_trainer_scheduler);
}
// --export: each scheduler's student, written when its trainer is dropped
// and at the end (so the file holds the last repetition's student);
// <stem>.<scheduler>.safetensors when several schedulers run.
std::string g_export;
bool g_export_several = false;

void ExportTrainer() {
  if (g_export.empty() || !g_trainer || g_trainer->steps_done() == 0) return;
  tspipe::ExportStudent(*g_trainer, g_export, g_export_several ? g_trainer_scheduler : "");
}
// Each scheduler's last recorded iteration, for --trace.
std::map<std::string, tspipe::TraceRun> g_traces;

tspipe::Trainer* TrainerFor(const tspipe::TrainConfig& config) {
  if (g_trainer_scheduler != config.scheduler) {
    SaveTrainer();
    ExportTrainer();
    g_trainer.reset();
    g_trainer_scheduler.clear();
    g_trainer = std::make_unique<tspipe::Trainer>(config);
    g_trainer_scheduler = config.scheduler;
    if (!g_checkpoints.dir.empty() && (g_checkpoints.resume || g_saved.count(config.scheduler))) {
      const std::string dir = tspipe::CheckpointDirFor(g_checkpoints, config.scheduler);
      std::vector<std::string> skipped;
      int64_t step = -1;
      try {
        step = g_trainer->Resume(dir, &skipped);
      } catch (const std::invalid_argument& e) {
        // Not a scheduler that cannot run this configuration (which "all"
        // skips): the user's checkpoints do not fit the user's flags.
        throw std::runtime_error(e.what());
      }
      for (const std::string& why : skipped) LOG(WARNING) << "passed over " << why;
      if (step >= 0) LOG(INFO) << config.scheduler << ": continuing from " << dir << " at step " << step;
    }
  }
  return g_trainer.get();
}

void RunTraining(benchmark::State& state, tspipe::TrainConfig config, bool record) {
  tspipe::Trainer* trainer = nullptr;
  // Under c10d this process sees only its own rank's actions.
  record = record && !config.world;
  try {
    trainer = TrainerFor(config);
    trainer->RecordTrace(false);
    trainer->Train(config.steps_per_iteration);  // Warm-up: allocator, prologue.
  } catch (const std::exception& e) {
    FailRun(state, config, e);
    return;
  }
  const int64_t total = static_cast<int64_t>(FLAGS_steps) * config.steps_per_iteration;
  tspipe::Progress progress(config.scheduler, total, config.batch_size);
  int64_t step = 0;
  double loss = 0;
  const int64_t tokens_before = trainer->tokens_trained();
  tspipe::TraceRun last;  // The last iteration's actions (one executor run).
  int64_t iteration = 0;
  const double wait_before = trainer->data_wait_seconds();
  const auto timed_start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    try {
      // Only the last iteration is kept, so only it is recorded: clock
      // reads and memory metering (a report per allocation) cost the
      // others nothing.
      const bool record_now = record && ++iteration == state.max_iterations;
      trainer->RecordTrace(record_now);
      loss = trainer->Train(config.steps_per_iteration);
      if (record_now) last = trainer->TakeTrace();
    } catch (const std::exception& e) {
      FailRun(state, config, e);
      return;
    }
    step += config.steps_per_iteration;
    if (g_checkpoints.every > 0 &&
        trainer->steps_done() % g_checkpoints.every < config.steps_per_iteration) {
      state.PauseTiming();
      try {
        SaveTrainer();
      } catch (const std::exception& e) {
        FailRun(state, config, e);
        return;
      }
      state.ResumeTiming();
    }
    if (FLAGS_log_every > 0 && step % FLAGS_log_every < config.steps_per_iteration) {
      LOG(INFO) << progress.Line(step, loss);
    }
  }
  state.counters["samples_per_second"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * config.steps_per_iteration * config.batch_size,
      benchmark::Counter::kIsRate);
  const int64_t tokens = trainer->tokens_trained() - tokens_before;
  if (tokens > 0) {
    state.counters["tokens_per_second"] =
        benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
  }
  const double timed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - timed_start).count();
  state.counters["data_wait"] =
      timed > 0 ? (trainer->data_wait_seconds() - wait_before) / timed : 0.0;
  state.counters["devices"] = trainer->num_devices();
  state.counters["sim_bubble"] = trainer->simulated_bubble();
  state.counters["stash_peak"] = trainer->stash_peak();
  state.counters["loss"] = loss;
  state.counters["bytes_per_step_per_device"] = trainer->bytes_sent_per_step_per_device();
  trainer->RecordTrace(false);
  if (record && config.steps_per_iteration >= 3) {
    // Fill and drain excluded: steady steps only (SummarizeTrace).
    try {
      const tspipe::TraceSummary summary = tspipe::SummarizeTrace(last);
      state.counters["meas_bubble"] = summary.bubble;
      state.counters["meas_period_ms"] = summary.period_us / 1000;
      state.counters["pred_period_ms"] = summary.predicted_period_us / 1000;
      if (!summary.predicted_stash_bytes.empty()) {
        // The schedule's stash peaks at the measured bytes per forward,
        // summed over stages: what a CPU run's one heap should hold.
        double bytes = 0;
        for (double b : summary.predicted_stash_bytes) bytes += b;
        state.counters["sim_stash_MiB"] = bytes / (1 << 20);
      }
    } catch (const std::exception& e) {
      LOG(WARNING) << config.scheduler << ": no measured bubble: " << e.what();
    }
  }
  if (record && !last.peak_bytes.empty()) {
    // GPU ranks each have a device; a CPU run one heap for every rank.
    int64_t peak = 0;
    for (const auto& [device, bytes] : last.peak_bytes) {
      if (device != "cpu" || last.peak_bytes.size() == 1) peak = std::max(peak, bytes);
    }
    state.counters["peak_MiB"] = static_cast<double>(peak) / (1 << 20);
  }
  if (record) g_traces[config.scheduler] = std::move(last);
}

// --balance=auto: the simulator ranks the cuts; with several close ones, a
// short timed trial of each picks the one that is fastest in practice
// (single process only: c10d ranks would have to agree on it).
void AutoBalance(const tspipe::BlockCosts& costs, tspipe::TrainConfig* config) {
  const std::string& n = config->scheduler;
  std::vector<tspipe::BalancePlan> plans =
      tspipe::PlanBalances(*config, costs, config->world ? 1 : FLAGS_balance_trials, 0.10);
  size_t chosen = 0;
  // Equal periods: the cut does not matter to this scheduler (one rank runs
  // every stage), so there is nothing to try.
  if (plans.size() > 1 && plans.back().period_ms > plans.front().period_ms * (1 + 1e-9)) {
    std::vector<double> rate =
        tspipe::TimePlans(*config, plans, config->steps_per_iteration, /*rounds=*/2);
    for (size_t i = 0; i < plans.size(); ++i) {
      LOG(INFO) << n << ": trial " << tspipe::DescribePlan(plans[i]) << ": " << rate[i]
                << " samples/s";
      if (rate[i] > rate[chosen]) chosen = i;
    }
  }
  tspipe::ApplyPlan(plans[chosen], config);
  LOG(INFO) << n << ": auto balance " << tspipe::DescribePlan(plans[chosen]);
}

}  // namespace

int main(int argc, char** argv) {
  tspipe::RestartForHostMemoryUnlessDisabled(argc, argv);
  // --help lists the options of the algorithm asked for (or this binary's).
  std::string algorithm = FLAGS_algorithm;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--algorithm=", 0) == 0) algorithm = a.substr(12);
  }
  std::string options_help;
  try {
    options_help = tspipe::AlgorithmUsage(algorithm);
  } catch (const std::exception& e) {
    options_help = std::string(e.what()) + "\n";
  }
  gflags::SetUsageMessage(
      std::string("Compares schedulers training one algorithm.\nGoogle Benchmark flags "
                  "(--benchmark_min_time=...) are accepted too.\nAlgorithms (--algorithm):\n") +
      tspipe::DescribeRecipes() + "\n" + options_help + "\nSchedulers (--scheduler):\n" +
      tspipe::DescribeSchedulers());
  // Before Google Benchmark, which would print only its own flags.
  tspipe::HandleHelpFlags(argc, argv, {"benchmarks/train_benchmark.cc", "cli/"});
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--helpfull" || arg == "-helpfull") {
      gflags::ParseCommandLineFlags(&argc, &argv, true);  // Prints and exits.
    }
  }
  std::vector<char*> args(argv, argv + argc);
  const bool interleaved_c10d = tspipe::AddBenchmarkDefaults(argc, argv, &args);
  args.push_back(nullptr);
  argc = static_cast<int>(args.size()) - 1;
  argv = args.data();
  benchmark::Initialize(&argc, argv);
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  if (interleaved_c10d) {
    LOG(ERROR) << "--benchmark_enable_random_interleaving cannot be used with --backend=c10d: "
                  "every rank must run the schedulers in the same order";
    return 1;
  }
  tspipe::TrainConfig base;
  try {
    base = tspipe::ConfigFromFlags(FLAGS_algorithm);
    g_checkpoints = tspipe::CheckpointFlags();
    g_export = tspipe::ExportFlag();
    g_export_several = FLAGS_scheduler == "all" || tspipe::SplitList(FLAGS_scheduler).size() > 1;
    tspipe::SetIntraOpThreads(FLAGS_threads_per_device);
    tspipe::CheckBenchmarkFlags(FLAGS_algorithm);
    base.teacher_checkpoint = tspipe::UserPath(FLAGS_teacher_weights);
    base.initial_checkpoint = tspipe::UserPath(FLAGS_student_weights);
    // Before any timing: a file that is missing or does not fit is one line.
    tspipe::CheckWeightFiles(base, "--teacher_weights=" + FLAGS_teacher_weights,
                             "--student_weights=" + FLAGS_student_weights);
    if (FLAGS_backend == "c10d") {
      base.world =
          tspipe::World::Join(FLAGS_device, FLAGS_peer_timeout, FLAGS_emulate_link_ms_per_mb);
    } else if (FLAGS_backend != "local") {
      throw std::invalid_argument("--backend=" + FLAGS_backend + ": use local or c10d");
    }
  } catch (const std::exception& e) {
    LOG(ERROR) << e.what();
    return 1;
  }
  base.steps_per_iteration = FLAGS_steps_per_iteration;
  base.update_policy = FLAGS_policy;
  base.peer_timeout_seconds = FLAGS_peer_timeout;
  base.data = FLAGS_data;
  if (base.world && FLAGS_steps <= 0) {
    // Google Benchmark would pick an iteration count per process from its
    // own timings; ranks that disagree would wait for each other forever.
    FLAGS_steps = 20;
    LOG(INFO) << "--backend=c10d: running --steps=20 iterations on every rank";
  }
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
  if (!FLAGS_simulate_stages.empty()) {
    try {
      const std::vector<std::string> schedulers =
          FLAGS_scheduler == "all" ? std::vector<std::string>{"tspipe"}
                                   : tspipe::SplitList(FLAGS_scheduler);
      const std::vector<int> stages =
          tspipe::ParseIntList(FLAGS_simulate_stages, "--simulate_stages");
      tspipe::SimulateAtScales(base, costs, schedulers, stages, [](const std::string& line) {
        std::printf("%s\n", line.c_str());
        std::fflush(stdout);
      });
    } catch (const std::exception& e) {
      LOG(ERROR) << "--simulate_stages=" << FLAGS_simulate_stages << ": " << e.what();
      return 1;
    }
    if (FLAGS_simulate_only) return 0;
  }

  const std::vector<std::string> requested =
      FLAGS_scheduler == "all" ? tspipe::SchedulerNames() : tspipe::SplitList(FLAGS_scheduler);
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
      if (auto_balance) AutoBalance(costs, &config);
      LOG(INFO) << n << ": ranks per stage " << TrainerFor(config)->placement();
      g_trainer.reset();  // Built again when its benchmark runs (see TrainerFor).
      g_trainer_scheduler.clear();
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
    auto add = [&](const std::string& name, bool record) {
      names.push_back(name);
      auto* b = benchmark::RegisterBenchmark(("train/" + name).c_str(), RunTraining, config, record);
      b->UseRealTime()->Unit(benchmark::kMillisecond);
      if (FLAGS_steps > 0) b->Iterations(FLAGS_steps);
    };
    add(n, FLAGS_record);
    if (FLAGS_trace_overhead) add(n + ":untraced", false);
  }
  if (names.empty()) {
    LOG(ERROR) << "no scheduler can run this configuration (see the warnings above)";
    return 1;
  }
  tspipe::Results results;
  tspipe::ComparisonReporter reporter(&results);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  // The one-device baseline the ideal scales (README's "fraction of ideal").
  tspipe::PrintComparison(results, names, "sequential");
  if (!FLAGS_plot.empty()) {
    const std::string title = FLAGS_algorithm + " throughput (samples/s), " +
                              std::to_string(FLAGS_stages) + " stages, " +
                              std::to_string(FLAGS_microbatches) + " micro-batches, batch " +
                              std::to_string(FLAGS_batch_size);
    tspipe::WriteFileAtomically(tspipe::UserPath(FLAGS_plot),
                                tspipe::BarChartSvg(results, names, title));
    LOG(INFO) << "wrote " << tspipe::UserPath(FLAGS_plot);
  }
  if (!FLAGS_trace.empty()) {
    std::vector<tspipe::TraceRun> runs;
    for (const std::string& n : names) {
      auto it = g_traces.find(n);
      if (it != g_traces.end() && !it->second.events.empty()) runs.push_back(it->second);
    }
    const std::string path = tspipe::UserPath(FLAGS_trace);
    tspipe::WriteFileAtomically(path, tspipe::ChromeTraceJson(runs));
    tspipe::WriteFileAtomically(tspipe::TraceSvgPath(path), tspipe::MeasuredTimelineSvg(runs));
    LOG(INFO) << "wrote " << path << " (open in ui.perfetto.dev or chrome://tracing) and "
              << tspipe::TraceSvgPath(path);
  }
  benchmark::Shutdown();
  try {
    SaveTrainer();
    ExportTrainer();
  } catch (const std::exception& e) {
    LOG(ERROR) << e.what();
    return 1;
  }
  g_trainer.reset();
  return results.size() == names.size() ? 0 : 1;
}
