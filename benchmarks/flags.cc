#include "benchmarks/flags.h"

#include <glog/logging.h>

#include "benchmarks/cli.h"

DEFINE_int32(stages, 2, "Pipeline stages (one device each for pipelines).");
DEFINE_int32(microbatches, 4, "Micro-batches per mini-batch.");
DEFINE_int32(batch_size, 64, "Samples per mini-batch.");
DEFINE_string(balance, "auto",
              "Blocks per stage: 'auto' (time every block, then cut student and teacher "
              "jointly so the slowest stage is fastest), 'even', or a list like '3,2'.");
DEFINE_string(widths, "16,32,64", "Student (or encoder) ResNet channels per group.");
DEFINE_string(blocks, "1,1,1", "Student (or encoder) ResNet basic blocks per group.");
DEFINE_string(teacher_widths, "32,64,128", "Teacher ResNet channels per group (kd).");
DEFINE_string(teacher_blocks, "2,2,2", "Teacher ResNet basic blocks per group (kd).");
DEFINE_int32(byol_hidden, 256, "BYOL/MoCo v3 projector and predictor hidden width.");
DEFINE_int32(byol_projection, 64, "BYOL/MoCo v3 projection size.");
DEFINE_double(learning_rate, 0.05, "SGD learning rate.");
DEFINE_double(momentum, 0.9, "SGD momentum.");
DEFINE_double(weight_decay, 0, "SGD weight decay.");
DEFINE_int32(seed, 0, "Seed for initialisation, augmentations and data (order).");
DEFINE_string(data_dir, "/usr/share/datasets/fashion-mnist",
              "Directory with the Fashion-MNIST IDX files (Debian: dataset-fashion-mnist).");
DEFINE_int32(threads_per_device, 1,
             "Intra-op threads per device (rank). On CPU a device is a core.");
DEFINE_int32(log_every, 20, "Log step, loss, samples/s and ETA every N steps (0: never).");
DEFINE_string(device, "cpu",
              "cpu, cuda (rank r on cuda:r; under --backend=c10d local rank i on cuda:i, over "
              "NCCL) or cuda:K (every rank on cuda:K). Needs --config=cuda.");

namespace tspipe {

void SetFlagDefaults(const std::vector<std::pair<std::string, std::string>>& defaults) {
  for (const auto& [flag, value] : defaults) {
    if (gflags::SetCommandLineOptionWithMode(flag.c_str(), value.c_str(),
                                             gflags::SET_FLAGS_DEFAULT)
            .empty()) {
      LOG(FATAL) << "cannot set the default of --" << flag << " to '" << value << "'";
    }
  }
}

TrainConfig ConfigFromFlags() {
  TrainConfig c;
  c.stages = FLAGS_stages;
  c.microbatches = FLAGS_microbatches;
  c.batch_size = FLAGS_batch_size;
  if (FLAGS_balance != "auto" && FLAGS_balance != "even") {
    c.balance = ParseInts(FLAGS_balance, "balance");
  }
  c.widths = ParseInts(FLAGS_widths, "widths");
  c.blocks_per_group = ParseInts(FLAGS_blocks, "blocks");
  c.teacher_widths = ParseInts(FLAGS_teacher_widths, "teacher_widths");
  c.teacher_blocks_per_group = ParseInts(FLAGS_teacher_blocks, "teacher_blocks");
  c.byol_hidden = FLAGS_byol_hidden;
  c.byol_projection = FLAGS_byol_projection;
  c.learning_rate = FLAGS_learning_rate;
  c.momentum = FLAGS_momentum;
  c.weight_decay = FLAGS_weight_decay;
  c.seed = FLAGS_seed;
  c.data_dir = FLAGS_data_dir;
  c.device = FLAGS_device;
  return c;
}

}  // namespace tspipe
