#include "cli/flags.h"

#include <glog/logging.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>

#include "cli/host_malloc.h"
#include "cli/cli.h"
#include "core/options.h"
#include "engine/catalog.h"


DEFINE_string(algorithm_options, "",
              "The algorithm's options as name=value pairs separated by commas, e.g. "
              "'temperature=2,lambda=0.5' or 'widths=8,16,blocks=1,1' (list values keep their "
              "commas). The options of this binary's algorithm are listed at the top of --help.");
DEFINE_int32(stages, 2, "Pipeline stages (one device each for pipelines).");
DEFINE_int32(microbatches, 4, "Micro-batches per mini-batch.");
DEFINE_int32(batch_size, 64, "Samples per mini-batch.");
DEFINE_string(balance, "auto",
              "Blocks per stage: 'auto' (time every block, then cut student and teacher "
              "jointly so the slowest stage is fastest), 'even', or a list like '3,2'.");
DEFINE_string(teacher_balance, "",
              "Teacher blocks per stage, e.g. '4,4'; empty = chosen with --balance "
              "(auto: jointly; otherwise even).");
DEFINE_string(optimizer, "sgd", "sgd (with --momentum) or adamw (--adam_betas, --adam_eps).");
DEFINE_double(learning_rate, 0.05, "Learning rate (peak, with --warmup_steps).");
DEFINE_double(momentum, 0.9, "SGD momentum.");
DEFINE_string(adam_betas, "0.9,0.999", "AdamW betas: beta1,beta2.");
DEFINE_double(adam_eps, 1e-8, "AdamW epsilon.");
DEFINE_int32(warmup_steps, 0, "Linear learning-rate warm-up from 0 over this many steps.");
DEFINE_bool(decay_learning_rate, false,
            "After the warm-up, decay the learning rate linearly to 0 at the run's last step.");
DEFINE_double(weight_decay, 0, "Weight decay (decoupled for adamw).");
DEFINE_double(clip_grad_norm, 0,
              "Clip the student's gradients to this global 2-norm over all stages before each "
              "step, as torch.nn.utils.clip_grad_norm_ (0 = off; DistilBERT uses 5).");
DEFINE_string(weight_decay_schedule, "",
              "Weight decay by phase: step:value pairs, e.g. '300:1e-5,600:0' (from step 300 on "
              "1e-5, from 600 on 0); before the first, --weight_decay.");
DEFINE_int32(seed, 0, "Seed for initialisation, augmentations and data (order).");
DEFINE_string(data_dir, "",
              "Directory of the algorithm's real data set; empty = its default (Fashion-MNIST: "
              "/usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist).");
DEFINE_string(eval_dir, "",
              "--data=imagefolder: the held-out ImageFolder tree evaluation reads (resized to "
              "image_size/0.875, centre crop).");
DEFINE_string(data_augment, "standard",
              "--data=imagefolder: standard (RandomResizedCrop and flip in training; resize to "
              "image_size/0.875 and centre crop in evaluation; BYOL/MoCo views always) or none "
              "(every image resized whole: folders of pre-cropped images such as a copy of "
              "Fashion-MNIST).");
DEFINE_int32(data_threads, 2,
             "--data=imagefolder: decoder threads filling the queue of ready batches (they "
             "share the cores with the ranks).");
DEFINE_bool(skip_bad_images, false,
            "--data=imagefolder: skip non-image files and replace images that do not decode by "
            "the next one, each reported once, instead of stopping with the file's name.");
DEFINE_int32(threads_per_device, 1,
             "Intra-op threads per device (rank). On CPU a device is a core.");
// Read by the mains from argv before anything else (see
// RestartKeepingFreedHostMemory); defined here so that gflags accepts it.
DEFINE_bool(keep_host_memory, true,
            "Restart with glibc malloc keeping 256 MiB of freed memory per heap "
            "(GLIBC_TUNABLES=glibc.malloc.top_pad): no page faults per step for CPU tensors. "
            "false, or any glibc.malloc tunable of your own: malloc as configured.");
DEFINE_int32(log_every, 20, "Log step, loss, samples/s and ETA every N steps (0: never).");
DEFINE_string(device, "cpu",
              "cpu, cuda (rank r on cuda:r; under --backend=c10d local rank i on cuda:i, over "
              "NCCL) or cuda:K (every rank on cuda:K). Needs --config=cuda.");

DEFINE_string(checkpoint_dir, "",
              "If set, training checkpoints go here (one subdirectory per training run of this "
              "binary), every --checkpoint_every steps and at the end of each run; the newest "
              "--keep_checkpoints are kept. Written atomically: a killed run never leaves a "
              "checkpoint that loads wrong.");
DEFINE_int32(checkpoint_every, 0,
             "Steps between checkpoints (needs --checkpoint_dir; 0 = only at the end of each run).");
DEFINE_int32(keep_checkpoints, 2, "How many of the newest checkpoints each run keeps.");
DEFINE_bool(resume, false,
            "Continue each training run from its newest complete checkpoint in --checkpoint_dir "
            "(runs without one start fresh; a checkpoint of another configuration is refused). "
            "Give the same flags as the run that wrote them.");

DEFINE_string(export, "",
              "If set, each trained student is written here as safetensors with PyTorch's "
              "parameter names (safetensors.torch.load_file reads it; tools/pytorch_forward.py "
              "rebuilds the network in PyTorch). A main that trains several students writes "
              "<stem>.<run>.safetensors for each. Loadable back as a teacher or initial student.");

namespace tspipe {
namespace {

bool DirectoryExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

void SetFlagDefaults(const std::vector<std::pair<std::string, std::string>>& defaults) {
  for (const auto& [flag, value] : defaults) {
    if (gflags::SetCommandLineOptionWithMode(flag.c_str(), value.c_str(),
                                             gflags::SET_FLAGS_DEFAULT)
            .empty()) {
      LOG(FATAL) << "cannot set the default of --" << flag << " to '" << value << "'";
    }
  }
}

std::string AlgorithmUsage(const std::string& algorithm) {
  return RecipeOptionsHelp(algorithm);
}

CheckpointSettings CheckpointFlags() {
  RequireAtLeast("checkpoint_every", FLAGS_checkpoint_every, 0);
  RequireAtLeast("keep_checkpoints", FLAGS_keep_checkpoints, 1);
  if (FLAGS_checkpoint_dir.empty()) {
    if (FLAGS_checkpoint_every > 0) {
      throw std::invalid_argument("--checkpoint_every=" + std::to_string(FLAGS_checkpoint_every) +
                                  ": needs --checkpoint_dir");
    }
    if (FLAGS_resume) throw std::invalid_argument("--resume: needs --checkpoint_dir");
  }
  CheckpointSettings c;
  c.dir = UserPath(FLAGS_checkpoint_dir);
  if (!c.dir.empty()) {
    // Writable now (the directory, or where it would be made), not after
    // the first hour of training; nothing is created yet.
    struct stat st;
    if (::stat(c.dir.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        throw std::invalid_argument("--checkpoint_dir=" + FLAGS_checkpoint_dir +
                                    ": is a file, not a directory");
      }
      if (::access(c.dir.c_str(), W_OK) != 0) {
        throw std::invalid_argument("--checkpoint_dir=" + FLAGS_checkpoint_dir +
                                    ": directory is not writable");
      }
    } else {
      RequireWritable("checkpoint_dir", c.dir);
    }
  }
  c.every = FLAGS_checkpoint_every;
  c.keep = FLAGS_keep_checkpoints;
  c.resume = FLAGS_resume;
  return c;
}

std::string ExportFlag() {
  if (FLAGS_export.empty()) return "";
  const std::string suffix = ".safetensors";
  const std::string name = FLAGS_export.substr(FLAGS_export.find_last_of('/') + 1);
  if (name.size() <= suffix.size() ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
    throw std::invalid_argument("--export=" + FLAGS_export +
                                ": name a file ending in .safetensors (the format written)");
  }
  const std::string path = UserPath(FLAGS_export);
  RequireWritable("export", path);
  return path;
}

void RestartForHostMemoryUnlessDisabled(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    for (const std::string prefix : {"--", "-"}) {
      if (a == prefix + "nokeep_host_memory" || a == prefix + "keep_host_memory=false" ||
          a == prefix + "keep_host_memory=0" || a == prefix + "keep_host_memory=no") {
        return;
      }
    }
  }
  RestartKeepingFreedHostMemory(argv);
}

TrainConfig ConfigFromFlags(const std::string& algorithm) {
  // Every shared flag is checked here, before any work, so that a bad value
  // gets one line naming it rather than a LibTorch error later.
  CheckpointFlags();
  ExportFlag();
  RequireAtLeast("stages", FLAGS_stages, 1);
  RequireAtLeast("microbatches", FLAGS_microbatches, 1);
  RequireAtLeast("batch_size", FLAGS_batch_size, 1);
  if (FLAGS_optimizer != "sgd" && FLAGS_optimizer != "adamw") {
    throw std::invalid_argument("--optimizer=" + FLAGS_optimizer + ": use sgd or adamw");
  }
  RequireNumber("learning_rate", FLAGS_learning_rate, 0, /*strictly=*/true);
  RequireNumber("momentum", FLAGS_momentum, 0);
  if (FLAGS_momentum >= 1) {
    throw std::invalid_argument("--momentum=" + std::to_string(FLAGS_momentum) +
                                ": must be below 1");
  }
  RequireNumber("adam_eps", FLAGS_adam_eps, 0, /*strictly=*/true);
  RequireNumber("weight_decay", FLAGS_weight_decay, 0);
  RequireNumber("clip_grad_norm", FLAGS_clip_grad_norm, 0);
  RequireAtLeast("warmup_steps", FLAGS_warmup_steps, 0);
  RequireAtLeast("threads_per_device", FLAGS_threads_per_device, 1);
  RequireAtLeast("data_threads", FLAGS_data_threads, 0);
  if (FLAGS_data_augment != "standard" && FLAGS_data_augment != "none") {
    throw std::invalid_argument("--data_augment=" + FLAGS_data_augment + ": use standard or none");
  }
  RequireAtLeast("log_every", FLAGS_log_every, 0);
  if (!FLAGS_data_dir.empty() && !DirectoryExists(FLAGS_data_dir)) {
    throw std::invalid_argument("--data_dir=" + FLAGS_data_dir + ": no such directory");
  }
  if (!FLAGS_eval_dir.empty() && !DirectoryExists(FLAGS_eval_dir)) {
    throw std::invalid_argument("--eval_dir=" + FLAGS_eval_dir + ": no such directory");
  }
  // The spelling only; whether the GPUs are there is the trainer's check.
  if (FLAGS_device != "cpu" && FLAGS_device != "cuda" &&
      !(FLAGS_device.rfind("cuda:", 0) == 0 && FLAGS_device.size() > 5 &&
        FLAGS_device.find_first_not_of("0123456789", 5) == std::string::npos)) {
    throw std::invalid_argument("--device=" + FLAGS_device + ": use cpu, cuda or cuda:K");
  }
  if (FLAGS_balance != "auto" && FLAGS_balance != "even" &&
      FLAGS_balance.find_first_not_of("0123456789,") != std::string::npos) {
    throw std::invalid_argument("--balance=" + FLAGS_balance +
                                ": use auto, even or blocks per stage like 3,2");
  }
  TrainConfig c;
  c.algorithm = algorithm;
  c.algorithm_options = FLAGS_algorithm_options;
  c.stages = FLAGS_stages;
  c.microbatches = FLAGS_microbatches;
  c.batch_size = FLAGS_batch_size;
  if (FLAGS_balance != "auto" && FLAGS_balance != "even") {
    c.balance = ParseIntList(FLAGS_balance, "--balance");
  }
  c.teacher_balance = ParseIntList(FLAGS_teacher_balance, "--teacher_balance");
  c.optimizer = FLAGS_optimizer;
  c.learning_rate = FLAGS_learning_rate;
  c.momentum = FLAGS_momentum;
  {
    const std::vector<std::string> betas = SplitList(FLAGS_adam_betas);
    char* e1 = nullptr;
    char* e2 = nullptr;
    if (betas.size() != 2 || (c.adam_beta1 = std::strtod(betas[0].c_str(), &e1), *e1 != '\0') ||
        (c.adam_beta2 = std::strtod(betas[1].c_str(), &e2), *e2 != '\0') || !(c.adam_beta1 >= 0) ||
        !(c.adam_beta1 < 1) || !(c.adam_beta2 >= 0) || !(c.adam_beta2 < 1)) {
      throw std::invalid_argument("--adam_betas=" + FLAGS_adam_betas +
                                  " is not two numbers in [0, 1), e.g. 0.9,0.98");
    }
  }
  c.adam_eps = FLAGS_adam_eps;
  c.warmup_steps = FLAGS_warmup_steps;
  c.decay_learning_rate = FLAGS_decay_learning_rate;
  c.weight_decay = FLAGS_weight_decay;
  c.clip_grad_norm = FLAGS_clip_grad_norm;
  int last = 0;
  for (const std::string& item : SplitList(FLAGS_weight_decay_schedule)) {
    const size_t colon = item.find(':');
    char* end = nullptr;
    const long step = colon == std::string::npos ? 0 : std::strtol(item.c_str(), &end, 10);
    const bool step_ok = colon != std::string::npos && end == item.c_str() + colon && step > last;
    const std::string value = colon == std::string::npos ? "" : item.substr(colon + 1);
    char* vend = nullptr;
    const double decay = std::strtod(value.c_str(), &vend);
    if (!step_ok || value.empty() || vend != value.c_str() + value.size() || !(decay >= 0)) {
      throw std::invalid_argument("--weight_decay_schedule=" + FLAGS_weight_decay_schedule +
                                  ": '" + item +
                                  "' is not step:value with steps ascending from 1 and a value "
                                  ">= 0");
    }
    c.weight_decay_schedule.emplace_back(static_cast<int>(step), decay);
    last = static_cast<int>(step);
  }
  c.seed = FLAGS_seed;
  c.data_dir = FLAGS_data_dir;
  c.eval_dir = FLAGS_eval_dir;
  c.data_threads = FLAGS_data_threads;
  c.skip_bad_images = FLAGS_skip_bad_images;
  c.plain_resize = FLAGS_data_augment == "none";
  c.device = FLAGS_device;
  // Last: configuring the recipe may read files (a pretrained teacher's
  // config), which should not hide a bad flag above.
  try {
    CheckRecipeOptions(algorithm, FLAGS_algorithm_options);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("--algorithm_options=" + FLAGS_algorithm_options + ": " +
                                e.what());
  }
  return c;
}

}  // namespace tspipe
