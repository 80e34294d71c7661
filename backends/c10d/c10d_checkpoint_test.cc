// Checkpoints under c10d: every process writes its own ranks' state, rank 0
// the manifest last; processes that resume continue exactly where a world
// that never stopped would be; a different world size is refused. The test
// binary is also the worker (backends/c10d/test_processes.h).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "backends/c10d/test_processes.h"
#include "engine/checkpoint.h"
#include "engine/trainer.h"
#include "engine/world.h"

namespace tspipe {
namespace {

namespace fs = std::filesystem;

TrainConfig KdConfig(int stages) {
  TrainConfig c;
  c.algorithm = "kd";
  c.algorithm_options = "widths=4,8,blocks=1,2,teacher_widths=4,8,teacher_blocks=1,2";
  c.scheduler = stages == 1 ? "sequential" : "tspipe";
  c.stages = stages;
  c.balance = stages == 2 ? std::vector<int>{3, 2} : std::vector<int>{};
  c.teacher_balance = stages == 2 ? std::vector<int>{2, 3} : std::vector<int>{};
  c.microbatches = 2;
  c.batch_size = 8;
  c.num_batches = 3;
  c.dtype = "float64";
  c.optimizer = "adamw";
  c.learning_rate = 0.01;
  c.seed = 4;
  c.peer_timeout_seconds = 20;
  return c;
}

// A rank: TSPIPE_MODE "straight" trains TSPIPE_STEPS steps; "save" trains
// TSPIPE_SAVE_AT steps, checkpoints, then one more (lost); "resume" resumes
// and trains up to TSPIPE_STEPS. Each writes the loss of every step it
// trained as "step loss" lines.
[[noreturn]] void ChildMain() {
  const int rank = std::stoi(Env("RANK"));
  try {
    TrainConfig c = KdConfig(std::stoi(Env("TSPIPE_STAGES", "2")));
    c.world = World::Join("cpu", c.peer_timeout_seconds);
    Trainer trainer(c);
    const std::string mode = Env("TSPIPE_MODE"), dir = Env("TSPIPE_CKPT");
    std::ofstream losses(Env("TSPIPE_OUT") + "/" + mode + std::to_string(rank) + ".txt");
    losses.precision(17);
    int steps = std::stoi(Env("TSPIPE_STEPS", "5"));
    if (mode == "resume") {
      const int64_t step = trainer.Resume(dir);
      losses << "resumed " << step << "\n";
    } else if (mode == "save") {
      steps = std::stoi(Env("TSPIPE_SAVE_AT"));
    }
    while (trainer.steps_done() < steps) {
      const double loss = trainer.Train(1);
      losses << trainer.steps_done() << " " << loss << "\n";
    }
    if (mode == "save") {
      trainer.SaveCheckpoint(dir, 2);
      trainer.Train(1);
    }
    losses.close();
    std::fflush(nullptr);
    _exit(0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: error: %s\n", rank, e.what());
    std::fflush(stderr);
    _exit(1);
  }
}

// Runs `world` processes in `mode`; returns each one's exit status.
std::vector<int> RunWorld(int world, int stages, const std::string& mode, const std::string& dir,
                          const std::string& ckpt, std::vector<std::string>* logs) {
  const int port = FreePort();
  std::map<std::string, std::string> env{{"TSPIPE_MODE", mode},
                                         {"TSPIPE_OUT", dir},
                                         {"TSPIPE_CKPT", ckpt},
                                         {"TSPIPE_STAGES", std::to_string(stages)},
                                         {"TSPIPE_STEPS", "5"},
                                         {"TSPIPE_SAVE_AT", "2"}};
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    pids.push_back(Spawn(r, world, port, env, dir + "/" + mode + "log" + std::to_string(r)));
  }
  std::vector<int> status;
  for (int r = 0; r < world; ++r) {
    status.push_back(WaitExit(pids[r]));
    if (logs) logs->push_back(Slurp(dir + "/" + mode + "log" + std::to_string(r)));
  }
  return status;
}

// "step loss" lines of steps >= `from`.
std::string LossesFrom(const std::string& text, int from) {
  std::istringstream in(text);
  std::ostringstream out;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("resumed", 0) == 0) continue;
    if (std::stoi(line.substr(0, line.find(' '))) >= from) out << line << "\n";
  }
  return out.str();
}

TEST(C10dCheckpointTest, EveryProcessWritesItsOwnAndResumedWorldMatchesOneThatNeverStopped) {
  const std::string dir = TempDir(), ckpt = dir + "/ckpt";
  std::vector<std::string> logs;
  ASSERT_EQ(RunWorld(2, 2, "straight", dir, ckpt, &logs), (std::vector<int>{0, 0}))
      << logs[0] << logs[1];
  logs.clear();
  ASSERT_EQ(RunWorld(2, 2, "save", dir, ckpt, &logs), (std::vector<int>{0, 0}))
      << logs[0] << logs[1];
  // One file per process, and the manifest.
  const std::string step = StepDirectory(ckpt, 2);
  for (const char* f : {"process-0.ckpt", "process-1.ckpt", "MANIFEST"}) {
    EXPECT_TRUE(fs::exists(step + "/" + f)) << step << "/" << f;
  }
  const std::vector<CheckpointManifest> found = CompleteCheckpoints(ckpt, true, nullptr);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].processes, 2);
  logs.clear();
  ASSERT_EQ(RunWorld(2, 2, "resume", dir, ckpt, &logs), (std::vector<int>{0, 0}))
      << logs[0] << logs[1];
  for (int r = 0; r < 2; ++r) {
    const std::string resumed = Slurp(dir + "/resume" + std::to_string(r) + ".txt");
    EXPECT_EQ(resumed.rfind("resumed 2\n", 0), 0u) << resumed;
    const std::string want = LossesFrom(Slurp(dir + "/straight" + std::to_string(r) + ".txt"), 3);
    EXPECT_EQ(LossesFrom(resumed, 3), want) << "rank " << r;
    EXPECT_EQ(std::count(want.begin(), want.end(), '\n'), 3);
  }
  // A world of another size is refused, saying so.
  logs.clear();
  const std::vector<int> status = RunWorld(1, 1, "resume", dir, ckpt, &logs);
  EXPECT_NE(status[0], 0);
  EXPECT_NE(logs[0].find("written by 2 process(es)"), std::string::npos) << logs[0];
  EXPECT_NE(logs[0].find("this run has 1"), std::string::npos) << logs[0];
}

}  // namespace
}  // namespace tspipe

int main(int argc, char** argv) {
  if (std::getenv("TSPIPE_C10D_CHILD") != nullptr) tspipe::ChildMain();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
