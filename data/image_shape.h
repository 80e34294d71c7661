// What an image network takes and predicts: shared by the data sources,
// which make images of that shape, and the models (models/vision_models.h).
#ifndef TSPIPE_DATA_IMAGE_SHAPE_H_
#define TSPIPE_DATA_IMAGE_SHAPE_H_

#include <string>

namespace tspipe {

struct ImageShape {
  int image_size = 28;  // Square images, image_size x image_size pixels.
  int channels = 1;
  int num_classes = 10;
};

inline bool operator==(const ImageShape& a, const ImageShape& b) {
  return a.image_size == b.image_size && a.channels == b.channels &&
         a.num_classes == b.num_classes;
}

// "3x224x224, 1000 classes".
inline std::string DescribeImageShape(const ImageShape& s) {
  return std::to_string(s.channels) + "x" + std::to_string(s.image_size) + "x" +
         std::to_string(s.image_size) + ", " + std::to_string(s.num_classes) + " classes";
}

}  // namespace tspipe

#endif  // TSPIPE_DATA_IMAGE_SHAPE_H_
