// Knowledge distillation to accuracy on Fashion-MNIST, end to end:
//  1. train the teacher (a larger ResNet) with labels and save it atomically,
//     or load it if the checkpoint already exists;
//  2. distil it into the student under each --scheduler, same seed and data
//     order, and compare test accuracy and parameters against the sequential
//     run (with a frozen teacher every scheduler computes the same thing);
//  3. train the same student without a teacher for the same steps.
//
//   ./tools/bazel run //benchmarks:kd_accuracy -- --scheduler=tspipe,sequential
//
// Relative paths (--teacher_checkpoint, --report) are resolved against the
// directory `bazel run` was started from.
#include <gflags/gflags.h>
#include <glog/logging.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>

#include "cli/cli.h"
#include "cli/flags.h"
#include "cli/help.h"
#include "cli/result_table.h"
#include "core/balance.h"
#include "io/file_util.h"
#include "engine/catalog.h"
#include "engine/planning.h"
#include "engine/trainer.h"

DEFINE_string(scheduler, "tspipe,sequential",
              "Comma-separated schedulers to distil under; 'sequential' is the reference the "
              "others' parameters are compared with.");
DEFINE_string(teacher_checkpoint, "fashion_mnist_teacher.pt",
              "Teacher weights: loaded if the file exists, else trained and saved here (as "
              "safetensors when the name ends in .safetensors, else as a LibTorch archive; a "
              "safetensors teacher may come from PyTorch, with the names --export writes).");
DEFINE_string(data, "fashion_mnist",
              "fashion_mnist (Debian's IDX files) or imagefolder (--data_dir=ROOT for training, "
              "--eval_dir=ROOT for the test split; tools/make_image_folder.py writes a copy of "
              "Fashion-MNIST, --data_augment=none compares it with the IDX files).");
DEFINE_bool(retrain_teacher, false, "Train and overwrite the teacher checkpoint even if it exists.");
DEFINE_string(teacher_scheduler, "gpipe", "Scheduler for training the teacher.");
DEFINE_int32(teacher_steps, 940, "Teacher optimizer steps (940 x 128 = 2 epochs).");
DEFINE_int32(steps, 470, "Student optimizer steps per run (470 x 128 = 1 epoch).");
DEFINE_int32(train_samples, 0, "Use only the first N training images (0 = all 60000).");
DEFINE_int32(eval_samples, 0, "Evaluate on the first N test images (0 = all 10000).");
DEFINE_string(report, "", "If set, also write the result table (Markdown) to this file.");

namespace {

using tspipe::FileExists;
using tspipe::SplitList;
using tspipe::UserPath;

struct Row {
  std::string run;
  std::string scheduler;
  int steps = 0;
  double accuracy = 0;
  std::string diff = "-";
  double seconds = 0;
};

}  // namespace

int main(int argc, char** argv) {
  tspipe::RestartForHostMemoryUnlessDisabled(argc, argv);
  gflags::SetUsageMessage(
      "Trains (or loads) a Fashion-MNIST teacher, distils it into a student under each "
      "scheduler, and compares test accuracy with a student trained without a teacher.\n" +
      tspipe::AlgorithmUsage("kd"));
  tspipe::SetFlagDefaults({{"batch_size", "128"}, {"log_every", "50"}, {"weight_decay", "5e-4"}});
  tspipe::HandleHelpFlags(argc, argv, {"benchmarks/kd_accuracy.cc", "cli/"});
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;

  const std::string checkpoint = UserPath(FLAGS_teacher_checkpoint);
  std::vector<Row> rows;

  try {
    tspipe::TrainConfig base = tspipe::ConfigFromFlags("kd");
    const std::string export_path = tspipe::ExportFlag();
    tspipe::SetIntraOpThreads(FLAGS_threads_per_device);
    tspipe::RequireAccuracyRunFlags(FLAGS_steps, FLAGS_train_samples, FLAGS_eval_samples,
                                     UserPath(FLAGS_report));
    tspipe::RequireSchedulers("scheduler", FLAGS_scheduler);
    tspipe::RequireSchedulers("teacher_scheduler", FLAGS_teacher_scheduler);
    tspipe::RequireAtLeast("teacher_steps", FLAGS_teacher_steps, 1);
    if (FLAGS_retrain_teacher || !FileExists(checkpoint)) {
      tspipe::RequireWritable("teacher_checkpoint", checkpoint);
    }
    if (FLAGS_data != "fashion_mnist" && FLAGS_data != "imagefolder") {
      throw std::invalid_argument("--data=" + FLAGS_data + ": use fashion_mnist or imagefolder");
    }
    base.data = FLAGS_data;
    base.train_samples = FLAGS_train_samples;
    // 1. The teacher: a supervised run whose student has the KD teacher's
    // shape.
    tspipe::TrainConfig teacher = base;
    teacher.algorithm = "supervised";
    teacher.algorithm_options =
        "widths=" + tspipe::RecipeOptionValue("kd", base.algorithm_options, "teacher_widths") +
        ",blocks=" + tspipe::RecipeOptionValue("kd", base.algorithm_options, "teacher_blocks");
    teacher.scheduler = FLAGS_teacher_scheduler;
    // --balance and --teacher_balance cut the KD run; the teacher's own
    // training is cut evenly or by plan.
    teacher.balance.clear();
    teacher.teacher_balance.clear();
    if (FLAGS_balance == "auto") tspipe::ApplyPlan(tspipe::PlanBalance(teacher), &teacher);
    if (FLAGS_retrain_teacher || !FileExists(checkpoint)) {
      LOG(INFO) << "training the teacher (" << FLAGS_teacher_steps << " steps, "
                << FLAGS_teacher_scheduler << ", balance "
                << tspipe::FormatBalance(teacher.balance) << ")";
      tspipe::Trainer t(teacher);
      Row row{"teacher", teacher.scheduler, FLAGS_teacher_steps};
      row.seconds = tspipe::TrainWithProgress(t, FLAGS_teacher_steps, "teacher", FLAGS_log_every,
                                            tspipe::CheckpointFlags());
      row.accuracy = tspipe::MetricValue(t.Evaluate(0, FLAGS_eval_samples), "top1");
      // A .safetensors name gets the exchange format (PyTorch reads it);
      // either loads back the same way.
      const std::string st = ".safetensors";
      if (checkpoint.size() > st.size() &&
          checkpoint.compare(checkpoint.size() - st.size(), st.size(), st) == 0) {
        t.ExportModel(checkpoint);
      } else {
        t.SaveModel(checkpoint);
      }
      LOG(INFO) << "saved the teacher to " << checkpoint << " (test accuracy " << row.accuracy
                << ")";
      rows.push_back(row);
    } else {
      LOG(INFO) << "loading the teacher from " << checkpoint
                << " (--retrain_teacher to train a new one)";
    }
    const bool loaded = rows.empty();

    // 2. Distillation under each scheduler, same seed and data order.
    tspipe::TrainConfig kd = base;
    kd.algorithm = "kd";
    kd.teacher_checkpoint = checkpoint;
    if (FLAGS_balance == "auto") {
      // One cut for every scheduler (planned for the first), so that their
      // students compare parameter for parameter.
      kd.scheduler = SplitList(FLAGS_scheduler).at(0);
      tspipe::BalancePlan plan = tspipe::PlanBalance(kd);
      tspipe::ApplyPlan(plan, &kd);
      LOG(INFO) << "auto balance for " << kd.scheduler << ": " << tspipe::DescribePlan(plan);
    }
    LOG(INFO) << "distilling with balance student " << tspipe::FormatBalance(kd.balance)
              << ", teacher " << tspipe::FormatBalance(kd.teacher_balance)
              << " (empty = even)";
    std::map<std::string, std::unique_ptr<tspipe::Trainer>> students;
    for (const std::string& scheduler : SplitList(FLAGS_scheduler)) {
      tspipe::TrainConfig c = kd;
      c.scheduler = scheduler;
      auto trainer = std::make_unique<tspipe::Trainer>(c);
      Row row{"kd student", scheduler, FLAGS_steps};
      row.seconds = tspipe::TrainWithProgress(*trainer, FLAGS_steps, "kd/" + scheduler, FLAGS_log_every,
                                            tspipe::CheckpointFlags());
      row.accuracy = tspipe::MetricValue(trainer->Evaluate(0, FLAGS_eval_samples), "top1");
      rows.push_back(row);
      tspipe::ExportStudent(*trainer, export_path,
                            SplitList(FLAGS_scheduler).size() > 1 ? "kd/" + scheduler : "");
      students[scheduler] = std::move(trainer);
    }
    if (loaded) {
      // Report the loaded teacher's accuracy too: a run with its shape that
      // starts from the checkpoint and is evaluated without training. (After
      // the KD runs, whose loading errors name the teacher.)
      tspipe::TrainConfig probe = teacher;
      probe.initial_checkpoint = checkpoint;
      Row row{"teacher (loaded)", "-", 0};
      row.accuracy =
          tspipe::MetricValue(tspipe::Trainer(probe).Evaluate(0, FLAGS_eval_samples), "top1");
      rows.insert(rows.begin(), row);
    }
    auto reference = students.find("sequential");
    if (reference != students.end()) {
      for (Row& row : rows) {
        if (row.run != "kd student") continue;
        std::ostringstream d;
        d << students.at(row.scheduler)->MaxParameterDifference(*reference->second);
        row.diff = d.str();
      }
    }

    // 3. The same student, same steps and data, without a teacher.
    tspipe::TrainConfig alone = kd;
    alone.algorithm = "supervised";
    alone.algorithm_options =
        "widths=" + tspipe::RecipeOptionValue("kd", base.algorithm_options, "widths") +
        ",blocks=" + tspipe::RecipeOptionValue("kd", base.algorithm_options, "blocks");
    alone.scheduler = "sequential";
    alone.teacher_checkpoint.clear();
    alone.teacher_balance.clear();
    tspipe::Trainer baseline(alone);
    Row row{"student without teacher", "sequential", FLAGS_steps};
    row.seconds = tspipe::TrainWithProgress(baseline, FLAGS_steps, "no-teacher", FLAGS_log_every,
                                            tspipe::CheckpointFlags());
    row.accuracy = tspipe::MetricValue(baseline.Evaluate(0, FLAGS_eval_samples), "top1");
    rows.push_back(row);
  } catch (const std::exception& e) {
    LOG(ERROR) << e.what();
    return 1;
  }

  tspipe::ResultTable table({{"run", "run"},
                             {"scheduler", "scheduler"},
                             {"steps", "steps"},
                             {"test_accuracy", "test accuracy"},
                             {"max_param_diff_vs_seq_kd", "max param diff vs sequential kd"},
                             {"seconds", "train seconds"}});
  for (const Row& r : rows) {
    table.AddRow({r.run, r.scheduler, std::to_string(r.steps), tspipe::Fixed(r.accuracy, 4),
                  r.diff, tspipe::Fixed(r.seconds, 1)});
  }
  const std::string report = FLAGS_report.empty() ? "" : UserPath(FLAGS_report);
  table.Emit(report);
  if (!report.empty()) LOG(INFO) << "wrote " << report;
  return 0;
}
