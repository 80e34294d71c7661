#include "data/image_folder.h"

#include <algorithm>
#include <filesystem>
#include <stdexcept>
#include <system_error>

#include "data/image_decode.h"

namespace tspipe {
namespace {

namespace fs = std::filesystem;

bool Hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

// Every folder under `dir` (itself included, links followed), sorted by
// path as Python sorts os.walk's tuples: byte order, so "a-b" before "a/x".
std::vector<std::string> FoldersUnder(const fs::path& dir) {
  std::vector<std::string> folders = {dir.string()};
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::follow_directory_symlink, ec), end;
  if (ec) throw std::runtime_error(dir.string() + ": cannot list: " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) throw std::runtime_error(dir.string() + ": cannot list: " + ec.message());
    if (Hidden(it->path())) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_directory()) folders.push_back(it->path().string());
  }
  std::sort(folders.begin(), folders.end());
  return folders;
}

}  // namespace

std::vector<std::string> ImageFolderClasses(const std::string& root) {
  std::vector<std::string> classes;
  std::error_code ec;
  if (!fs::exists(root, ec)) throw std::runtime_error(root + ": no such folder");
  if (!fs::is_directory(root, ec)) throw std::runtime_error(root + ": not a folder");
  for (const fs::directory_entry& e : fs::directory_iterator(root, ec)) {
    if (e.is_directory() && !Hidden(e.path())) classes.push_back(e.path().filename().string());
  }
  if (ec) throw std::runtime_error(root + ": cannot list: " + ec.message());
  if (classes.empty()) {
    throw std::runtime_error(root + ": no class folders (expected root/<class>/<image>, as "
                             "torchvision's ImageFolder)");
  }
  std::sort(classes.begin(), classes.end());
  return classes;
}

ImageFolder ScanImageFolder(const std::string& root, bool skip_non_images) {
  ImageFolder folder;
  folder.root = root;
  folder.classes = ImageFolderClasses(root);
  std::error_code ec;
  for (size_t label = 0; label < folder.classes.size(); ++label) {
    const fs::path class_dir = fs::path(root) / folder.classes[label];
    size_t found = 0;
    for (const std::string& dir : FoldersUnder(class_dir)) {
      std::vector<std::string> files;
      for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
        if (!e.is_directory() && !Hidden(e.path())) files.push_back(e.path().filename().string());
      }
      if (ec) throw std::runtime_error(dir + ": cannot list: " + ec.message());
      std::sort(files.begin(), files.end());
      for (const std::string& name : files) {
        const std::string path = (fs::path(dir) / name).string();
        if (!HasImageExtension(name)) {
          if (!skip_non_images) {
            throw std::runtime_error(path + ": not an image (.jpg, .jpeg or .png); move it out of "
                                     "the data folder or pass --skip_bad_images");
          }
          folder.skipped.push_back(path);
          continue;
        }
        folder.samples.push_back({path, static_cast<int>(label)});
        ++found;
      }
    }
    if (found == 0) {
      throw std::runtime_error(class_dir.string() + ": class folder has no images (.jpg, .jpeg, "
                               ".png)");
    }
  }
  return folder;
}

}  // namespace tspipe
