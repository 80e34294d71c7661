// Codistillation to accuracy on Fashion-MNIST against its two baselines,
// same steps, seed and samples per step:
//  1. n codistilled models, each on its own share of a mini-batch of
//     --batch_size (2 x 64 by default), exchanging parameters every K steps;
//  2. one model trained with data parallelism on the whole mini-batch (one
//     replica per model of run 1, gradients all-reduced every step);
//  3. one model alone on one share (64).
// Reports test accuracy (each codistilled model, their mean and their
// ensemble), the bytes each device sent per step (counted by the
// transport), and the simulator's view of both methods' throughput as the
// link gets slower: from which link cost codistillation is faster than dp.
//
//   ./tools/bazel run //benchmarks:codistill_accuracy -- --steps=470
#include <gflags/gflags.h>
#include <glog/logging.h>

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "cli/cli.h"
#include "cli/flags.h"
#include "cli/help.h"
#include "cli/result_table.h"
#include "io/file_util.h"
#include "engine/catalog.h"
#include "engine/planning.h"
#include "engine/trainer.h"

DEFINE_int32(steps, 470, "Optimizer steps per run (470 x 128 = 1 epoch).");
DEFINE_int32(train_samples, 0, "Train on the first N images (0 = all 60000).");
DEFINE_int32(eval_samples, 0, "Evaluate on the first N test images (0 = all 10000).");
DEFINE_string(scheduler, "sequential",
              "Each codistilled model's schedule: sequential (one device per model), gpipe or "
              "tspipe (--stages each).");
DEFINE_double(codistill_weight_decay, -1,
              "Weight decay of the codistilled models (codistillation regularises; Sodhani et "
              "al. lower it); < 0 = --weight_decay.");
DEFINE_string(link_ms_per_mb, "0,0.1,0.3,1,3,10,30",
              "Link costs (ms per MB) for the simulated throughput table.");
DEFINE_string(report, "", "If set, also write the result tables (Markdown) to this file.");

namespace {

struct Row {
  std::string run, detail;
  double accuracy = 0, seconds = 0, kb_per_step = 0;
};

// Simulated samples/s of `plan` for `config` when each all-reduce and each
// exchange costs `ms_per_mb` per MB of what the device sends.
double SimulatedRate(const tspipe::TrainConfig& config, const tspipe::BlockCosts& costs,
                     double bytes_per_step_per_device, bool exchange, double ms_per_mb) {
  tspipe::CutSearch search = tspipe::CutSearchFor(config);
  // The step's bytes are spread over its stages' collectives (dp: one
  // all-reduce per stage; codistillation: the exchange, amortised over K).
  const double ms = bytes_per_step_per_device / 1e6 * ms_per_mb / config.stages;
  (exchange ? search.teacher_update_ms : search.all_reduce_ms) = ms;
  const tspipe::BalancePlan plan =
      tspipe::PlanFor(search, costs, config.balance, config.teacher_balance);
  return config.batch_size / plan.period_ms * 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  tspipe::RestartForHostMemoryUnlessDisabled(argc, argv);
  gflags::SetUsageMessage(
      "Codistills models on Fashion-MNIST and compares their accuracy and traffic with data "
      "parallelism and with one model alone.\n" +
      tspipe::AlgorithmUsage("codistill"));
  tspipe::SetFlagDefaults({{"batch_size", "128"},
                           {"log_every", "50"},
                           {"weight_decay", "1e-4"},
                           {"stages", "1"},
                           {"microbatches", "2"},
                           {"balance", "even"}});
  tspipe::HandleHelpFlags(argc, argv, {"benchmarks/codistill_accuracy.cc", "cli/"});
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;

  std::vector<Row> rows;
  std::ostringstream links;
  try {
    tspipe::TrainConfig codistill = tspipe::ConfigFromFlags("codistill");
    const std::string export_path = tspipe::ExportFlag();
    tspipe::SetIntraOpThreads(FLAGS_threads_per_device);
    tspipe::RequireAccuracyRunFlags(FLAGS_steps, FLAGS_train_samples, FLAGS_eval_samples,
                                     tspipe::UserPath(FLAGS_report));
    tspipe::RequireSchedulers("scheduler", FLAGS_scheduler);
    const std::vector<double> link_costs =
        tspipe::ParseNumbers("link_ms_per_mb", FLAGS_link_ms_per_mb, 0);
    if (FLAGS_codistill_weight_decay != -1) {
      tspipe::RequireNumber("codistill_weight_decay", FLAGS_codistill_weight_decay, 0);
    }
    codistill.scheduler = FLAGS_scheduler;
    codistill.data = "fashion_mnist";
    codistill.train_samples = FLAGS_train_samples;
    if (FLAGS_codistill_weight_decay >= 0) codistill.weight_decay = FLAGS_codistill_weight_decay;
    const int models = std::stoi(
        tspipe::RecipeOptionValue("codistill", codistill.algorithm_options, "models"));
    const std::string shape =
        "widths=" + tspipe::RecipeOptionValue("codistill", codistill.algorithm_options, "widths") +
        ",blocks=" + tspipe::RecipeOptionValue("codistill", codistill.algorithm_options, "blocks");

    // 1. Codistillation.
    tspipe::Trainer c(codistill);
    Row row{"codistill", std::to_string(models) + " models x " +
                             std::to_string(codistill.batch_size / models) + ", " +
                             FLAGS_scheduler + ", wd " + std::to_string(codistill.weight_decay)};
    row.seconds = tspipe::TrainWithProgress(c, FLAGS_steps, "codistill", FLAGS_log_every,
                                            tspipe::CheckpointFlags());
    row.kb_per_step = c.bytes_sent_per_step_per_device() / 1024;
    for (int g = 0; g < models; ++g) {
      tspipe::ExportStudent(c, export_path, "codistill/model" + std::to_string(g), g);
    }
    const tspipe::Metrics m = c.Evaluate(0, FLAGS_eval_samples);
    for (const auto& [name, value] : m) {
      Row r = row;
      r.run = "codistill " + name;
      r.accuracy = value;
      rows.push_back(r);
    }

    // 2. One model, data parallel over as many replicas as there are models.
    tspipe::TrainConfig dp = codistill;
    dp.algorithm = "supervised";
    dp.algorithm_options = shape;
    dp.scheduler = "dp";
    dp.stages = models;  // dp: one replica per stage's device.
    dp.balance.clear();
    dp.microbatches = codistill.microbatches * models;
    dp.weight_decay = FLAGS_weight_decay;
    tspipe::Trainer d(dp);
    Row drow{"dp", std::to_string(models) + " replicas x " +
                       std::to_string(dp.batch_size / models) + ", wd " +
                       std::to_string(dp.weight_decay)};
    drow.seconds = tspipe::TrainWithProgress(d, FLAGS_steps, "dp", FLAGS_log_every,
                                            tspipe::CheckpointFlags());
    drow.kb_per_step = d.bytes_sent_per_step_per_device() / 1024;
    drow.accuracy = tspipe::MetricValue(d.Evaluate(0, FLAGS_eval_samples), "top1");
    rows.push_back(drow);

    // 3. One model alone on one share.
    tspipe::TrainConfig alone = dp;
    alone.scheduler = "sequential";
    alone.stages = 1;
    alone.batch_size = codistill.batch_size / models;
    alone.microbatches = codistill.microbatches;
    tspipe::Trainer a(alone);
    Row arow{"alone", "1 model x " + std::to_string(alone.batch_size) + ", wd " +
                          std::to_string(alone.weight_decay)};
    arow.seconds = tspipe::TrainWithProgress(a, FLAGS_steps, "alone", FLAGS_log_every,
                                            tspipe::CheckpointFlags());
    arow.accuracy = tspipe::MetricValue(a.Evaluate(0, FLAGS_eval_samples), "top1");
    rows.push_back(arow);

    // The simulator's view of a slower link, from measured block costs and
    // the bytes counted above.
    tspipe::TrainConfig dp_sim = dp, codistill_sim = codistill;
    dp_sim.data = codistill_sim.data = "synthetic";
    const tspipe::BlockCosts dp_costs = tspipe::MeasureBlockCosts(dp_sim);
    const tspipe::BlockCosts c_costs = tspipe::MeasureBlockCosts(codistill_sim);
    // Each at its best simulated cut.
    tspipe::ApplyPlan(tspipe::PlanBalances(dp_sim, dp_costs, 1, 0).front(), &dp_sim);
    tspipe::ApplyPlan(tspipe::PlanBalances(codistill_sim, c_costs, 1, 0).front(), &codistill_sim);
    const double dp_bytes = d.bytes_sent_per_step_per_device();
    const double c_bytes = c.bytes_sent_per_step_per_device();
    tspipe::ResultTable link_table({{"link_ms/MB", "link ms/MB"},
                                    {"dp_samples/s", "dp samples/s"},
                                    {"codistill_samples/s", "codistill samples/s"},
                                    {"codistill/dp", "codistill / dp"}});
    for (const double link : link_costs) {
      const double rd = SimulatedRate(dp_sim, dp_costs, dp_bytes, false, link);
      const double rc = SimulatedRate(codistill_sim, c_costs, c_bytes, true, link);
      std::ostringstream cost;
      cost << link;
      link_table.AddRow({cost.str(), tspipe::Fixed(rd, 1), tspipe::Fixed(rc, 1),
                         tspipe::Fixed(rc / rd, 3)});
    }
    link_table.Emit("");
    links << link_table.Markdown();
    // Where the two meet: bisection on the link cost.
    double lo = 0, hi = 1e4;
    auto faster = [&](double link) {
      return SimulatedRate(codistill_sim, c_costs, c_bytes, true, link) >
             SimulatedRate(dp_sim, dp_costs, dp_bytes, false, link);
    };
    if (faster(lo)) {
      std::printf("codistillation is faster at every link cost\n");
      links << "\ncodistillation is faster at every link cost\n";
    } else if (!faster(hi)) {
      std::printf("dp is faster up to %g ms/MB\n", hi);
    } else {
      for (int i = 0; i < 60; ++i) {
        const double mid = (lo + hi) / 2;
        (faster(mid) ? hi : lo) = mid;
      }
      std::printf("codistillation is faster from %.3g ms/MB (simulated)\n", hi);
      links << "\ncodistillation is faster from " << hi << " ms/MB (simulated)\n";
    }
  } catch (const std::exception& e) {
    LOG(ERROR) << e.what();
    return 1;
  }

  tspipe::ResultTable table({{"run", "run"},
                             {"detail", "detail"},
                             {"steps", "steps"},
                             {"test_accuracy", "test accuracy"},
                             {"KB/step/device", "KB sent/step/device"},
                             {"seconds", "train seconds"}});
  for (const Row& r : rows) {
    table.AddRow({r.run, r.detail, std::to_string(FLAGS_steps), tspipe::Fixed(r.accuracy, 4),
                  tspipe::Fixed(r.kb_per_step, 1), tspipe::Fixed(r.seconds, 1)});
  }
  table.Emit(FLAGS_report.empty() ? "" : tspipe::UserPath(FLAGS_report), "\n" + links.str());
  return 0;
}
