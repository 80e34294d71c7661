#include "engine/progress.h"

#include <iomanip>
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
    // Large models on CPUs train below one sample per second: three
    // significant digits there, whole numbers above 100.
    const double rate = static_cast<double>(steps_done * samples_per_step_) / secs;
    if (rate >= 100) {
      out << ", " << static_cast<int64_t>(rate) << " samples/s";
    } else {
      std::ostringstream r;
      r << std::setprecision(3) << rate;
      out << ", " << r.str() << " samples/s";
    }
    if (total_steps_ > 0) {
      out << ", ETA " << static_cast<int64_t>((total_steps_ - steps_done) * secs / steps_done)
          << " s";
    }
  }
  return out.str();
}

}  // namespace tspipe
