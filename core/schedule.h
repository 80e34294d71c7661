// A schedule: per-rank ordered lists of Actions for one training iteration
// (one optimizer step), plus the facts needed to check and run it.
#ifndef TSPIPE_CORE_SCHEDULE_H_
#define TSPIPE_CORE_SCHEDULE_H_

#include <string>
#include <utility>
#include <vector>

#include "core/action.h"

namespace tspipe {

// The teacher of a teacher-student algorithm: the one statement of whether
// there is one and how it changes (Workload::teacher).
enum class TeacherKind {
  kNone,      // Supervised training: no teacher.
  kFrozen,    // A pre-trained teacher that never changes (KD, DistilBERT,
              // blockwise distillation): every version is version 0.
  kMomentum,  // target_k = m * target_{k-1} + (1 - m) * online_k (BYOL, MoCo).
  kPeers,     // Stale copies of the other models, replaced by theirs at the
              // exchange steps (codistillation): teacher_k = peers_k when an
              // exchange follows step k, else teacher_{k-1}.
};

// Whether the teacher changes during training, so that which version a
// teacher forward sees matters (momentum targets, peer copies), and every
// stage needs a TeacherUpdate action.
inline bool IsVersioned(TeacherKind kind) {
  return kind == TeacherKind::kMomentum || kind == TeacherKind::kPeers;
}

// What the training algorithm needs from a schedule, independent of how it is
// scheduled. Filled from the algorithm (and, for tied parameters and
// clipping, from the cut); schedulers, lowering passes and the validator
// read it. Every flag defaults to the least demanding choice.
struct Workload {
  // The teacher, if any: it runs forward passes only (KD, BYOL, MoCo);
  // a versioned one is updated after each step (TeacherUpdate actions).
  TeacherKind teacher = TeacherKind::kNone;
  bool has_teacher() const { return teacher != TeacherKind::kNone; }
  bool teacher_updates() const { return IsVersioned(teacher); }
  // Every stage has its own loss and no gradient crosses stage boundaries
  // (Pipe-BD blockwise distillation). Otherwise only the last stage has a
  // loss and gradients flow backwards through all stages.
  bool local_losses = false;
  // Blockwise distillation (DNA, Pipe-BD): student stage s reads the
  // teacher's input of stage s (the teacher's output of stage s-1, or the
  // batch) instead of the student's own stage s-1, and is trained to match
  // the teacher's output of stage s. Needs a teacher and local_losses; no
  // student activation or gradient crosses a stage boundary, only the
  // teacher's activations do.
  bool blockwise = false;
  // The loss needs the whole mini-batch at once (MoCo negatives, batch
  // statistics): schedulers that split the mini-batch's loss (dp, per
  // micro-batch losses) refuse it. False: per-sample (or per-unit) terms,
  // exact under any split.
  bool full_batch_loss = false;
  // The replicas of a stage are separate models (codistillation; see
  // ReplicateModels): each trains its own parameters on its own share of
  // the micro-batches, with no gradient all-reduce, its loss a mean over its
  // own share; its teacher holds stale copies of the other models, which the
  // stage's TeacherUpdate refreshes by an exchange among the replicas. Needs
  // a versioned teacher.
  bool independent_replicas = false;
  // Stage pairs (a <= b) holding copies of one parameter (BERT's decoder
  // and word embeddings): AddGradientSync inserts the TG actions that sum
  // their gradients before the optimizer steps.
  std::vector<std::pair<int, int>> tied_stages;
  // Gradients are clipped by their global norm over a model's stages: a GN
  // action on every rank before its optimizer steps.
  bool clip_gradients = false;
};

struct Schedule {
  std::string scheduler;  // Name of the scheduler that built it.
  int num_stages = 0;
  int num_microbatches = 0;
  Workload workload;
  // placement[s] = ranks holding a replica of stage s (one rank for a plain
  // pipeline; several for data parallel or Pipe-BD hybrid groups). Replica i
  // runs the i-th contiguous share of the micro-batches (ReplicaShare), and
  // a micro-batch's data goes to whichever replica of the neighbouring stage
  // runs it, so neighbouring groups may differ in size.
  std::vector<std::vector<int>> placement;
  // The memory the scheduler promises, when not empty: stage s holds at
  // most stash_bound[s] micro-batches awaiting their backward
  // (PeakStashes' student count). The validator checks it.
  std::vector<int> stash_bound;
  // ranks[r] = actions of rank r, in execution order.
  std::vector<std::vector<Action>> ranks;

  int num_ranks() const { return static_cast<int>(ranks.size()); }
  // Stages with a replica on `rank`, ascending.
  std::vector<int> StagesOnRank(int rank) const;
  // Position of `rank` in placement[stage], or -1.
  int ReplicaIndex(int stage, int rank) const;
  // Micro-batches handled by `rank` for `stage` (all of them for one replica;
  // a contiguous share for replica groups).
  std::vector<int> MicrobatchesOf(int stage, int rank) const;
};

// Splits n micro-batches over `replicas` replicas contiguously; replica i gets
// [begin, end). Earlier replicas get one more when n % replicas != 0.
void ReplicaShare(int n, int replicas, int replica, int* begin, int* end);

// Lowering passes (communication, gradient reduction and sync): core/lowering.h.

// The teacher forwards a schedule runs one mini-batch ahead (batch_offset
// +1, with their ST/RT), re-labelled offset 0 and kept in order: what must run
// once before the first iteration so that the first loss has its teacher
// outputs. Empty (no actions) for schedules without look-ahead.
Schedule TeacherPrologue(const Schedule& schedule);

// `n` copies of a one-model schedule (one rank per stage) on disjoint
// ranks, one per model: copy g runs rank r's actions on rank g*R + r (R =
// the schedule's ranks) over micro-batches [g*M, (g+1)*M) (M = its
// micro-batches), so stage s is placed on {r_s, r_s + R, ...} and model g
// trains on the g-th share of every mini-batch. Sets
// workload.independent_replicas. Throws std::invalid_argument when n < 2,
// the schedule already replicates a stage (dp, Pipe-BD groups) or its
// workload has no versioned teacher (the exchanges). The copy's teacher is
// TeacherKind::kPeers.
Schedule ReplicateModels(const Schedule& one_model, int n);

// The ranks of each stage, "0;0;1|2" (stage 2 replicated on ranks 1 and 2):
// ToCsv's placement line.
std::string FormatPlacement(const Schedule& schedule);
// CSV form: '#'-prefixed header lines (scheduler, stages, microbatches,
// workload, placement), then one line per rank: "rank,action,action,...".
std::string ToCsv(const Schedule& schedule);
// Parses ToCsv's output. Returns false with *error naming the line on failure.
bool FromCsv(const std::string& csv, Schedule* schedule, std::string* error);

}  // namespace tspipe

#endif  // TSPIPE_CORE_SCHEDULE_H_
