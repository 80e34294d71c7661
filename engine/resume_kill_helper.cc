// Helper of checkpoint_kill_test.sh: the same tiny KD run in three modes.
//   train DIR STEPS   checkpoints after every step (keeping 2), endlessly
//                     killed by the test at random moments;
//   check DIR         resumes from DIR's newest complete checkpoint and
//                     compares it with a run of that many steps that never
//                     stopped: prints "resumed S" (exit 0), "none" (no
//                     checkpoint yet, exit 0) or what differs (exit 1).
// Torch-free like every main: the Trainer does the work.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "engine/trainer.h"

namespace {

tspipe::TrainConfig Config() {
  tspipe::TrainConfig c;
  c.algorithm = "kd";
  // Wide enough that a checkpoint takes a while to write, so that kills
  // land inside writes.
  c.algorithm_options = "widths=32,64,blocks=1,1,teacher_widths=16,16,teacher_blocks=1,1";
  c.scheduler = "tspipe";
  c.stages = 2;
  c.microbatches = 2;
  c.batch_size = 4;
  c.num_batches = 3;
  c.dtype = "float64";
  c.seed = 5;
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s train DIR STEPS | check DIR\n", argv[0]);
    return 2;
  }
  const std::string mode = argv[1], dir = argv[2];
  try {
    tspipe::SetIntraOpThreads(1);
    if (mode == "train" && argc == 4) {
      tspipe::Trainer t(Config());
      t.Resume(dir);  // Continue where the last killed run got to.
      for (int steps = std::atoi(argv[3]); t.steps_done() < steps;) {
        t.Train(1);
        t.SaveCheckpoint(dir, 2);
      }
      return 0;
    }
    if (mode == "check") {
      tspipe::Trainer resumed(Config());
      const int64_t step = resumed.Resume(dir);
      if (step < 0) {
        std::printf("none\n");
        return 0;
      }
      tspipe::Trainer straight(Config());
      if (step > 0) straight.Train(static_cast<int>(step));
      const double diff = resumed.MaxParameterDifference(straight);
      if (diff != 0) {
        std::printf("step %lld: resumed parameters differ from a straight run by %g\n",
                    static_cast<long long>(step), diff);
        return 1;
      }
      // And it trains on from there like the straight run.
      resumed.Train(1);
      straight.Train(1);
      if (resumed.MaxParameterDifference(straight) != 0) {
        std::printf("step %lld: the step after resuming differs\n", static_cast<long long>(step));
        return 1;
      }
      std::printf("resumed %lld\n", static_cast<long long>(step));
      return 0;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
  return 2;
}
