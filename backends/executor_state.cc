// Checkpoints of the executor's per-stage state (backends/stage_slot.h).
//
// Keys of a torch archive may not contain dots, so tensors are stored by
// position ("p3", "b0"), with the names kept beside them for messages;
// teacher data is flattened into one int64 index tensor plus its tensors.
#include <algorithm>
#include <sstream>
#include <stdexcept>

#include "backends/executor_impl.h"
#include "backends/stage_slot.h"

namespace tspipe {
namespace {

using torch::serialize::InputArchive;
using torch::serialize::OutputArchive;

torch::Tensor ReadTensor(InputArchive& archive, const std::string& key, const std::string& what) {
  torch::Tensor t;
  if (!archive.try_read(key, t, /*is_buffer=*/true)) {
    throw std::invalid_argument(what + ": the checkpoint has no entry '" + key + "'");
  }
  return t;
}

// A module's parameters then buffers, in registration order.
std::vector<std::pair<std::string, torch::Tensor>> StateOf(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : module.named_parameters()) out.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

void SaveModule(const torch::nn::Module& module, OutputArchive& archive) {
  const auto state = StateOf(module);
  archive.write("count", torch::tensor(static_cast<int64_t>(state.size())), true);
  for (size_t i = 0; i < state.size(); ++i) {
    archive.write("t" + std::to_string(i), state[i].second.detach(), true);
  }
}

void LoadModule(InputArchive& archive, const std::string& what, torch::nn::Module& module) {
  const auto state = StateOf(module);
  const int64_t count = ReadTensor(archive, "count", what).item<int64_t>();
  if (count != static_cast<int64_t>(state.size())) {
    throw std::invalid_argument(what + ": the checkpoint holds " + std::to_string(count) +
                                " tensors, the model " + std::to_string(state.size()));
  }
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < state.size(); ++i) {
    const torch::Tensor saved = ReadTensor(archive, "t" + std::to_string(i), what);
    const torch::Tensor& into = state[i].second;
    if (!saved.sizes().equals(into.sizes()) || saved.scalar_type() != into.scalar_type()) {
      throw std::invalid_argument(what + ": " + state[i].first + " is " +
                                  c10::str(saved.scalar_type(), saved.sizes()) +
                                  " in the checkpoint but " +
                                  c10::str(into.scalar_type(), into.sizes()) + " in the model");
    }
    // In place: optimizers, tied pairs and the caller's model keep pointing
    // at the same tensors.
    into.copy_(saved);
  }
}

// Teacher outputs by batch and micro-batch: index = for each batch
// [batch, micro-batches, then per micro-batch its tensor count and one
// defined flag per tensor]; defined tensors follow as "x0", "x1"...
void SaveActivations(const std::map<int64_t, std::vector<Activation>>& by_batch,
                     int64_t from_batch, OutputArchive& archive) {
  std::vector<int64_t> index;
  int64_t next = 0;
  for (auto it = by_batch.lower_bound(from_batch); it != by_batch.end(); ++it) {
    index.push_back(it->first);
    index.push_back(static_cast<int64_t>(it->second.size()));
    for (const Activation& a : it->second) {
      index.push_back(static_cast<int64_t>(a.size()));
      for (const torch::Tensor& t : a) {
        index.push_back(t.defined() ? 1 : 0);
        if (t.defined()) archive.write("x" + std::to_string(next++), t.detach(), true);
      }
    }
  }
  archive.write("index", torch::tensor(index, torch::kInt64), true);
}

std::map<int64_t, std::vector<Activation>> LoadActivations(InputArchive& archive,
                                                           const torch::Device& device,
                                                           const std::string& what) {
  const torch::Tensor index_tensor = ReadTensor(archive, "index", what).contiguous();
  const int64_t* index = index_tensor.data_ptr<int64_t>();
  const int64_t n = index_tensor.numel();
  int64_t pos = 0, next = 0;
  auto take = [&] {
    if (pos >= n) throw std::invalid_argument(what + ": the teacher outputs' index is truncated");
    return index[pos++];
  };
  std::map<int64_t, std::vector<Activation>> out;
  while (pos < n) {
    const int64_t batch = take();
    std::vector<Activation>& micro = out[batch];
    micro.resize(take());
    for (Activation& a : micro) {
      a.resize(take());
      for (torch::Tensor& t : a) {
        if (take() != 0) t = ReadTensor(archive, "x" + std::to_string(next++), what).to(device);
      }
    }
  }
  return out;
}

}  // namespace

std::string SaveSlot(const StageSlot& slot, int64_t from_batch, bool with_teacher) {
  OutputArchive archive;
  OutputArchive student;
  SaveModule(*slot.student, student);
  archive.write("student", student);
  if (with_teacher && slot.teacher) {
    OutputArchive teacher;
    SaveModule(*slot.teacher, teacher);
    archive.write("teacher", teacher);
  }
  if (slot.optimizer) {
    OutputArchive optimizer;
    slot.optimizer->save(optimizer);
    archive.write("optimizer", optimizer);
  }
  OutputArchive outputs;
  SaveActivations(slot.teacher_outputs, from_batch, outputs);
  archive.write("teacher_outputs", outputs);
  std::vector<int64_t> readers;
  for (auto it = slot.teacher_readers.lower_bound(from_batch); it != slot.teacher_readers.end();
       ++it) {
    readers.push_back(it->first);
    readers.push_back(static_cast<int64_t>(it->second.size()));
    readers.insert(readers.end(), it->second.begin(), it->second.end());
  }
  archive.write("teacher_readers", torch::tensor(readers, torch::kInt64), true);
  std::ostringstream bytes;
  archive.save_to(bytes);
  return bytes.str();
}

void LoadSlot(const std::string& bytes, const torch::Device& device, bool with_teacher,
              const std::string& what, StageSlot* slot) {
  InputArchive archive;
  try {
    std::istringstream in(bytes);
    archive.load_from(in, device);
  } catch (const c10::Error& e) {
    throw std::invalid_argument(what + ": unreadable state: " + e.what_without_backtrace());
  }
  InputArchive student;
  if (!archive.try_read("student", student)) {
    throw std::invalid_argument(what + ": the checkpoint has no student state");
  }
  LoadModule(student, what + " student", *slot->student);
  if (with_teacher && slot->teacher) {
    InputArchive teacher;
    if (!archive.try_read("teacher", teacher)) {
      throw std::invalid_argument(what + ": the checkpoint has no teacher state");
    }
    LoadModule(teacher, what + " teacher", *slot->teacher);
  }
  InputArchive optimizer;
  const bool has_optimizer = archive.try_read("optimizer", optimizer);
  if (has_optimizer != static_cast<bool>(slot->optimizer)) {
    throw std::invalid_argument(what + (has_optimizer ? ": the checkpoint has optimizer state "
                                                        "for a stage that trains nothing"
                                                      : ": the checkpoint has no optimizer state"));
  }
  if (has_optimizer) {
    try {
      slot->optimizer->load(optimizer);
    } catch (const c10::Error& e) {
      throw std::invalid_argument(what + ": the optimizer state does not fit: " +
                                  e.what_without_backtrace());
    }
  }
  InputArchive outputs;
  if (!archive.try_read("teacher_outputs", outputs)) {
    throw std::invalid_argument(what + ": the checkpoint has no teacher outputs entry");
  }
  slot->teacher_outputs = LoadActivations(outputs, device, what);
  const torch::Tensor readers_tensor = ReadTensor(archive, "teacher_readers", what).contiguous();
  const int64_t* r = readers_tensor.data_ptr<int64_t>();
  const int64_t n = readers_tensor.numel();
  slot->teacher_readers.clear();
  for (int64_t pos = 0; pos < n;) {
    if (pos + 2 > n || pos + 2 + r[pos + 1] > n) {
      throw std::invalid_argument(what + ": the teacher readers' index is truncated");
    }
    std::vector<int>& list = slot->teacher_readers[r[pos]];
    for (int64_t i = 0; i < r[pos + 1]; ++i) list.push_back(static_cast<int>(r[pos + 2 + i]));
    pos += 2 + r[pos + 1];
  }
}

Executor::SavedState Executor::Impl::SaveState() const {
  Executor::SavedState state;
  state.steps_done = steps_done_;
  state.lookahead_ready = lookahead_ready_;
  for (int r : local_ranks_) {
    for (const auto& [s, slot] : slots_[r]) {
      state.stages[{r, s}] = SaveSlot(slot, steps_done_, TeacherChanges());
    }
  }
  return state;
}

void Executor::Impl::LoadState(const Executor::SavedState& state) {
  auto describe = [](const std::vector<std::pair<int, int>>& where) {
    std::string out;
    for (const auto& [r, s] : where) {
      out += (out.empty() ? "" : ", ") + std::string("rank ") + std::to_string(r) + " stage " +
             std::to_string(s);
    }
    return out.empty() ? std::string("none") : out;
  };
  std::vector<std::pair<int, int>> mine, saved;
  for (int r : local_ranks_) {
    for (const auto& entry : slots_[r]) mine.emplace_back(r, entry.first);
  }
  for (const auto& entry : state.stages) saved.push_back(entry.first);
  std::sort(mine.begin(), mine.end());
  if (mine != saved) {
    throw std::invalid_argument("the saved state holds " + describe(saved) +
                                "; this executor runs " + describe(mine));
  }
  for (int r : local_ranks_) {
    for (auto& [s, slot] : slots_[r]) {
      LoadSlot(state.stages.at({r, s}), devices_[r], TeacherChanges(),
               "rank " + std::to_string(r) + " stage " + std::to_string(s), &slot);
    }
  }
  steps_done_ = state.steps_done;
  lookahead_ready_ = state.lookahead_ready;
}

}  // namespace tspipe
