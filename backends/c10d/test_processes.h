// Tests that are their own workers: the test binary starts copies of itself
// as the ranks of a c10d world (torchrun's variables set, and
// TSPIPE_C10D_CHILD=1 so that main runs the worker side), then waits for
// them and reads what they wrote.
#ifndef TSPIPE_BACKENDS_C10D_TEST_PROCESSES_H_
#define TSPIPE_BACKENDS_C10D_TEST_PROCESSES_H_

#include <sys/types.h>

#include <map>
#include <string>

namespace tspipe {

// The environment variable `name`, or `fallback`.
std::string Env(const char* name, const std::string& fallback = "");
// A TCP port nobody listens on now (for MASTER_PORT).
int FreePort();
// A fresh directory under TEST_TMPDIR.
std::string TempDir();
// Starts this binary as rank `rank` of a `world`-rank world rendezvousing
// at 127.0.0.1:`port`, with `extra` added to the environment and its stderr
// in `log`.
pid_t Spawn(int rank, int world, int port, const std::map<std::string, std::string>& extra,
            const std::string& log);
// Its exit status, or 128 + the signal that ended it.
int WaitExit(pid_t pid);
// The whole file (empty when missing).
std::string Slurp(const std::string& path);

}  // namespace tspipe

#endif  // TSPIPE_BACKENDS_C10D_TEST_PROCESSES_H_
