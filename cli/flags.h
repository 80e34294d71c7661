// Flags that every benchmark main takes (algorithm and its options, cut,
// optimiser, data, device), defined once, and the TrainConfig they describe.
// Mains only: library code never reads flags. A main whose defaults differ
// sets them with SetFlagDefaults before parsing, so --help shows its own.
#ifndef TSPIPE_CLI_FLAGS_H_
#define TSPIPE_CLI_FLAGS_H_

#include <gflags/gflags.h>

#include <string>
#include <utility>
#include <vector>

#include "cli/cli.h"
#include "engine/trainer.h"

DECLARE_string(algorithm_options);
DECLARE_int32(stages);
DECLARE_int32(microbatches);
DECLARE_int32(batch_size);
DECLARE_string(balance);
DECLARE_string(teacher_balance);
DECLARE_string(optimizer);
DECLARE_double(learning_rate);
DECLARE_string(adam_betas);
DECLARE_double(adam_eps);
DECLARE_int32(warmup_steps);
DECLARE_bool(decay_learning_rate);
DECLARE_double(momentum);
DECLARE_double(weight_decay);
DECLARE_double(clip_grad_norm);
DECLARE_string(weight_decay_schedule);
DECLARE_int32(seed);
DECLARE_string(data_dir);
DECLARE_string(eval_dir);
DECLARE_string(data_augment);
DECLARE_int32(data_threads);
DECLARE_bool(skip_bad_images);
DECLARE_int32(threads_per_device);
DECLARE_bool(keep_host_memory);
DECLARE_int32(log_every);
DECLARE_string(device);
DECLARE_string(checkpoint_dir);
DECLARE_int32(checkpoint_every);
DECLARE_int32(keep_checkpoints);
DECLARE_bool(resume);
DECLARE_string(export);

namespace tspipe {

// {flag, default} pairs, e.g. {{"batch_size", "128"}}. Exits naming an
// unknown flag or a bad value.
void SetFlagDefaults(const std::vector<std::pair<std::string, std::string>>& defaults);

// --checkpoint_dir, --checkpoint_every, --keep_checkpoints, --resume,
// checked (the directory writable, nothing created); ConfigFromFlags
// checks them too, so bad values stop a main before any work.
CheckpointSettings CheckpointFlags();

// --export, checked (ends in .safetensors, its directory writable; nothing
// written) and resolved against the user's directory; "" when not set.
// ConfigFromFlags checks it too.
std::string ExportFlag();

// --keep_host_memory (default true), read from argv before gflags parses
// it, since the restart must come before anything allocates: restarts the
// process with malloc keeping freed host memory (RestartKeepingFreedHostMemory).
void RestartForHostMemoryUnlessDisabled(int argc, char** argv);

// The usage text's part about `algorithm`: its options with defaults and
// help, so that --help lists them.
std::string AlgorithmUsage(const std::string& algorithm);

// The shared flags as a TrainConfig for `algorithm`. --balance is copied
// only when it is a list: "auto" and "even" are each main's to act on.
// Throws std::invalid_argument with a one-line message naming the flag and
// the value when one is bad (a balance that is not a list of integers, an
// unknown algorithm option...).
TrainConfig ConfigFromFlags(const std::string& algorithm);

}  // namespace tspipe

#endif  // TSPIPE_CLI_FLAGS_H_
