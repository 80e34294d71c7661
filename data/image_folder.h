// The ImageFolder layout of torchvision (and of every ImageNet-style data
// set): root/<class>/<image>, classes sorted by name and numbered in that
// order, images found under each class folder (subfolders too) in the order
// torchvision's make_dataset gives them: folders sorted by path, files by
// name within each. No tensors here.
#ifndef TSPIPE_DATA_IMAGE_FOLDER_H_
#define TSPIPE_DATA_IMAGE_FOLDER_H_

#include <string>
#include <vector>

namespace tspipe {

struct ImageFolderSample {
  std::string path;
  int label = 0;
};

struct ImageFolder {
  std::string root;
  std::vector<std::string> classes;
  std::vector<ImageFolderSample> samples;
  // Files left out because they are not images (skip_non_images), by path.
  std::vector<std::string> skipped;
};

// Scans `root`. Names starting with '.' (.DS_Store, .git) are ignored, as
// system files. Throws std::runtime_error with a one-line message naming
// the path: a root that is missing, not a folder, or holds no class
// folders; a class folder with no images; a file that is not an image
// (.jpg, .jpeg, .png, any case) unless `skip_non_images`, which lists it in
// `skipped` instead. Whether an image decodes is the loader's check.
ImageFolder ScanImageFolder(const std::string& root, bool skip_non_images = false);

// The sorted class folder names of `root` (ScanImageFolder's classes)
// without listing the images; the same errors for the root itself.
std::vector<std::string> ImageFolderClasses(const std::string& root);

}  // namespace tspipe

#endif  // TSPIPE_DATA_IMAGE_FOLDER_H_
