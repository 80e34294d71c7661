// JPEG and PNG files decoded to 8-bit RGB, as Pillow's
// Image.open(path).convert("RGB") gives them (what torchvision's
// ImageFolder loads): libjpeg-turbo with its default (islow DCT, fancy
// upsampling) settings, which Pillow uses too, so the pixels are the same;
// libpng for PNG, grey and palette images expanded to RGB and an alpha
// channel dropped. No tensors here: the decoder threads of the image-folder
// loader run it.
#ifndef TSPIPE_DATA_IMAGE_DECODE_H_
#define TSPIPE_DATA_IMAGE_DECODE_H_

#include <cstdint>
#include <string>
#include <vector>

namespace tspipe {

// Row-major, interleaved RGB: pixel (y, x) channel c at (y * width + x) * 3 + c.
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;
};

// Decodes `bytes` (the contents of `name`, for messages) by their
// signature, not by a file extension. Throws std::runtime_error with a one-
// line message naming `name`: not a JPEG or PNG, truncated (as Pillow
// refuses truncated files by default; other libjpeg warnings pass, as in
// Pillow), corrupt, over Pillow's decompression-bomb limit of 178,956,970
// pixels (checked before any pixel memory is allocated), or CMYK (not
// converted yet; Pillow converts it).
RgbImage DecodeImage(const std::string& bytes, const std::string& name);

// Reads and decodes a file; the same errors, and one for an unreadable file.
RgbImage DecodeImageFile(const std::string& path);

// Whether a file name has an extension the image-folder data set reads
// (.jpg, .jpeg, .png, any case).
bool HasImageExtension(const std::string& name);

}  // namespace tspipe

#endif  // TSPIPE_DATA_IMAGE_DECODE_H_
