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

#include "cli/cli.h"
#include "cli/flags.h"
#include "cli/help.h"
#include "cli/result_table.h"
#include "core/balance.h"
#include "io/file_util.h"
#include "engine/planning.h"
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
  tspipe::HandleHelpFlags(argc, argv, {"benchmarks/byol_accuracy.cc", "cli/"});
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
    // One cut for every run (planned for tspipe when automatic): the runs
    // differ only in scheduler and policy; the random encoder is evaluated
    // as placed by tspipe (it trains nothing, so any scheduler gives it).
    base.scheduler = "tspipe";
    if (FLAGS_balance == "auto") {
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

  tspipe::ResultTable table({{"run", "run"},
                             {"scheduler", "scheduler"},
                             {"policy", "policy"},
                             {"steps", "steps"},
                             {"linear_accuracy", "linear eval accuracy"},
                             {"seconds", "train seconds"}});
  for (const Row& r : rows) {
    table.AddRow({r.run, r.scheduler, r.policy, std::to_string(r.steps),
                  tspipe::Fixed(r.accuracy, 4), tspipe::Fixed(r.seconds, 1)});
  }
  table.Emit(FLAGS_report.empty() ? "" : tspipe::UserPath(FLAGS_report));
  return 0;
}
