// File helpers with the guarantees tspipe promises: outputs (checkpoints,
// figures, schedules) are written atomically, never half-written.
#ifndef TSPIPE_IO_FILE_UTIL_H_
#define TSPIPE_IO_FILE_UTIL_H_

#include <string>

namespace tspipe {

// Writes `contents` to a temporary file beside `path`, flushes it to disk and
// renames it over `path`. Throws std::runtime_error naming the path and the
// system error on failure; `path` is then untouched.
void WriteFileAtomically(const std::string& path, const std::string& contents);

// Reads a whole file. Throws std::runtime_error naming the path when it is
// missing or unreadable.
std::string ReadFile(const std::string& path);

}  // namespace tspipe

#endif  // TSPIPE_IO_FILE_UTIL_H_
