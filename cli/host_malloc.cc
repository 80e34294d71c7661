#include "cli/host_malloc.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace tspipe {

void RestartKeepingFreedHostMemory(char** argv) {
#if defined(__GLIBC__)
  const char* current = std::getenv("GLIBC_TUNABLES");
  std::string tunables = current == nullptr ? "" : current;
  // The user's own choice wins; and the restarted process stops here.
  if (tunables.find("glibc.malloc.") != std::string::npos) return;
  tunables += (tunables.empty() ? "" : ":") + std::string("glibc.malloc.top_pad=268435456");
  if (setenv("GLIBC_TUNABLES", tunables.c_str(), /*overwrite=*/1) != 0) return;
  execv("/proc/self/exe", argv);
  // Still here: exec failed. Run on with glibc's defaults.
  std::perror("tspipe: restart with GLIBC_TUNABLES (running with malloc's defaults)");
  if (current == nullptr) {
    unsetenv("GLIBC_TUNABLES");
  } else {
    setenv("GLIBC_TUNABLES", current, 1);
  }
#else
  (void)argv;
#endif
}

}  // namespace tspipe
