#include "backends/memory_meter.h"

#include <c10/core/Allocator.h>

namespace tspipe {

// Installed as the thread's PROFILER_STATE: c10 calls it on every
// allocation and free made while it is installed (and, on GPU, from the
// autograd engine's device threads, which inherit it: hence atomics).
class MemoryMeter::Attachment::Reporter : public c10::MemoryReportingInfoBase {
 public:
  explicit Reporter(std::shared_ptr<MemoryMeter> meter) : meter_(std::move(meter)) {}
  void reportMemoryUsage(void* /*ptr*/, int64_t alloc_size, size_t /*total_allocated*/,
                         size_t /*total_reserved*/, c10::Device device) override {
    net_.fetch_add(alloc_size, std::memory_order_relaxed);
    meter_->Add(device, alloc_size);
  }
  bool memoryProfilingEnabled() const override { return true; }
  int64_t net() const { return net_.load(std::memory_order_relaxed); }

 private:
  std::shared_ptr<MemoryMeter> meter_;
  std::atomic<int64_t> net_{0};
};

namespace {
thread_local MemoryMeter::Attachment::Reporter* g_thread_reporter = nullptr;
}  // namespace

MemoryMeter::Attachment::Attachment(std::shared_ptr<MemoryMeter> meter)
    : reporter_(std::make_shared<Reporter>(std::move(meter))), previous_(g_thread_reporter) {
  guard_ = std::make_unique<c10::DebugInfoGuard>(c10::DebugInfoKind::PROFILER_STATE, reporter_);
  g_thread_reporter = reporter_.get();
}

MemoryMeter::Attachment::~Attachment() {
  guard_.reset();
  g_thread_reporter = previous_;
}

std::unique_ptr<MemoryMeter::Attachment> MemoryMeter::Attach(
    const std::shared_ptr<MemoryMeter>& meter) {
  if (!meter) return nullptr;
  return std::make_unique<Attachment>(meter);
}

int64_t MemoryMeter::ThreadBytes() {
  return g_thread_reporter != nullptr ? g_thread_reporter->net() : 0;
}

void MemoryMeter::Begin() {
  for (int i = 0; i < kSlots; ++i) {
    current_[i] = 0;
    peak_[i] = 0;
    used_[i] = false;
  }
}

void MemoryMeter::Add(const c10::Device& device, int64_t bytes) {
  int slot = -1;
  if (device.is_cpu()) {
    slot = 0;
  } else if (device.is_cuda() && device.index() >= 0 && device.index() + 1 < kSlots) {
    slot = device.index() + 1;
  }
  if (slot < 0) return;
  used_[slot].store(true, std::memory_order_relaxed);
  const int64_t now = current_[slot].fetch_add(bytes, std::memory_order_relaxed) + bytes;
  int64_t peak = peak_[slot].load(std::memory_order_relaxed);
  while (now > peak && !peak_[slot].compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

std::map<std::string, int64_t> MemoryMeter::Peaks() const {
  std::map<std::string, int64_t> out;
  for (int i = 0; i < kSlots; ++i) {
    if (!used_[i].load()) continue;
    out[i == 0 ? std::string("cpu") : "cuda:" + std::to_string(i - 1)] = peak_[i].load();
  }
  return out;
}

}  // namespace tspipe
