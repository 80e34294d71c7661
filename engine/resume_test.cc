// Resumable training: N steps, a checkpoint, a fresh trainer resumed from it
// and M more steps equal N + M steps run without a stop, bit for bit, under
// every scheduler, for KD (frozen teacher; TSPipe's teacher forwards run one
// batch ahead, so the checkpoint carries them), BYOL (momentum target and
// its version), blockwise distillation under Pipe-BD and codistillation
// (two models, each the other's stale teacher), in float64.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "engine/checkpoint.h"
#include "engine/trainer.h"

namespace tspipe {
namespace {

namespace fs = std::filesystem;

std::string FreshDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const fs::path dir = fs::path(tmp ? tmp : "/tmp") / ("resume_" + name + std::to_string(::getpid()));
  fs::remove_all(dir);
  return dir.string();
}

struct Case {
  std::string algorithm;
  std::string scheduler;
  int stages;
  std::string policy;
  // Tiny models; the optimizer, to cover both kinds of optimizer state.
  std::string options;
  std::string optimizer;
  // Train on an image folder (the C++ loader) instead of synthetic data.
  bool image_folder = false;
};

// 2 classes x 12 copies of the golden JPEG and PNG: 3 batches of 8 per
// epoch, so the checkpoint after step 2 (plus the batch drawn ahead) falls
// mid-epoch.
std::string ImageFolderRoot() {
  static const std::string root = [] {
    const std::string dir = FreshDir("images");
    for (int i = 0; i < 12; ++i) {
      fs::create_directories(fs::path(dir) / "cat");
      fs::create_directories(fs::path(dir) / "dog");
      fs::copy_file("tests/golden/augment_tiny.jpg",
                    fs::path(dir) / "cat" / (std::to_string(i) + ".jpg"));
      fs::copy_file("tests/golden/augment_tiny.png",
                    fs::path(dir) / "dog" / (std::to_string(i) + ".png"));
    }
    return dir;
  }();
  return root;
}

constexpr char kKd[] = "widths=4,8,blocks=1,2,teacher_widths=4,8,teacher_blocks=1,2";
constexpr char kByol[] = "widths=4,8,blocks=1,2,hidden=16,projection=8";
constexpr char kBlockwise[] = "teacher_widths=4,8,teacher_blocks=1,2";
// Exchanges after steps 2 and 4: the checkpoint at step 2 holds the peers'
// copies just exchanged.
constexpr char kCodistill[] = "widths=4,8,blocks=1,1,models=2,exchange_every=2";

Case Kd(const std::string& scheduler, int stages) {
  return {"kd", scheduler, stages, "", kKd, "sgd"};
}
Case Byol(const std::string& scheduler, int stages, const std::string& policy) {
  return {"byol", scheduler, stages, policy, kByol, "adamw"};
}

void PrintTo(const Case& c, std::ostream* out) {
  *out << c.algorithm << " under " << c.scheduler << " on " << c.stages << " stages"
       << (c.image_folder ? " from an image folder" : "");
}

TrainConfig Config(const Case& c) {
  TrainConfig t;
  t.algorithm = c.algorithm;
  t.algorithm_options = c.options;
  t.scheduler = c.scheduler;
  t.stages = c.stages;
  t.microbatches = 2;
  t.batch_size = 8;
  t.update_policy = c.policy;
  t.dtype = "float64";
  t.num_batches = 3;  // Cycled: the data position matters.
  t.total_steps = 5;  // BYOL's momentum ramps over the run.
  t.optimizer = c.optimizer;
  t.learning_rate = 0.01;
  t.warmup_steps = 2;
  t.seed = 3;
  if (c.image_folder) {
    t.data = "imagefolder";
    t.data_dir = ImageFolderRoot();
    t.data_threads = 2;
  }
  return t;
}

class ResumeTest : public ::testing::TestWithParam<Case> {};

TEST_P(ResumeTest, StopAndResumeEqualsOneRun) {
  const Case c = GetParam();
  const TrainConfig config = Config(c);
  Trainer straight(config);
  straight.Train(2);
  straight.Train(3);

  const std::string dir = FreshDir(c.algorithm + c.scheduler + std::to_string(c.stages));
  {
    Trainer first(config);
    first.Train(2);
    first.SaveCheckpoint(dir, 2);
    first.Train(1);  // Work after the checkpoint is lost, as in a crash.
  }
  Trainer resumed(config);
  EXPECT_EQ(resumed.Resume(dir), 2);
  EXPECT_EQ(resumed.steps_done(), 2);
  resumed.Train(3);
  EXPECT_EQ(resumed.MaxParameterDifference(straight), 0.0)
      << c.algorithm << " under " << c.scheduler << " differs after resuming";
  // And the resumed run is not trivially equal: one step fewer is not.
  Trainer short_run(config);
  short_run.Train(4);
  EXPECT_GT(short_run.MaxParameterDifference(straight), 0.0);
}

INSTANTIATE_TEST_SUITE_P(
    Schedulers, ResumeTest,
    ::testing::Values(Kd("sequential", 1), Kd("gpipe", 2), Kd("tspipe", 2), Kd("tspipe", 4),
                      Kd("tspipe_1f1b", 2), Kd("dp", 2), Byol("sequential", 1, ""),
                      Byol("gpipe", 2, "sync"), Byol("tspipe", 2, "tspipe_delayed"),
                      Byol("tspipe", 4, "tspipe_delayed"),
                      Byol("tspipe_1f1b", 2, "tspipe_delayed"), Byol("dp", 2, ""),
                      Kd("tspipe_zb", 2), Byol("tspipe_zb", 2, "tspipe_delayed"),
                      Case{"blockwise", "pipebd", 2, "", kBlockwise, "adamw"},
                      Case{"blockwise", "sequential", 1, "", kBlockwise, "sgd"},
                      Case{"codistill", "sequential", 1, "", kCodistill, "sgd"},
                      Case{"codistill", "gpipe", 2, "", kCodistill, "adamw"},
                      Case{"codistill", "tspipe", 2, "", kCodistill, "sgd"},
                      // Mid-epoch in an image folder, augmentations included.
                      Case{"kd", "tspipe", 2, "", kKd, "sgd", true},
                      Case{"byol", "tspipe", 2, "tspipe_delayed", kByol, "adamw", true}),
    [](const ::testing::TestParamInfo<Case>& info) {
      return info.param.algorithm + "_" + info.param.scheduler + "_" +
             std::to_string(info.param.stages) + (info.param.image_folder ? "_imagefolder" : "");
    });

TEST(ResumeErrorsTest, NoCheckpointAnotherConfigurationAndDamage) {
  Case c = Kd("tspipe", 2);
  const TrainConfig config = Config(c);
  const std::string dir = FreshDir("errors");
  Trainer fresh(config);
  EXPECT_EQ(fresh.Resume(dir), -1);  // Nothing there: a fresh start.
  {
    Trainer t(config);
    t.Train(1);
    t.SaveCheckpoint(dir, 3);
    t.Train(1);
    t.SaveCheckpoint(dir, 3);
  }
  TrainConfig other = config;
  other.batch_size = 16;
  other.learning_rate = 0.02;
  try {
    Trainer t(other);
    t.Resume(dir);
    FAIL() << "a checkpoint of another configuration was taken";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("batch_size is 8 in the checkpoint, 16 in this run"), std::string::npos)
        << what;
    EXPECT_NE(what.find("learning_rate"), std::string::npos) << what;
  }
  // The newest checkpoint damaged: the one before it is taken.
  const std::string newest = StepDirectory(dir, 2) + "/" + ProcessFileName(0);
  fs::resize_file(newest, fs::file_size(newest) - 1);
  Trainer t(config);
  std::vector<std::string> skipped;
  EXPECT_EQ(t.Resume(dir, &skipped), 1);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_NE(skipped[0].find("step-00000002"), std::string::npos) << skipped[0];
}

}  // namespace
}  // namespace tspipe
