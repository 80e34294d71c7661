// Checkpoint directories for resumable training: the layout, the manifest
// that makes a checkpoint complete, and writes that a crash at any moment
// cannot turn into a checkpoint that loads wrong. Torch-free: the trainer
// (engine/trainer.cc) fills the process files.
//
// Layout, for a run of P processes (1 for the single-process backend, one
// per rank under c10d):
//   <dir>/step-00000012/process-0.ckpt ... process-<P-1>.ckpt
//   <dir>/step-00000012/MANIFEST            (written last, by process 0)
// Every file is written to a temporary name, fsynced, renamed into place,
// and its directory fsynced. A step directory is a checkpoint only when its
// MANIFEST parses and every process file it lists is whole: each file
// starts with a line giving its payload's size and FNV-1a hash, so that a
// process can check its own file where no other process sees it (c10d
// ranks on other machines). Anything else, a killed writer's leftovers
// included, is skipped and later pruned.
#ifndef TSPIPE_ENGINE_CHECKPOINT_H_
#define TSPIPE_ENGINE_CHECKPOINT_H_

#include <cstdint>
#include <string>
#include <vector>

namespace tspipe {

struct CheckpointManifest {
  int64_t step = 0;        // Optimizer steps done when it was written.
  int processes = 1;       // Processes that wrote it (the c10d world size, or 1).
  int ranks = 1;           // Ranks of the schedule.
  std::string fingerprint;  // The configuration, "key=value" lines.
  // ProcessFileName of each process, in process order.
  std::vector<std::string> files;
};

uint64_t Fnv1a64(const std::string& bytes);

std::string FormatManifest(const CheckpointManifest& manifest);
// Throws std::runtime_error naming what is wrong (a killed writer cannot
// leave a half manifest, but a hand-edited one can be anything).
CheckpointManifest ParseManifest(const std::string& text);

// "<dir>/step-00000012".
std::string StepDirectory(const std::string& dir, int64_t step);
std::string ProcessFileName(int process);

// Writes process `process`'s file of checkpoint `step` (its payload behind
// the size-and-hash line), creating the directories as needed. Throws
// std::runtime_error naming the path and the system error.
void WriteProcessFile(const std::string& dir, int64_t step, int process, const std::string& payload);
// Writes the MANIFEST, which makes the checkpoint count; then syncs `dir`.
void WriteManifest(const std::string& dir, const CheckpointManifest& manifest);

// The checkpoints in `dir` with a valid MANIFEST, newest first; none when
// `dir` does not exist. With `check_files`, also every listed file must
// exist with the size its first line announces (what one process can see
// of a single-process run; under c10d each process checks its own file
// with ReadProcessFile). Step directories left out get a line in
// `skipped` (may be null) saying why.
std::vector<CheckpointManifest> CompleteCheckpoints(const std::string& dir, bool check_files,
                                                    std::vector<std::string>* skipped);
// The payload of process `process`'s file of `manifest`'s step, checked
// against its size-and-hash line. Throws std::runtime_error naming the file
// and what is wrong with it.
std::string ReadProcessFile(const std::string& dir, const CheckpointManifest& manifest,
                            int process);

// Process 0: keeps the newest `keep` complete checkpoints and removes every
// older step directory, complete or not (its MANIFEST first, so that a kill
// mid-removal leaves nothing that counts). Other processes (c10d, whose
// directories may be on another machine's disk): remove their own files
// from all but their newest `keep` + 1 step directories.
void PruneCheckpoints(const std::string& dir, int process, int keep);

// The settings that differ between two fingerprints ("key=value" lines),
// as "batch_size is 32 in the checkpoint, 64 in this run; ..."; empty when
// they agree. Keys in `ignore` are not compared.
std::string DescribeDifferences(const std::string& saved, const std::string& current,
                                const std::vector<std::string>& ignore);

}  // namespace tspipe

#endif  // TSPIPE_ENGINE_CHECKPOINT_H_
