#include "engine/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include "io/file_util.h"

namespace tspipe {
namespace {

namespace fs = std::filesystem;

constexpr char kMagic[] = "tspipe checkpoint 1";
constexpr char kManifest[] = "MANIFEST";
constexpr char kStepPrefix[] = "step-";

// A rename is durable only once the directory holding it is on disk.
void SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    throw std::runtime_error("cannot open directory " + dir + ": " + std::strerror(errno));
  }
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  if (rc != 0) {
    throw std::runtime_error("cannot sync directory " + dir + ": " + std::strerror(saved));
  }
}

void MakeDirectories(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot create checkpoint directory " + dir + ": " + ec.message());
}

// Step of a "step-00000012" name; -1 for anything else.
int64_t StepOf(const std::string& name) {
  const size_t prefix = std::strlen(kStepPrefix);
  if (name.size() <= prefix || name.compare(0, prefix, kStepPrefix) != 0) return -1;
  int64_t step = 0;
  for (size_t i = prefix; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

// Step directories in `dir`, newest first.
std::vector<std::pair<int64_t, std::string>> StepDirectories(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const int64_t step = StepOf(e.path().filename().string());
    if (step >= 0 && e.is_directory(ec)) out.emplace_back(step, e.path().string());
  }
  std::sort(out.rbegin(), out.rend());
  return out;
}

void RemoveStepDirectory(const std::string& path) {
  std::error_code ec;
  // The manifest first: from then on the directory is not a checkpoint.
  fs::remove(fs::path(path) / kManifest, ec);
  fs::remove_all(path, ec);
}

// "tspipe-process-file <payload bytes> <hash, 16 hex digits>\n".
constexpr char kFileMagic[] = "tspipe-process-file";

std::string FileHeader(uint64_t size, uint64_t hash) {
  char line[96];
  std::snprintf(line, sizeof(line), "%s %" PRIu64 " %016" PRIx64 "\n", kFileMagic, size, hash);
  return line;
}

// Reads the header line of `path`: payload size and hash; false when the
// file is missing or does not start with one.
bool ReadHeader(const std::string& path, uint64_t* size, uint64_t* hash, size_t* header_bytes) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  char line[96] = {0};
  const bool got = std::fgets(line, sizeof(line), f) != nullptr;
  std::fclose(f);
  if (!got) return false;
  char magic[32];
  if (std::sscanf(line, "%31s %" SCNu64 " %" SCNx64, magic, size, hash) != 3 ||
      std::string(magic) != kFileMagic || line[std::strlen(line) - 1] != '\n') {
    return false;
  }
  *header_bytes = std::strlen(line);
  return true;
}

}  // namespace

uint64_t Fnv1a64(const std::string& bytes) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string FormatManifest(const CheckpointManifest& m) {
  std::ostringstream out;
  out << kMagic << "\nstep " << m.step << "\nprocesses " << m.processes << "\nranks " << m.ranks
      << "\n";
  for (const std::string& f : m.files) out << "file " << f << "\n";
  out << "fingerprint\n" << m.fingerprint;
  if (!m.fingerprint.empty() && m.fingerprint.back() != '\n') out << "\n";
  out << "end\n";
  return out.str();
}

CheckpointManifest ParseManifest(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  auto bad = [](const std::string& why) {
    return std::runtime_error("not a tspipe checkpoint manifest: " + why);
  };
  if (!std::getline(in, line) || line != kMagic) throw bad("it does not start with '" + std::string(kMagic) + "'");
  CheckpointManifest m;
  bool have_step = false, have_processes = false, have_ranks = false, ended = false;
  while (std::getline(in, line)) {
    if (line == "fingerprint") {
      std::ostringstream fp;
      while (std::getline(in, line)) {
        if (line == "end") {
          ended = true;
          break;
        }
        fp << line << "\n";
      }
      m.fingerprint = fp.str();
      break;
    }
    std::istringstream fields(line);
    std::string key;
    fields >> key;
    if (key == "step") {
      have_step = static_cast<bool>(fields >> m.step);
    } else if (key == "processes") {
      have_processes = static_cast<bool>(fields >> m.processes);
    } else if (key == "ranks") {
      have_ranks = static_cast<bool>(fields >> m.ranks);
    } else if (key == "file") {
      std::string name, rest;
      if (!(fields >> name) || (fields >> rest) || name.find('/') != std::string::npos) {
        throw bad("bad file line '" + line + "'");
      }
      m.files.push_back(name);
    } else {
      throw bad("unknown line '" + line + "'");
    }
  }
  if (!have_step || !have_processes || !have_ranks || !ended) {
    throw bad("a step, processes, ranks or end line is missing");
  }
  if (m.processes < 1 || static_cast<int>(m.files.size()) != m.processes) {
    throw bad(std::to_string(m.files.size()) + " files for " + std::to_string(m.processes) +
              " processes");
  }
  return m;
}

std::string StepDirectory(const std::string& dir, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "%s%08" PRId64, kStepPrefix, step);
  return (fs::path(dir) / name).string();
}

std::string ProcessFileName(int process) { return "process-" + std::to_string(process) + ".ckpt"; }

void WriteProcessFile(const std::string& dir, int64_t step, int process, const std::string& payload) {
  const std::string step_dir = StepDirectory(dir, step);
  MakeDirectories(step_dir);
  WriteFileAtomically((fs::path(step_dir) / ProcessFileName(process)).string(),
                      FileHeader(payload.size(), Fnv1a64(payload)) + payload);
  SyncDirectory(step_dir);
}

void WriteManifest(const std::string& dir, const CheckpointManifest& manifest) {
  const std::string step_dir = StepDirectory(dir, manifest.step);
  MakeDirectories(step_dir);
  WriteFileAtomically((fs::path(step_dir) / kManifest).string(), FormatManifest(manifest));
  SyncDirectory(step_dir);
  SyncDirectory(dir);
}

std::vector<CheckpointManifest> CompleteCheckpoints(const std::string& dir, bool check_files,
                                                    std::vector<std::string>* skipped) {
  std::vector<CheckpointManifest> out;
  for (const auto& [step, path] : StepDirectories(dir)) {
    auto skip = [&, path = path](const std::string& why) {
      if (skipped != nullptr) skipped->push_back(path + ": " + why);
    };
    const fs::path manifest_path = fs::path(path) / kManifest;
    std::error_code ec;
    if (!fs::exists(manifest_path, ec)) {
      skip("no MANIFEST (never finished)");
      continue;
    }
    CheckpointManifest m;
    try {
      m = ParseManifest(ReadFile(manifest_path.string()));
    } catch (const std::runtime_error& e) {
      skip(e.what());
      continue;
    }
    if (m.step != step) {
      skip("its MANIFEST is for step " + std::to_string(m.step));
      continue;
    }
    bool ok = true;
    for (const std::string& name : m.files) {
      if (!check_files) break;
      const std::string file = (fs::path(path) / name).string();
      uint64_t size = 0, hash = 0;
      size_t header = 0;
      if (!ReadHeader(file, &size, &hash, &header)) {
        skip(name + " is missing or has no header line");
        ok = false;
        break;
      }
      const uintmax_t actual = fs::file_size(file, ec);
      if (ec || actual != header + size) {
        skip(name + " has " + std::to_string(actual) + " bytes, its header says " +
             std::to_string(header + size));
        ok = false;
        break;
      }
    }
    if (ok) out.push_back(m);
  }
  return out;
}

std::string ReadProcessFile(const std::string& dir, const CheckpointManifest& manifest,
                            int process) {
  if (process < 0 || process >= static_cast<int>(manifest.files.size())) {
    throw std::runtime_error("checkpoint " + StepDirectory(dir, manifest.step) + " has no file for process " +
                             std::to_string(process));
  }
  const std::string path =
      (fs::path(StepDirectory(dir, manifest.step)) / manifest.files[process]).string();
  uint64_t size = 0, hash = 0;
  size_t header = 0;
  if (!ReadHeader(path, &size, &hash, &header)) {
    throw std::runtime_error("checkpoint file " + path + " is missing or has no header line");
  }
  std::string bytes = ReadFile(path);
  if (bytes.size() != header + size) {
    throw std::runtime_error("checkpoint file " + path + " is damaged: " +
                             std::to_string(bytes.size()) + " bytes, its header says " +
                             std::to_string(header + size));
  }
  bytes.erase(0, header);
  if (Fnv1a64(bytes) != hash) {
    throw std::runtime_error("checkpoint file " + path + " is damaged: its hash does not match");
  }
  return bytes;
}

void PruneCheckpoints(const std::string& dir, int process, int keep) {
  keep = std::max(keep, 1);
  const auto steps = StepDirectories(dir);
  if (process == 0) {
    const std::vector<CheckpointManifest> complete = CompleteCheckpoints(dir, /*check_files=*/true, nullptr);
    if (complete.empty()) return;
    // Everything older than the keep-th newest complete checkpoint goes,
    // and incomplete directories older than the newest complete one
    // (newer ones may be being written by other processes).
    const int64_t oldest_kept = complete[std::min<size_t>(keep, complete.size()) - 1].step;
    std::map<int64_t, bool> kept;
    for (size_t i = 0; i < complete.size() && static_cast<int>(i) < keep; ++i) kept[complete[i].step] = true;
    for (const auto& [step, path] : steps) {
      if (step < oldest_kept || (step < complete.front().step && !kept.count(step))) {
        RemoveStepDirectory(path);
      }
    }
    return;
  }
  int seen = 0;
  std::error_code ec;
  for (const auto& [step, path] : steps) {
    const fs::path own = fs::path(path) / ProcessFileName(process);
    if (!fs::exists(own, ec)) continue;
    if (++seen > keep + 1) {
      fs::remove(own, ec);
      fs::remove(path, ec);  // Only if now empty.
    }
  }
}

std::string DescribeDifferences(const std::string& saved, const std::string& current,
                                const std::vector<std::string>& ignore) {
  auto parse = [&](const std::string& text) {
    std::map<std::string, std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      const size_t eq = line.find('=');
      const std::string key = line.substr(0, eq);
      if (std::find(ignore.begin(), ignore.end(), key) != ignore.end()) continue;
      out[key] = eq == std::string::npos ? "" : line.substr(eq + 1);
    }
    return out;
  };
  const auto a = parse(saved), b = parse(current);
  std::string out;
  auto add = [&](const std::string& s) { out += (out.empty() ? "" : "; ") + s; };
  auto shown = [](const std::string& v) { return v.empty() ? std::string("empty") : v; };
  for (const auto& [key, value] : a) {
    auto it = b.find(key);
    if (it == b.end()) {
      add(key + " is " + shown(value) + " in the checkpoint and not set in this run");
    } else if (it->second != value) {
      add(key + " is " + shown(value) + " in the checkpoint, " + shown(it->second) + " in this run");
    }
  }
  for (const auto& [key, value] : b) {
    if (!a.count(key)) add(key + " is " + shown(value) + " in this run and not in the checkpoint");
  }
  return out;
}

}  // namespace tspipe
