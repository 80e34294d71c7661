#include "engine/progress.h"

#include <sstream>
#include <utility>

namespace tspipe {

Progress::Progress(std::string label, int64_t total_steps, int64_t samples_per_step)
    : label_(std::move(label)),
      total_steps_(total_steps),
      samples_per_step_(samples_per_step),
      start_(std::chrono::steady_clock::now()) {}

double Progress::ElapsedSeconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string Progress::Line(int64_t steps_done, double loss) const {
  const double secs = ElapsedSeconds();
  std::ostringstream out;
  out << label_ << ": step " << steps_done;
  if (total_steps_ > 0) out << "/" << total_steps_;
  out << ", loss " << loss;
  if (steps_done > 0 && secs > 0) {
    out << ", " << static_cast<int64_t>(steps_done * samples_per_step_ / secs) << " samples/s";
    if (total_steps_ > 0) {
      out << ", ETA " << static_cast<int64_t>((total_steps_ - steps_done) * secs / steps_done)
          << " s";
    }
  }
  return out.str();
}

}  // namespace tspipe
