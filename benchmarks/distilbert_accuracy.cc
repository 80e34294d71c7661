// DistilBERT to accuracy on the fortune corpus, end to end:
//  1. fit a masked-LM head on the frozen pretrained teacher (all-MiniLM-L6-v2
//     ships without one) and save it atomically as safetensors, or load it if
//     the file exists;
//  2. adapt the teacher to the text (--teacher_steps of MLM on every
//     layer, from the fitted head; saved and reloaded the same way): the
//     pretrained model is a sentence encoder, and a head on its frozen last
//     layer predicts few tokens, so a teacher worth distilling has to learn
//     the task first, as DistilBERT's BERT had;
//  3. evaluate the teacher (head only, and adapted): masked-token accuracy
//     and perplexity on the held-out fortunes;
//  4. distil the teacher into a half-depth student (embeddings, every other
//     layer and the head copied, as DistilBERT starts) under each
//     --scheduler, same seed and data order;
//  5. train the same student from the same start without a teacher (MLM
//     only) for the same steps.
//
//   ./tools/bazel run //benchmarks:distilbert_accuracy -- --steps=300
//
// Relative paths (--head, --teacher, --report) are resolved against the directory
// `bazel run` was started from.
#include <gflags/gflags.h>
#include <glog/logging.h>

#include <cstdio>
#include <map>
#include <memory>
#include <sstream>

#include "cli/cli.h"
#include "cli/flags.h"
#include "cli/help.h"
#include "cli/result_table.h"
#include "io/file_util.h"
#include "engine/catalog.h"
#include "engine/trainer.h"

DEFINE_string(scheduler, "tspipe,sequential",
              "Comma-separated schedulers to distil under; 'sequential' is the reference the "
              "others' parameters are compared with.");
DEFINE_string(head, "minilm_mlm_head.safetensors",
              "The teacher's fitted masked-LM head: loaded if the file exists, else fitted and "
              "saved here (the whole teacher under Hugging Face's BertForMaskedLM names).");
DEFINE_bool(refit_head, false, "Fit and overwrite the head even if the file exists.");
DEFINE_int32(head_steps, 200, "Optimizer steps fitting the head.");
DEFINE_double(head_learning_rate, 1e-3, "AdamW learning rate of the head fit.");
DEFINE_string(teacher, "minilm_mlm_teacher.safetensors",
              "The teacher adapted to the text (every layer trained on MLM from the fitted "
              "head): loaded if the file exists, else trained and saved here.");
DEFINE_bool(refit_teacher, false, "Adapt and overwrite the teacher even if the file exists.");
DEFINE_int32(teacher_steps, 300,
             "Optimizer steps adapting the teacher (0 = distil the teacher with the fitted head "
             "on its frozen encoder).");
DEFINE_int32(steps, 300, "Student optimizer steps per run.");
DEFINE_int32(train_samples, 0, "Train on the first N training fortunes (0 = all 13,687).");
DEFINE_int32(eval_samples, 0, "Evaluate on the first N held-out fortunes (0 = all 1,520).");
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
  double perplexity = 0;
  std::string diff = "-";
  double seconds = 0;
};

// "a=1,b=2" + ",c=3", skipping empty parts.
std::string Join(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return a + "," + b;
}

void Measure(tspipe::Trainer& t, Row* row) {
  tspipe::Metrics m = t.Evaluate(0, FLAGS_eval_samples);
  row->accuracy = tspipe::MetricValue(m, "masked_accuracy");
  row->perplexity = tspipe::MetricValue(m, "perplexity");
  // Logged as it comes: the table prints only at the end of a long run.
  LOG(INFO) << row->run << " (" << row->scheduler << "): masked-token accuracy " << row->accuracy
            << ", perplexity " << row->perplexity;
}

}  // namespace

int main(int argc, char** argv) {
  tspipe::RestartForHostMemoryUnlessDisabled(argc, argv);
  gflags::SetUsageMessage(
      "Fits a masked-LM head on the pretrained teacher, distils the teacher into a half-depth "
      "student under each scheduler, and compares held-out masked-token accuracy and "
      "perplexity with the teacher and with the student trained without a teacher.\n" +
      tspipe::AlgorithmUsage("distilbert"));
  // DistilBERT's optimiser (AdamW, betas 0.9/0.98, eps 1e-6, 5% warm-up),
  // at a batch and sequence length this machine trains in minutes.
  tspipe::SetFlagDefaults({{"batch_size", "32"},
                           {"microbatches", "4"},
                           {"log_every", "25"},
                           {"optimizer", "adamw"},
                           {"learning_rate", "5e-4"},
                           {"adam_betas", "0.9,0.98"},
                           {"adam_eps", "1e-6"},
                           {"warmup_steps", "15"},
                           {"decay_learning_rate", "true"},
                           {"weight_decay", "0"},
                           {"clip_grad_norm", "5"},
                           {"balance", "even"},
                           {"algorithm_options", "max_length=64"}});
  tspipe::HandleHelpFlags(argc, argv, {"benchmarks/distilbert_accuracy.cc", "cli/"});
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;

  const std::string head = UserPath(FLAGS_head);
  const std::string adapted = UserPath(FLAGS_teacher);
  std::vector<Row> rows;
  try {
    tspipe::TrainConfig base = tspipe::ConfigFromFlags("distilbert");
    const std::string export_path = tspipe::ExportFlag();
    tspipe::SetIntraOpThreads(FLAGS_threads_per_device);
    tspipe::RequireAccuracyRunFlags(FLAGS_steps, FLAGS_train_samples, FLAGS_eval_samples,
                                     UserPath(FLAGS_report));
    tspipe::RequireSchedulers("scheduler", FLAGS_scheduler);
    tspipe::RequireAtLeast("head_steps", FLAGS_head_steps, 1);
    tspipe::RequireNumber("head_learning_rate", FLAGS_head_learning_rate, 0, /*strictly=*/true);
    tspipe::RequireAtLeast("teacher_steps", FLAGS_teacher_steps, 0);
    if (FLAGS_refit_head || !FileExists(head)) tspipe::RequireWritable("head", head);
    if (FLAGS_teacher_steps > 0 && (FLAGS_refit_head || FLAGS_refit_teacher || !FileExists(adapted))) {
      tspipe::RequireWritable("teacher", adapted);
    }
    base.data = "fortunes";
    base.train_samples = FLAGS_train_samples;
    base.total_steps = FLAGS_steps;
    if (tspipe::RecipeOptionValue("distilbert", base.algorithm_options, "teacher") != "minilm") {
      throw std::invalid_argument("the accuracy run needs the pretrained teacher (teacher=minilm)");
    }
    if (FLAGS_teacher_steps > 0 && adapted == head) {
      throw std::invalid_argument("--teacher and --head name the same file " + head);
    }
    const std::string teacher_layers = "6";  // all-MiniLM-L6-v2.
    // The teacher as a student of its own shape: every layer, MLM only.
    const std::string as_teacher =
        "student_layers=" + teacher_layers + ",init=teacher,alpha_ce=0,alpha_cos=0";
    // Trains the teacher as a student, `steps` steps on `options`, saving it.
    auto fit_teacher = [&](const std::string& what, const std::string& options, int steps,
                           double learning_rate, const std::string& path) {
      tspipe::TrainConfig fit = base;
      fit.algorithm_options = Join(base.algorithm_options, as_teacher + "," + options);
      fit.scheduler = "sequential";
      fit.stages = 1;
      fit.learning_rate = learning_rate;
      fit.total_steps = steps;
      fit.warmup_steps = std::min(fit.warmup_steps, steps / 10);
      LOG(INFO) << what << " (" << steps << " steps)";
      tspipe::Trainer t(fit);
      Row row{what, "sequential", steps};
      row.seconds = tspipe::TrainWithProgress(t, steps, what, FLAGS_log_every,
                                            tspipe::CheckpointFlags());
      t.ExportModel(path);
      LOG(INFO) << "saved the teacher with its head to " << path;
      rows.push_back(row);
    };
    // Evaluates the teacher `weights` hold.
    auto probe_teacher = [&](const std::string& what, const std::string& weights) {
      tspipe::TrainConfig probe = base;
      probe.algorithm_options =
          Join(base.algorithm_options, as_teacher + ",dropout=0,teacher_weights=" + weights);
      probe.scheduler = "sequential";
      probe.stages = 1;
      tspipe::Trainer t(probe);
      Row row{what, "-", 0};
      Measure(t, &row);
      rows.push_back(row);
    };

    // 1. The head, on the frozen encoder.
    if (FLAGS_refit_head || !FileExists(head)) {
      fit_teacher("teacher head fit", "dropout=0,train=head", FLAGS_head_steps,
                  FLAGS_head_learning_rate, head);
    } else {
      LOG(INFO) << "loading the teacher's head from " << head << " (--refit_head to fit again)";
    }
    // 2. The teacher adapted to the text, from that head.
    std::string teacher = head;
    if (FLAGS_teacher_steps > 0) {
      teacher = adapted;
      if (FLAGS_refit_head || FLAGS_refit_teacher || !FileExists(adapted)) {
        fit_teacher("teacher adaptation", "teacher_weights=" + head, FLAGS_teacher_steps,
                    FLAGS_learning_rate, adapted);
      } else {
        LOG(INFO) << "loading the adapted teacher from " << adapted
                  << " (--refit_teacher to train it again)";
      }
    }

    // 3. The teacher.
    probe_teacher("teacher, head fitted", head);
    if (FLAGS_teacher_steps > 0) probe_teacher("teacher, adapted", adapted);

    // 4. Distillation under each scheduler.
    tspipe::TrainConfig kd = base;
    kd.algorithm_options = Join(base.algorithm_options, "teacher_weights=" + teacher);
    std::map<std::string, std::unique_ptr<tspipe::Trainer>> students;
    for (const std::string& scheduler : SplitList(FLAGS_scheduler)) {
      tspipe::TrainConfig c = kd;
      c.scheduler = scheduler;
      auto trainer = std::make_unique<tspipe::Trainer>(c);
      Row row{"distilled student", scheduler, FLAGS_steps};
      row.seconds =
          tspipe::TrainWithProgress(*trainer, FLAGS_steps, "distil/" + scheduler, FLAGS_log_every,
                                            tspipe::CheckpointFlags());
      Measure(*trainer, &row);
      rows.push_back(row);
      tspipe::ExportStudent(*trainer, export_path,
                            SplitList(FLAGS_scheduler).size() > 1 ? "distil/" + scheduler : "");
      students[scheduler] = std::move(trainer);
    }
    auto reference = students.find("sequential");
    if (reference != students.end()) {
      for (Row& row : rows) {
        if (row.run != "distilled student") continue;
        std::ostringstream d;
        d << students.at(row.scheduler)->MaxParameterDifference(*reference->second);
        row.diff = d.str();
      }
    }

    // 5. The same student without a teacher.
    tspipe::TrainConfig alone = kd;
    alone.algorithm_options = Join(kd.algorithm_options, "alpha_ce=0,alpha_cos=0");
    alone.scheduler = "sequential";
    alone.teacher_balance.clear();
    tspipe::Trainer baseline(alone);
    Row row{"student without teacher", "sequential", FLAGS_steps};
    row.seconds = tspipe::TrainWithProgress(baseline, FLAGS_steps, "mlm-only", FLAGS_log_every,
                                            tspipe::CheckpointFlags());
    Measure(baseline, &row);
    rows.push_back(row);
  } catch (const std::exception& e) {
    LOG(ERROR) << e.what();
    return 1;
  }

  tspipe::ResultTable table({{"run", "run"},
                             {"scheduler", "scheduler"},
                             {"steps", "steps"},
                             {"masked_acc", "masked-token accuracy"},
                             {"perplexity", "perplexity"},
                             {"max_param_diff_vs_seq", "max param diff vs sequential"},
                             {"seconds", "train seconds"}});
  for (const Row& r : rows) {
    table.AddRow({r.run, r.scheduler, std::to_string(r.steps), tspipe::Fixed(r.accuracy, 4),
                  tspipe::Fixed(r.perplexity, 2), r.diff, tspipe::Fixed(r.seconds, 1)});
  }
  const std::string report = FLAGS_report.empty() ? "" : UserPath(FLAGS_report);
  table.Emit(report);
  if (!report.empty()) LOG(INFO) << "wrote " << report;
  return 0;
}
