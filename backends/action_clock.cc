#include "backends/action_clock.h"

#include "backends/memory_meter.h"

#include <c10/core/impl/VirtualGuardImpl.h>

#include <chrono>

namespace tspipe {
namespace {

std::unique_ptr<c10::Event> RecordOn(const c10::Device& device) {
  // BACKEND_DEFAULT: a CUDA event with timing enabled (PyTorch's default
  // disables it).
  auto event = std::make_unique<c10::Event>(device.type(), c10::EventFlag::BACKEND_DEFAULT);
  c10::impl::VirtualGuardImpl guard(device.type());
  event->record(guard.getStream(device));
  return event;
}

}  // namespace

double SteadyMicros() {
  using std::chrono::duration;
  return duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

ActionClock::ActionClock(int rank, c10::Device device) : rank_(rank), device_(device) {}

void ActionClock::Start() {
  if (!device_.is_cuda()) return;
  // The stream is idle here (the previous run ended with a device
  // synchronise), so the event's time is close to the host's now.
  reference_us_ = SteadyMicros();
  reference_ = RecordOn(device_);
}

void ActionClock::Begin() {
  begin_bytes_ = MemoryMeter::ThreadBytes();
  if (device_.is_cuda()) {
    marks_.push_back(RecordOn(device_));
  } else {
    begin_us_ = SteadyMicros();
  }
}

void ActionClock::End(TraceEvent::Kind kind, int index, const Action& action, int64_t step) {
  TraceEvent e;
  e.kind = kind;
  e.rank = rank_;
  e.index = index;
  e.action = action;
  e.step = step;
  e.held_bytes = MemoryMeter::ThreadBytes() - begin_bytes_;
  if (device_.is_cuda()) {
    marks_.push_back(RecordOn(device_));
  } else {
    e.start_us = begin_us_;
    e.end_us = SteadyMicros();
  }
  events_.push_back(e);
}

std::vector<TraceEvent> ActionClock::Finish() {
  if (device_.is_cuda() && reference_ != nullptr) {
    for (size_t i = 0; i < events_.size() && 2 * i + 1 < marks_.size(); ++i) {
      // elapsedTime is in milliseconds.
      events_[i].start_us = reference_us_ + 1000 * reference_->elapsedTime(*marks_[2 * i]);
      events_[i].end_us = reference_us_ + 1000 * reference_->elapsedTime(*marks_[2 * i + 1]);
    }
  }
  marks_.clear();
  reference_.reset();
  std::vector<TraceEvent> out;
  out.swap(events_);
  return out;
}

}  // namespace tspipe
