// Prints a scheduler's schedule and its simulated statistics.
//
//   ./tools/bazel run //tools:schedule -- --scheduler=gpipe --stages=4
//       --microbatches=8 --format=grid|csv|stats [--svg=timeline.svg]
#include <gflags/gflags.h>
#include <glog/logging.h>

#include <cmath>
#include <fstream>
#include <iostream>
#include <stdexcept>

#include "cli/flag_checks.h"
#include "cli/help.h"
#include "io/file_util.h"
#include "core/render.h"
#include "core/scheduler.h"
#include "core/simulator.h"
#include "core/validator.h"

DEFINE_string(scheduler, "gpipe", "Scheduler to print (see --helpon=schedule_main).");
DEFINE_int32(stages, 4, "Pipeline stages.");
DEFINE_int32(microbatches, 8, "Micro-batches per mini-batch.");
DEFINE_int32(devices, 0, "Devices; 0 = the scheduler's natural count.");
DEFINE_string(format, "grid", "grid | csv | stats");
DEFINE_bool(teacher, false, "Schedule a teacher forward (KD-like workload).");
DEFINE_bool(teacher_updates, false, "Schedule teacher updates (BYOL/MoCo-like).");
DEFINE_bool(local_losses, false, "Every stage has its own loss.");
DEFINE_bool(microbatch_losses, false,
            "The loss is per sample (KD, BYOL): schedulers may compute it per micro-batch "
            "(tspipe_1f1b needs this); otherwise it needs the whole mini-batch.");
DEFINE_bool(blockwise, false,
            "Blockwise distillation (pipebd): every stage a block pair that reads the "
            "teacher's input; implies --teacher and --local_losses.");
DEFINE_double(forward_cost, 1.0, "Simulated cost of a student forward.");
DEFINE_double(teacher_cost, 1.0, "Simulated cost of a teacher forward.");
DEFINE_double(backward_cost, 2.0, "Simulated cost of a backward.");
DEFINE_double(backward_input_cost, -1,
              "Simulated cost of the input-gradient half of a split backward (I); "
              "negative: half of --backward_cost.");
DEFINE_double(backward_weight_cost, -1,
              "Simulated cost of the weight-gradient half of a split backward (W); "
              "negative: half of --backward_cost.");
DEFINE_double(message_cost, 0.0, "Simulated latency of one message.");
DEFINE_string(student_stash_bytes, "",
              "Bytes one micro-batch's student forward keeps for its backward, per stage "
              "(comma-separated; a benchmark's trace measures them): stats then give each "
              "stage's stash peak in bytes.");
DEFINE_string(teacher_output_bytes, "",
              "Bytes of one micro-batch's teacher output, per stage (comma-separated).");
DEFINE_string(svg, "", "If set, also write an SVG timeline to this path.");
DEFINE_string(load_csv, "", "Validate and simulate this CSV schedule instead.");

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "Prints a schedule and its simulated statistics.\nSchedulers:\n" +
      tspipe::SchedulerRegistry::Global().Describe());
  tspipe::HandleHelpFlags(argc, argv, {"tools/schedule_main.cc"});
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  try {
    // Every flag before any work: one line naming a bad one.
    if (FLAGS_format != "grid" && FLAGS_format != "csv" && FLAGS_format != "stats") {
      throw std::invalid_argument("--format=" + FLAGS_format + ": use grid, csv or stats");
    }
    if (FLAGS_load_csv.empty()) {
      tspipe::RequireAtLeast("stages", FLAGS_stages, 1);
      tspipe::RequireAtLeast("microbatches", FLAGS_microbatches, 1);
      tspipe::RequireAtLeast("devices", FLAGS_devices, 0);
      const auto& schedulers = tspipe::SchedulerRegistry::Global();
      if (!schedulers.Contains(FLAGS_scheduler)) {
        std::string choices;
        for (const std::string& n : schedulers.Names()) choices += (choices.empty() ? "" : ", ") + n;
        throw std::invalid_argument("--scheduler=" + FLAGS_scheduler + ": unknown; choices: " +
                                    choices);
      }
    } else if (!std::ifstream(FLAGS_load_csv)) {
      throw std::invalid_argument("--load_csv=" + FLAGS_load_csv + ": no such file");
    }
    tspipe::RequireNumber("forward_cost", FLAGS_forward_cost, 0);
    tspipe::RequireNumber("teacher_cost", FLAGS_teacher_cost, 0);
    tspipe::RequireNumber("backward_cost", FLAGS_backward_cost, 0);
    tspipe::RequireNumber("message_cost", FLAGS_message_cost, 0);
    if (FLAGS_backward_input_cost >= 0 || !std::isfinite(FLAGS_backward_input_cost)) {
      tspipe::RequireNumber("backward_input_cost", FLAGS_backward_input_cost, 0);
    }
    if (FLAGS_backward_weight_cost >= 0 || !std::isfinite(FLAGS_backward_weight_cost)) {
      tspipe::RequireNumber("backward_weight_cost", FLAGS_backward_weight_cost, 0);
    }
    tspipe::RequireWritable("svg", FLAGS_svg);
    const std::vector<double> student_bytes =
        tspipe::ParseNumbers("student_stash_bytes", FLAGS_student_stash_bytes, 0);
    const std::vector<double> teacher_bytes =
        tspipe::ParseNumbers("teacher_output_bytes", FLAGS_teacher_output_bytes, 0);
    tspipe::Schedule schedule;
    if (!FLAGS_load_csv.empty()) {
      std::string error;
      if (!tspipe::FromCsv(tspipe::ReadFile(FLAGS_load_csv), &schedule, &error)) {
        LOG(ERROR) << error;
        return 1;
      }
      tspipe::ValidationResult v = tspipe::Validate(schedule);
      if (!v.ok()) {
        std::cerr << "invalid schedule:\n" << v.ToString();
        return 1;
      }
    } else {
      tspipe::SchedulerOptions options;
      options.num_stages = FLAGS_stages;
      options.num_microbatches = FLAGS_microbatches;
      options.num_devices = FLAGS_devices;
      options.workload.teacher = FLAGS_teacher_updates ? tspipe::TeacherKind::kMomentum
                                 : FLAGS_teacher || FLAGS_blockwise ? tspipe::TeacherKind::kFrozen
                                                                    : tspipe::TeacherKind::kNone;
      options.workload.local_losses = FLAGS_local_losses || FLAGS_blockwise;
      options.workload.blockwise = FLAGS_blockwise;
      options.workload.full_batch_loss = !FLAGS_blockwise && !FLAGS_microbatch_losses;
      options.costs.forward = FLAGS_forward_cost;
      options.costs.teacher_forward = FLAGS_teacher_cost;
      options.costs.backward = FLAGS_backward_cost;
      options.costs.backward_input = FLAGS_backward_input_cost;
      options.costs.backward_weight = FLAGS_backward_weight_cost;
      options.costs.message = FLAGS_message_cost;
      schedule = tspipe::BuildSchedule(FLAGS_scheduler, options);
    }
    tspipe::CostModel costs;
    costs.forward = FLAGS_forward_cost;
    costs.teacher_forward = FLAGS_teacher_cost;
    costs.backward = FLAGS_backward_cost;
    costs.backward_input = FLAGS_backward_input_cost;
    costs.backward_weight = FLAGS_backward_weight_cost;
    costs.message = FLAGS_message_cost;
    tspipe::SimulationResult sim = tspipe::Simulate(schedule, costs);
    if (FLAGS_format == "grid") {
      std::cout << tspipe::FormatGrid(schedule, sim);
    } else if (FLAGS_format == "csv") {
      std::cout << tspipe::ToCsv(schedule);
    } else if (FLAGS_format == "stats") {
      std::cout << tspipe::FormatStats(schedule, sim, costs, student_bytes, teacher_bytes);
      // Whether an in-order transport (NCCL) could run it.
      const std::string order = tspipe::CheckMessageOrder(schedule);
      std::cout << "message_order=" << (order.empty() ? "matched" : "mismatched: " + order)
                << "\n";
    }
    if (!FLAGS_svg.empty()) {
      tspipe::WriteFileAtomically(FLAGS_svg, tspipe::TimelineSvg(schedule, sim));
      LOG(INFO) << "wrote " << FLAGS_svg;
    }
  } catch (const std::exception& e) {
    LOG(ERROR) << e.what();
    return 1;
  }
  return 0;
}
