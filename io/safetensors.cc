#include "io/safetensors.h"

#include <nlohmann/json.hpp>

#include <cstring>
#include <stdexcept>
#include <utility>
#include <vector>

#include "io/file_util.h"

namespace tspipe {
namespace {

using nlohmann::json;

// The dtypes torch and safetensors share, by safetensors' names.
const std::vector<std::pair<std::string, torch::ScalarType>>& Dtypes() {
  static const std::vector<std::pair<std::string, torch::ScalarType>> kDtypes = {
      {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16},
      {"BF16", torch::kBFloat16}, {"I64", torch::kInt64}, {"I32", torch::kInt32},
      {"I16", torch::kInt16},   {"I8", torch::kInt8},     {"U8", torch::kUInt8},
      {"BOOL", torch::kBool}};
  return kDtypes;
}

std::string ShapeString(torch::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

uint64_t ReadLittleEndian64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

}  // namespace

NamedTensors ReadSafetensors(const std::string& path) {
  const std::string bytes = ReadFile(path);
  auto fail = [&](const std::string& why) -> std::runtime_error {
    return std::runtime_error("bad safetensors file " + path + ": " + why);
  };
  if (bytes.size() < 8) {
    throw fail("only " + std::to_string(bytes.size()) + " bytes, less than the 8-byte header length");
  }
  const uint64_t header_len = ReadLittleEndian64(bytes.data());
  if (header_len > bytes.size() - 8) {
    throw fail("the header length says " + std::to_string(header_len) + " bytes but only " +
               std::to_string(bytes.size() - 8) + " follow (bad header length or truncated)");
  }
  json header;
  try {
    header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<int64_t>(header_len));
  } catch (const json::exception& e) {
    throw fail(std::string("the header is not JSON: ") + e.what());
  }
  if (!header.is_object()) throw fail("the header is not a JSON object");
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = bytes.size() - data_start;
  NamedTensors tensors;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const json& entry = it.value();
    const std::string what = "tensor '" + it.key() + "'";
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets") || !entry["dtype"].is_string() ||
        !entry["shape"].is_array() || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2) {
      throw fail(what + " needs a dtype, a shape and two data_offsets");
    }
    const std::string dtype_name = entry["dtype"].get<std::string>();
    torch::ScalarType dtype = torch::kFloat32;
    bool known = false;
    for (const auto& [name, type] : Dtypes()) {
      if (name == dtype_name) {
        dtype = type;
        known = true;
      }
    }
    if (!known) throw fail(what + " has the unsupported dtype " + dtype_name);
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (const json& d : entry["shape"]) {
      if (!d.is_number_unsigned()) throw fail(what + " has a shape that is not non-negative integers");
      shape.push_back(d.get<int64_t>());
      numel *= d.get<uint64_t>();
    }
    const json& offsets = entry["data_offsets"];
    if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
      throw fail(what + " has data_offsets that are not non-negative integers");
    }
    const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    const uint64_t expected = numel * torch::elementSize(dtype);
    if (end < begin || end - begin != expected) {
      throw fail(what + " of shape " + ShapeString(shape) + " and dtype " + dtype_name + " needs " +
                 std::to_string(expected) + " bytes but its data_offsets span " +
                 std::to_string(end >= begin ? end - begin : 0));
    }
    if (end > data_size) {
      throw fail(what + " lies at bytes [" + std::to_string(begin) + ", " + std::to_string(end) +
                 ") of the data but only " + std::to_string(data_size) + " are there (truncated)");
    }
    torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(dtype));
    if (expected > 0) std::memcpy(t.data_ptr(), bytes.data() + data_start + begin, expected);
    tensors.emplace(it.key(), std::move(t));
  }
  return tensors;
}

void WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    std::string dtype_name;
    for (const auto& [n, type] : Dtypes()) {
      if (type == t.scalar_type()) dtype_name = n;
    }
    if (dtype_name.empty()) {
      throw std::invalid_argument("cannot write tensor '" + name + "' to " + path +
                                  ": safetensors has no dtype for " +
                                  std::string(c10::toString(t.scalar_type())));
    }
    const uint64_t size = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype_name},
                    {"shape", std::vector<int64_t>(t.sizes().begin(), t.sizes().end())},
                    {"data_offsets", {offset, offset + size}}};
    offset += size;
    data.push_back(std::move(t));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // The format pads the header to 8 bytes.
  std::string out(8, '\0');
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += text;
  out.reserve(out.size() + offset);
  for (const torch::Tensor& t : data) {
    out.append(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel()) * t.element_size());
  }
  WriteFileAtomically(path, out);
}

torch::Tensor TakeTensor(const NamedTensors& tensors, const std::string& name,
                         torch::IntArrayRef shape, torch::ScalarType dtype,
                         const std::string& source) {
  auto it = tensors.find(name);
  if (it == tensors.end()) throw std::runtime_error(source + " has no tensor '" + name + "'");
  const torch::Tensor& t = it->second;
  if (t.sizes() != shape) {
    throw std::runtime_error(source + ": tensor '" + name + "' has shape " + ShapeString(t.sizes()) +
                             ", expected " + ShapeString(shape));
  }
  if (t.scalar_type() != dtype) {
    throw std::runtime_error(source + ": tensor '" + name + "' has dtype " +
                             std::string(c10::toString(t.scalar_type())) + ", expected " +
                             std::string(c10::toString(dtype)));
  }
  return t;
}

}  // namespace tspipe
