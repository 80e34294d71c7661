#include "engine/fingerprint.h"

#include <sstream>

#include "core/balance.h"

namespace tspipe {

std::string Fingerprint(const TrainConfig& c, const std::string& recipe_options) {
  std::ostringstream out;
  out << "scheduler=" << c.scheduler << "\nalgorithm=" << c.algorithm << "\nstages=" << c.stages
      << "\nmicrobatches=" << c.microbatches << "\nbatch_size=" << c.batch_size
      << "\nbalance=" << FormatBalance(c.balance)
      << "\nteacher_balance=" << FormatBalance(c.teacher_balance)
      << "\nupdate_policy=" << c.update_policy << "\nseed=" << c.seed << "\ndata=" << c.data
      << "\ndata_dir=" << c.data_dir << "\ntrain_samples=" << c.train_samples
      << "\nnum_batches=" << c.num_batches << "\nlearning_rate=" << c.learning_rate
      << "\nmomentum=" << c.momentum << "\noptimizer=" << c.optimizer << "\nadam=" << c.adam_beta1
      << "," << c.adam_beta2 << "," << c.adam_eps << "\nwarmup_steps=" << c.warmup_steps
      << "\ndecay_learning_rate=" << c.decay_learning_rate << "\nclip_grad_norm=" << c.clip_grad_norm
      << "\nweight_decay=" << c.weight_decay
      << "\nweight_decay_schedule=" << [&c] {
           std::ostringstream w;
           for (const auto& [step, value] : c.weight_decay_schedule) w << step << ":" << value << ",";
           return w.str();
         }()
      << "\ndtype=" << c.dtype << "\ntotal_steps=" << c.total_steps << "\nteacher_checkpoint=" << c.teacher_checkpoint
      << "\ninitial_checkpoint=" << c.initial_checkpoint
      << "\nsteps_per_iteration=" << c.steps_per_iteration << "\n";
  // The recipe's part: its options, each on a line of its own.
  std::istringstream options(recipe_options);
  for (std::string line; std::getline(options, line);) out << c.algorithm << "." << line << "\n";
  return out.str();
}

}  // namespace tspipe
