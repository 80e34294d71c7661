#include "data/image_decode.h"

#include <png.h>
#include <setjmp.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <stdexcept>

// jpeglib.h needs FILE and size_t declared first.
#include <jpeglib.h>
#include <jerror.h>  // JWRN_JPEG_EOF.

#include "io/file_util.h"

namespace tspipe {
namespace {

// libjpeg reports errors by calling error_exit, which must not return: it
// jumps back to DecodeJpeg with the message kept here.
struct JpegError {
  jpeg_error_mgr manager;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void JpegErrorExit(j_common_ptr info) {
  JpegError* e = reinterpret_cast<JpegError*>(info->err);
  (*info->err->format_message)(info, e->message);
  longjmp(e->jump, 1);
}

// A truncated file ends the decode (libjpeg would fill the missing rows
// with grey; Pillow refuses it too). Other warnings (extraneous bytes
// before a marker, an unknown JFIF revision) pass, as in Pillow.
void JpegEmitMessage(j_common_ptr info, int level) {
  if (level < 0 && info->err->msg_code == JWRN_JPEG_EOF) JpegErrorExit(info);
}

// Pillow's decompression-bomb limit: larger images are refused before any
// pixel memory is allocated, so a small file claiming 65500 x 65500 pixels
// is one line, not an out-of-memory kill.
constexpr uint64_t kMaxPixels = 178956970;

bool TooLarge(uint64_t width, uint64_t height, char* error, size_t size) {
  if (width * height <= kMaxPixels) return false;
  std::snprintf(error, size, "%llux%llu pixels, over the %llu-pixel limit (a decompression bomb?)",
                static_cast<unsigned long long>(width), static_cast<unsigned long long>(height),
                static_cast<unsigned long long>(kMaxPixels));
  return true;
}

// Kept free of objects with destructors between setjmp and longjmp: the
// output buffer belongs to the caller.
bool DecodeJpeg(const std::string& bytes, RgbImage* out, char* error) {
  jpeg_decompress_struct info;
  JpegError err;
  info.err = jpeg_std_error(&err.manager);
  err.manager.error_exit = JpegErrorExit;
  err.manager.emit_message = JpegEmitMessage;
  if (setjmp(err.jump)) {
    std::snprintf(error, JMSG_LENGTH_MAX, "%s", err.message);
    jpeg_destroy_decompress(&info);
    return false;
  }
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&info, TRUE);
  // Coefficient buffers of progressive files live in libjpeg's own memory:
  // cap them too.
  info.mem->max_memory_to_use = 1L << 30;
  if (TooLarge(info.image_width, info.image_height, error, JMSG_LENGTH_MAX)) {
    jpeg_destroy_decompress(&info);
    return false;
  }
  if (info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK) {
    std::snprintf(error, JMSG_LENGTH_MAX, "CMYK JPEG (convert it to RGB)");
    jpeg_destroy_decompress(&info);
    return false;
  }
  info.out_color_space = JCS_RGB;  // Grey images come out as three equal channels.
  jpeg_start_decompress(&info);
  out->width = static_cast<int>(info.output_width);
  out->height = static_cast<int>(info.output_height);
  out->pixels.resize(static_cast<size_t>(out->width) * out->height * 3);  // Under the cap.
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = out->pixels.data() + static_cast<size_t>(info.output_scanline) * out->width * 3;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  return true;
}

// libpng's simplified API. RGBA then the alpha dropped, as Pillow's
// convert("RGB") does (no blending onto a background).
void DecodePng(const std::string& bytes, const std::string& name, RgbImage* out) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size())) {
    throw std::runtime_error(name + ": corrupt PNG (" + image.message + ")");
  }
  char too_large[128];
  if (TooLarge(image.width, image.height, too_large, sizeof(too_large))) {
    png_image_free(&image);
    throw std::runtime_error(name + ": " + too_large);
  }
  image.format = PNG_FORMAT_RGBA;
  // 16-bit samples without a gAMA or sRGB chunk are sRGB-encoded values,
  // as Pillow reads them (not linear light).
  image.flags |= PNG_IMAGE_FLAG_16BIT_sRGB;
  std::vector<uint8_t> rgba(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, rgba.data(), 0, nullptr)) {
    const std::string message = image.message;
    png_image_free(&image);
    throw std::runtime_error(name + ": corrupt or truncated PNG (" + message + ")");
  }
  out->width = static_cast<int>(image.width);
  out->height = static_cast<int>(image.height);
  const size_t n = static_cast<size_t>(out->width) * out->height;
  out->pixels.resize(n * 3);
  for (size_t i = 0; i < n; ++i) {
    out->pixels[3 * i] = rgba[4 * i];
    out->pixels[3 * i + 1] = rgba[4 * i + 1];
    out->pixels[3 * i + 2] = rgba[4 * i + 2];
  }
}

}  // namespace

RgbImage DecodeImage(const std::string& bytes, const std::string& name) {
  RgbImage image;
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  if (bytes.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) {
    char error[JMSG_LENGTH_MAX] = {0};
    if (!DecodeJpeg(bytes, &image, error)) {
      throw std::runtime_error(name + ": corrupt or truncated JPEG (" + error + ")");
    }
  } else if (bytes.size() >= 8 && png_sig_cmp(b, 0, 8) == 0) {
    DecodePng(bytes, name, &image);
  } else {
    throw std::runtime_error(name + ": not a JPEG or PNG image" +
                             (bytes.empty() ? std::string(" (empty file)") : std::string()));
  }
  if (image.width <= 0 || image.height <= 0) {
    throw std::runtime_error(name + ": image has no pixels");
  }
  return image;
}

RgbImage DecodeImageFile(const std::string& path) { return DecodeImage(ReadFile(path), path); }

bool HasImageExtension(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == "jpg" || ext == "jpeg" || ext == "png";
}

}  // namespace tspipe
