// Checkpoints of a Trainer (engine/checkpoint.h has the directory layout):
// every process writes the state of its own ranks, process 0 the manifest
// last; resuming reads the newest checkpoint every process has whole.
#include <ATen/CPUGeneratorImpl.h>

#include <cstring>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include "engine/checkpoint.h"
#include "engine/fingerprint.h"
#include "engine/trainer_impl.h"
#include "engine/world.h"

namespace tspipe {
namespace {

// Bytes in a uint8 tensor and back: process files hold each stage's
// archive (loaded later onto that stage's own device) as one entry.
torch::Tensor BytesTensor(const std::string& bytes) {
  torch::Tensor t = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  if (!bytes.empty()) std::memcpy(t.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  return t;
}

std::string TensorBytes(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kCPU).contiguous();
  return std::string(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), c.numel());
}

}  // namespace

std::string Trainer::Impl::CheckpointFingerprint() const {
  return Fingerprint(config_, recipe_options_) + "ranks=" + std::to_string(devices_) +
         "\nplacement=" + placement_ + "\n";
}

int Trainer::Impl::CudaDevices() const {
  return config_.device.rfind("cuda", 0) == 0 ? static_cast<int>(torch::cuda::device_count()) : 0;
}

std::string Trainer::Impl::ProcessState() {
  torch::serialize::OutputArchive archive;
  auto put = [&](const std::string& key, int64_t v) {
    archive.write(key, torch::tensor(v, torch::kInt64), /*is_buffer=*/true);
  };
  put("steps", steps_);
  put("tokens", tokens_);
  put("drawn", data_->drawn());
  put("ahead", data_->held());
  const Executor::SavedState state = executor_->SaveState();
  put("executor_steps", state.steps_done);
  put("lookahead", state.lookahead_ready ? 1 : 0);
  put("slots", static_cast<int64_t>(state.stages.size()));
  int i = 0;
  for (const auto& [where, bytes] : state.stages) {
    const std::string key = "slot" + std::to_string(i++);
    put(key + "_rank", where.first);
    put(key + "_stage", where.second);
    archive.write(key, BytesTensor(bytes), true);
  }
  // Random generators last: nothing above draws from them.
  {
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(cpu.mutex());
    archive.write("cpu_rng", cpu.get_state(), true);
  }
  const int cuda = CudaDevices();
  put("cuda_devices", cuda);
  for (int d = 0; d < cuda; ++d) {
    at::Generator g = at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, d));
    std::lock_guard<std::mutex> lock(g.mutex());
    archive.write("cuda_rng" + std::to_string(d), g.get_state(), true);
  }
  std::ostringstream bytes;
  archive.save_to(bytes);
  return bytes.str();
}

void Trainer::Impl::LoadProcessState(const std::string& payload, const std::string& what) {
  torch::serialize::InputArchive archive;
  try {
    std::istringstream in(payload);
    archive.load_from(in, torch::Device(torch::kCPU));
  } catch (const c10::Error& e) {
    throw std::runtime_error(what + " is unreadable: " + e.what_without_backtrace());
  }
  auto get = [&](const std::string& key) {
    torch::Tensor t;
    if (!archive.try_read(key, t, true)) throw std::runtime_error(what + " has no '" + key + "'");
    return t;
  };
  auto get_int = [&](const std::string& key) { return get(key).item<int64_t>(); };
  Executor::SavedState state;
  state.steps_done = get_int("executor_steps");
  state.lookahead_ready = get_int("lookahead") != 0;
  const int64_t slots = get_int("slots");
  for (int64_t i = 0; i < slots; ++i) {
    const std::string key = "slot" + std::to_string(i);
    state.stages[{static_cast<int>(get_int(key + "_rank")), static_cast<int>(get_int(key + "_stage"))}] =
        TensorBytes(get(key));
  }
  executor_->LoadState(state);
  steps_ = get_int("steps");
  tokens_ = get_int("tokens");
  // The data stream: the same source, fast-forwarded by drawing (and
  // dropping) what the saved run had drawn, so its own generators end in
  // the same state; the last `ahead` draws are the batches it held.
  data_->FastForward(get_int("drawn"), get_int("ahead"), what);
  {
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(cpu.mutex());
    cpu.set_state(get("cpu_rng"));
  }
  const int64_t cuda = std::min<int64_t>(get_int("cuda_devices"), CudaDevices());
  for (int d = 0; d < cuda; ++d) {
    at::Generator g = at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, d));
    std::lock_guard<std::mutex> lock(g.mutex());
    g.set_state(get("cuda_rng" + std::to_string(d)));
  }
}

void Trainer::Impl::SaveCheckpoint(const std::string& dir, int keep) {
  if (keep < 1) throw std::invalid_argument("keep at least 1 checkpoint, got " + std::to_string(keep));
  const int64_t step = executor_->steps_done();
  WriteProcessFile(dir, step, process(), ProcessState());
  // Every process has its file on disk before the manifest says so.
  SumOverProcesses(1, {CollectiveId::Kind::kCheckpointBarrier, 0, step});
  if (process() == 0) {
    CheckpointManifest m;
    m.step = step;
    m.processes = processes();
    m.ranks = devices_;
    m.fingerprint = CheckpointFingerprint();
    for (int p = 0; p < m.processes; ++p) m.files.push_back(ProcessFileName(p));
    WriteManifest(dir, m);
  }
  PruneCheckpoints(dir, process(), keep);
}

int64_t Trainer::Impl::Resume(const std::string& dir, std::vector<std::string>* skipped) {
  // Process 0 decides which manifests exist (under c10d the others may
  // not see its disk); every process checks its own file of each.
  std::string listing;
  std::vector<std::string> notes;
  if (process() == 0) {
    for (const CheckpointManifest& m :
         CompleteCheckpoints(dir, /*check_files=*/processes() == 1, &notes)) {
      listing += FormatManifest(m) + "\x1e";
    }
  }
  if (world_) listing = world_->ShareFromRankZero("checkpoints", listing);
  std::vector<CheckpointManifest> candidates;
  for (size_t start = 0, end; (end = listing.find('\x1e', start)) != std::string::npos;
       start = end + 1) {
    candidates.push_back(ParseManifest(listing.substr(start, end - start)));
  }
  const std::vector<std::string> ignore{"steps_per_iteration", "initial_checkpoint"};
  int64_t tag = 0;
  for (const CheckpointManifest& m : candidates) {
    const std::string where = StepDirectory(dir, m.step);
    if (m.processes != processes()) {
      throw std::invalid_argument(
          "checkpoint " + where + " was written by " + std::to_string(m.processes) +
          " process(es) (c10d world size " + std::to_string(m.processes) + "); this run has " +
          std::to_string(processes()) + "; resume with the same world size");
    }
    const std::string diff = DescribeDifferences(m.fingerprint, CheckpointFingerprint(), ignore);
    if (!diff.empty()) {
      throw std::invalid_argument("checkpoint " + where +
                                  " was written by another configuration: " + diff);
    }
    std::string payload, problem;
    try {
      payload = ReadProcessFile(dir, m, process());
    } catch (const std::runtime_error& e) {
      problem = e.what();
    }
    // Resume only from a checkpoint every process has whole.
    if (SumOverProcesses(problem.empty() ? 1 : 0,
                         {CollectiveId::Kind::kCheckpointChoice, 0, tag++}) < processes()) {
      notes.push_back(where + ": " + (problem.empty() ? "another process's file is damaged" : problem));
      continue;
    }
    LoadProcessState(payload, where + "/" + m.files[process()]);
    if (skipped) *skipped = notes;
    return m.step;
  }
  if (skipped) *skipped = notes;
  return -1;
}

}  // namespace tspipe
