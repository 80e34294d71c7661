// Progress lines for long runs, "kd/tspipe: step 40/470, loss 0.8123, 512
// samples/s, ETA 53 s", one format for every main. Torch-free and log-free:
// the caller prints the line (mains use glog).
#ifndef TSPIPE_ENGINE_PROGRESS_H_
#define TSPIPE_ENGINE_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <string>

namespace tspipe {

class Progress {
 public:
  // `total_steps` <= 0: unknown (no ETA). The clock starts here.
  Progress(std::string label, int64_t total_steps, int64_t samples_per_step);

  // The line after `steps_done` steps in all, the last loss being `loss`.
  std::string Line(int64_t steps_done, double loss) const;
  double ElapsedSeconds() const;

 private:
  std::string label_;
  int64_t total_steps_;
  int64_t samples_per_step_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace tspipe

#endif  // TSPIPE_ENGINE_PROGRESS_H_
