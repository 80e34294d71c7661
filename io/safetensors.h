// The safetensors format (Hugging Face): an 8-byte little-endian header
// length N, N bytes of JSON mapping each tensor name to its dtype, shape and
// data_offsets (relative to byte 8 + N; an optional "__metadata__" object of
// strings), then the packed little-endian row-major data. This is how
// pretrained checkpoints ship and what PyTorch users read with
// safetensors.torch.load_file.
#ifndef TSPIPE_IO_SAFETENSORS_H_
#define TSPIPE_IO_SAFETENSORS_H_

#include <torch/torch.h>

#include <map>
#include <string>

namespace tspipe {

using NamedTensors = std::map<std::string, torch::Tensor>;

// Reads every tensor of a safetensors file onto the CPU. Throws
// std::runtime_error naming the file and the problem when it is missing or
// unreadable, shorter than its header says (a bad header length), its header
// is not the expected JSON, a dtype is not supported, or a tensor's bytes do
// not match its shape or lie outside the file (truncated).
NamedTensors ReadSafetensors(const std::string& path);

// Writes `tensors` (any device; stored contiguous, in name order) with
// `metadata` atomically: a failed write leaves `path` untouched.
void WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// The tensor `name` of `tensors`, checked against the expected shape and
// dtype. Throws std::runtime_error naming `source` (the file), the tensor and
// what differs.
torch::Tensor TakeTensor(const NamedTensors& tensors, const std::string& name,
                         torch::IntArrayRef shape, torch::ScalarType dtype,
                         const std::string& source);

}  // namespace tspipe

#endif  // TSPIPE_IO_SAFETENSORS_H_
