// BYOL pre-training on Fashion-MNIST (labels unused) with the synchronous and
// the TSPipe-delayed momentum update for the same budget, then a linear
// evaluation of each frozen encoder (train split -> test split), with a
// randomly initialised encoder as the floor. TSPipe's claim is that the
// delayed target update costs no accuracy.
//
//   ./tools/bazel run //benchmarks:byol_accuracy -- --steps=470
#include <gflags/gflags.h>
#include <glog/logging.h>

#include <cstdio>
#include <sstream>

#include "benchmarks/cli.h"
#include "benchmarks/flags.h"
#include "core/balance.h"
#include "core/file_util.h"
#include "engine/trainer.h"

DEFINE_string(runs, "gpipe:sync,tspipe:tspipe_delayed",
              "Comma-separated scheduler:policy pre-training runs, all with the same seed, data "
              "order and budget.");
DEFINE_int32(steps, 470, "Pre-training steps per run (470 x 128 = 1 epoch).");
DEFINE_int32(train_samples, 0, "Pre-train and fit the classifier on the first N images (0 = all).");
DEFINE_int32(eval_samples, 0, "Evaluate on the first N test images (0 = all 10000).");
DEFINE_string(report, "", "If set, also write the result table (Markdown) to this file.");

int main(int argc, char** argv) {
  tspipe::RestartForHostMemoryUnlessDisabled(argc, argv);
  gflags::SetUsageMessage(
      "Pre-trains BYOL on Fashion-MNIST under each scheduler:policy and reports linear "
      "evaluation accuracy against a random encoder.\n" +
      tspipe::AlgorithmUsage("byol"));
  tspipe::SetFlagDefaults({{"batch_size", "128"}, {"log_every", "50"}, {"weight_decay", "1e-4"}});
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;

  struct Row {
    std::string run, scheduler, policy;
    int steps = 0;
    double accuracy = 0, seconds = 0;
  };
  std::vector<Row> rows;
  try {
    tspipe::TrainConfig base = tspipe::ConfigFromFlags("byol");
    const std::string export_path = tspipe::ExportFlag();
    tspipe::SetIntraOpThreads(FLAGS_threads_per_device);
    tspipe::RequireAccuracyRunFlags(FLAGS_steps, FLAGS_train_samples, FLAGS_eval_samples,
                                     tspipe::UserPath(FLAGS_report));
    for (const std::string& run : tspipe::SplitList(FLAGS_runs)) {
      const size_t colon = run.find(':');
      if (colon == std::string::npos) {
        throw std::invalid_argument("--runs=" + FLAGS_runs + ": '" + run +
                                    "' is not scheduler:policy");
      }
      tspipe::RequireSchedulers("runs", run.substr(0, colon));
    }
    base.data = "fashion_mnist";
    base.train_samples = FLAGS_train_samples;
    base.total_steps = FLAGS_steps;
    if (FLAGS_balance == "auto") {
      // One cut for every run (planned for tspipe): the runs differ only in
      // scheduler and policy.
      base.scheduler = "tspipe";
      tspipe::BalancePlan plan = tspipe::PlanBalance(base);
      tspipe::ApplyPlan(plan, &base);
      LOG(INFO) << "auto balance (online, target): " << tspipe::DescribePlan(plan);
    }
    {
      tspipe::Trainer random(base);
      Row row{"random encoder", "-", "-", 0};
      row.accuracy = tspipe::MetricValue(random.Evaluate(FLAGS_train_samples, FLAGS_eval_samples),
                                         "linear_top1");
      LOG(INFO) << "random encoder: linear accuracy " << row.accuracy;
      rows.push_back(row);
    }
    for (const std::string& run : tspipe::SplitList(FLAGS_runs)) {
      const size_t colon = run.find(':');
      if (colon == std::string::npos) {
        LOG(ERROR) << "--runs: '" << run << "' is not scheduler:policy";
        return 1;
      }
      tspipe::TrainConfig c = base;
      c.scheduler = run.substr(0, colon);
      c.update_policy = run.substr(colon + 1);
      tspipe::Trainer trainer(c);
      Row row{"byol", c.scheduler, c.update_policy, FLAGS_steps};
      row.seconds = tspipe::TrainWithProgress(trainer, FLAGS_steps, "byol/" + run, FLAGS_log_every,
                                            tspipe::CheckpointFlags());
      row.accuracy = tspipe::MetricValue(trainer.Evaluate(FLAGS_train_samples, FLAGS_eval_samples),
                                         "linear_top1");
      LOG(INFO) << run << ": linear accuracy " << row.accuracy;
      rows.push_back(row);
      tspipe::ExportStudent(trainer, export_path,
                            tspipe::SplitList(FLAGS_runs).size() > 1 ? "byol/" + run : "");
    }
  } catch (const std::exception& e) {
    LOG(ERROR) << e.what();
    return 1;
  }

  std::ostringstream table;
  table << "| run | scheduler | policy | steps | linear eval accuracy | train seconds |\n"
           "|---|---|---|---|---|---|\n";
  std::printf("\n%-15s %-11s %-15s %6s %15s %9s\n", "run", "scheduler", "policy", "steps",
              "linear_accuracy", "seconds");
  for (const Row& r : rows) {
    std::printf("%-15s %-11s %-15s %6d %15.4f %9.1f\n", r.run.c_str(), r.scheduler.c_str(),
                r.policy.c_str(), r.steps, r.accuracy, r.seconds);
    table << "| " << r.run << " | " << r.scheduler << " | " << r.policy << " | " << r.steps
          << " | " << r.accuracy << " | " << r.seconds << " |\n";
  }
  std::fflush(stdout);
  if (!FLAGS_report.empty()) {
    tspipe::WriteFileAtomically(tspipe::UserPath(FLAGS_report), table.str());
  }
  return 0;
}
