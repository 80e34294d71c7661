#include "io/file_util.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <unistd.h>

#include <cstdlib>
#include <fstream>

namespace tspipe {
namespace {

std::string TmpDir() {
  const char* d = std::getenv("TEST_TMPDIR");
  return d ? d : "/tmp";
}

TEST(FileUtilTest, WritesAndReplaces) {
  std::string path = TmpDir() + "/atomic.txt";
  WriteFileAtomically(path, "first");
  EXPECT_EQ(ReadFile(path), "first");
  WriteFileAtomically(path, "second, longer");
  EXPECT_EQ(ReadFile(path), "second, longer");
}

TEST(FileUtilTest, FailureLeavesTheOldFileAndNoTemporary) {
  std::string dir = TmpDir() + "/readonly";
  ::mkdir(dir.c_str(), 0755);
  std::string path = dir + "/kept.txt";
  WriteFileAtomically(path, "kept");
  // A directory in the way of the rename makes the write fail at the end.
  std::string blocked = dir + "/blocked";
  ::mkdir(blocked.c_str(), 0755);
  ::mkdir((blocked + "/x").c_str(), 0755);
  EXPECT_THROW(WriteFileAtomically(blocked, "data"), std::runtime_error);
  EXPECT_EQ(ReadFile(path), "kept");
  std::ifstream tmp(blocked + ".tmp." + std::to_string(::getpid()));
  EXPECT_FALSE(tmp.good());
}

TEST(FileUtilTest, MissingFileErrorNamesThePath) {
  try {
    ReadFile("/nonexistent/file.bin");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/file.bin"), std::string::npos);
  }
}

}  // namespace
}  // namespace tspipe
