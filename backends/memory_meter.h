// Memory of executor runs, measured where the bytes are handed out: c10's
// allocators report every allocation and free to the "profiler" installed
// on the allocating thread (c10::MemoryReportingInfoBase, what
// torch.profiler's profile_memory uses). A MemoryMeter is fed by such a
// reporter on every thread of a run (Attach): it sums the bytes allocated
// minus freed since Begin() per device and keeps the highest sum, and each
// thread keeps its own net count (ThreadBytes), from which the executor's
// trace gives every action the bytes it left allocated (a forward: the
// activations its graph saved, and its output).
//
// On CPU the ranks of one process share one heap, so the CPU figure is the
// process's (all its ranks together); on GPU the caching allocator reports
// per device, so each CUDA device has its own. Blocks allocated before
// Begin are not counted (on CPU their frees are not reported either; c10
// logs once that it saw such a free).
#ifndef TSPIPE_BACKENDS_MEMORY_METER_H_
#define TSPIPE_BACKENDS_MEMORY_METER_H_

#include <c10/core/Device.h>
#include <c10/util/ThreadLocalDebugInfo.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace tspipe {

class MemoryMeter {
 public:
  // Zeroes every device's sum and peak.
  void Begin();
  // Highest sum since Begin, by device ("cpu", "cuda:0", ...), for the
  // devices that allocated anything.
  std::map<std::string, int64_t> Peaks() const;

  // While the returned object lives, the calling thread's allocations and
  // frees count for `meter` (nothing when it is null).
  class Attachment;
  static std::unique_ptr<Attachment> Attach(const std::shared_ptr<MemoryMeter>& meter);
  // Bytes the calling thread allocated minus freed (all devices) since it
  // was attached; 0 when it is not.
  static int64_t ThreadBytes();

  // Called by the reporters: `bytes` (negative for a free) on `device`.
  void Add(const c10::Device& device, int64_t bytes);

 private:
  // Slot 0 the CPU, 1 + i CUDA device i.
  static constexpr int kSlots = 17;
  std::array<std::atomic<int64_t>, kSlots> current_{};
  std::array<std::atomic<int64_t>, kSlots> peak_{};
  std::array<std::atomic<bool>, kSlots> used_{};
};

class MemoryMeter::Attachment {
 public:
  class Reporter;
  explicit Attachment(std::shared_ptr<MemoryMeter> meter);
  ~Attachment();
  Attachment(const Attachment&) = delete;
  Attachment& operator=(const Attachment&) = delete;

 private:
  std::shared_ptr<Reporter> reporter_;
  Reporter* previous_;
  std::unique_ptr<c10::DebugInfoGuard> guard_;
};

}  // namespace tspipe

#endif  // TSPIPE_BACKENDS_MEMORY_METER_H_
