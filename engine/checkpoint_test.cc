// The checkpoint directory's rules, checked on files made by hand: what
// counts as a checkpoint, what is skipped, what pruning keeps.
#include "engine/checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "io/file_util.h"

namespace tspipe {
namespace {

namespace fs = std::filesystem;

std::string FreshDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const fs::path dir = fs::path(tmp ? tmp : "/tmp") / ("ckpt_" + name + std::to_string(::getpid()));
  fs::remove_all(dir);
  return dir.string();
}

CheckpointManifest Manifest(int64_t step, int processes) {
  CheckpointManifest m;
  m.step = step;
  m.processes = processes;
  m.ranks = 2;
  m.fingerprint = "scheduler=tspipe\nbatch_size=8\n";
  for (int p = 0; p < processes; ++p) m.files.push_back(ProcessFileName(p));
  return m;
}

void WriteCheckpoint(const std::string& dir, int64_t step, const std::string& payload) {
  WriteProcessFile(dir, step, 0, payload);
  WriteManifest(dir, Manifest(step, 1));
}

TEST(CheckpointTest, FnvMatchesPublishedVectors) {
  // FNV-1a 64 test vectors (Fowler, Noll, Vo).
  EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(Fnv1a64("foobar"), 0x85944171f73967e8ull);
}

TEST(CheckpointTest, ManifestRoundTripsAndRejectsDamage) {
  const CheckpointManifest m = Manifest(12, 2);
  const std::string text = FormatManifest(m);
  const CheckpointManifest back = ParseManifest(text);
  EXPECT_EQ(back.step, 12);
  EXPECT_EQ(back.processes, 2);
  EXPECT_EQ(back.ranks, 2);
  EXPECT_EQ(back.fingerprint, m.fingerprint);
  EXPECT_EQ(back.files, m.files);
  // Cut anywhere before its end line, a manifest is refused.
  for (size_t cut = 0; cut + 4 < text.size(); cut += 7) {
    EXPECT_THROW(ParseManifest(text.substr(0, cut)), std::runtime_error) << cut;
  }
  EXPECT_THROW(ParseManifest("tspipe checkpoint 1\nstep 1\nprocesses 2\nranks 2\nfile "
                             "process-0.ckpt\nfingerprint\nend\n"),
               std::runtime_error);  // 1 file for 2 processes.
  EXPECT_THROW(ParseManifest("tspipe checkpoint 1\nstep 1\nprocesses 1\nranks 1\nfile "
                             "../escape\nfingerprint\nend\n"),
               std::runtime_error);
}

TEST(CheckpointTest, NewestCompleteFirstAndIncompleteSkipped) {
  const std::string dir = FreshDir("complete");
  EXPECT_TRUE(CompleteCheckpoints(dir, true, nullptr).empty());  // No directory: none.
  WriteCheckpoint(dir, 2, "two");
  WriteCheckpoint(dir, 10, "ten");
  // Step 11: the process file was written, the manifest never was.
  WriteProcessFile(dir, 11, 0, "eleven");
  // Step 12: truncated after its manifest (a disk that lost the tail).
  WriteCheckpoint(dir, 12, "twelve twelve");
  const std::string twelve = StepDirectory(dir, 12) + "/" + ProcessFileName(0);
  fs::resize_file(twelve, fs::file_size(twelve) - 3);
  // Step 13: a temporary file of a killed writer, nothing else.
  fs::create_directories(StepDirectory(dir, 13));
  std::ofstream(StepDirectory(dir, 13) + "/process-0.ckpt.tmp.123") << "half";
  std::vector<std::string> skipped;
  const std::vector<CheckpointManifest> found = CompleteCheckpoints(dir, true, &skipped);
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].step, 10);
  EXPECT_EQ(found[1].step, 2);
  EXPECT_EQ(skipped.size(), 3u);
  EXPECT_EQ(ReadProcessFile(dir, found[0], 0), "ten");
  // A flipped byte keeps the size but not the hash.
  const std::string ten = StepDirectory(dir, 10) + "/" + ProcessFileName(0);
  std::string bytes = ReadFile(ten);
  bytes.back() ^= 1;
  WriteFileAtomically(ten, bytes);
  EXPECT_EQ(CompleteCheckpoints(dir, true, nullptr).size(), 2u);
  try {
    ReadProcessFile(dir, found[0], 0);
    FAIL() << "a damaged file was read";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("hash"), std::string::npos) << e.what();
  }
}

TEST(CheckpointTest, PruneKeepsTheNewestComplete) {
  const std::string dir = FreshDir("prune");
  for (int step : {1, 2, 3, 4, 5}) WriteCheckpoint(dir, step, "s" + std::to_string(step));
  WriteProcessFile(dir, 6, 0, "unfinished");  // Newer than every complete one: kept.
  PruneCheckpoints(dir, 0, 2);
  std::vector<int64_t> steps;
  for (const CheckpointManifest& m : CompleteCheckpoints(dir, true, nullptr)) steps.push_back(m.step);
  EXPECT_EQ(steps, (std::vector<int64_t>{5, 4}));
  EXPECT_TRUE(fs::exists(StepDirectory(dir, 6)));
  EXPECT_FALSE(fs::exists(StepDirectory(dir, 3)));
  // Another process's files: its own newest keep + 1 stay.
  for (int step : {7, 8, 9, 10}) WriteProcessFile(dir, step, 1, "p1");
  PruneCheckpoints(dir, 1, 2);
  for (int step : {8, 9, 10}) EXPECT_TRUE(fs::exists(StepDirectory(dir, step) + "/process-1.ckpt"));
  EXPECT_FALSE(fs::exists(StepDirectory(dir, 7)));
}

TEST(CheckpointTest, DifferencesNameEverySetting) {
  EXPECT_EQ(DescribeDifferences("a=1\nb=2\n", "b=2\na=1\n", {}), "");
  EXPECT_EQ(DescribeDifferences("a=1\nb=2\nc=3\n", "a=1\nb=5\nd=4\n", {}),
            "b is 2 in the checkpoint, 5 in this run; c is 3 in the checkpoint and not set in "
            "this run; d is 4 in this run and not in the checkpoint");
  EXPECT_EQ(DescribeDifferences("a=1\nsteps=3\n", "a=1\nsteps=4\n", {"steps"}), "");
}

}  // namespace
}  // namespace tspipe
