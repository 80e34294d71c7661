// A network's weights in a file, both ways: LibTorch archives
// (Trainer::SaveModel, for tspipe's own runs) and safetensors files
// (Trainer::ExportModel, for everything else: PyTorch, Hugging Face). Loading
// takes either, told apart by their first bytes, through one strict path, so
// that a teacher trained by PyTorch and one trained here load the same way.
#ifndef TSPIPE_ENGINE_MODEL_FILES_H_
#define TSPIPE_ENGINE_MODEL_FILES_H_

#include <torch/torch.h>

#include <functional>
#include <string>

#include "io/safetensors.h"

namespace tspipe {

// Every parameter and buffer of `module` under its LibTorch name, on the
// CPU. For nn::Sequential, Conv2d, Linear and BatchNorm these are the names
// PyTorch's state_dict() gives the same modules ("1.bn1.running_var").
NamedTensors ModuleTensors(const torch::nn::Module& module);

// Copies `tensors` into `module` by name, as PyTorch's
// load_state_dict(strict=True): every parameter and buffer must be there
// with its shape, and nothing else may be. Floating tensors are converted to
// the module's dtype; an integer buffer (batch norm's step count) needs an
// integer tensor. Throws std::invalid_argument starting with `context` ("the
// teacher (widths 8,16, blocks 1,1) does not fit x.safetensors: ") and naming
// the tensors that are missing, unexpected or of another shape.
void LoadModuleTensors(const NamedTensors& tensors, torch::nn::Module& module,
                       const std::string& context);

// Loads `path` into `module` (`what`: "teacher" or "student", and `shape`
// its shape in words, for the messages). A LibTorch archive or a safetensors
// file; a safetensors file's tensors pass through `adapt` first, when given
// (ModelSet::adapt_teacher_file). Throws std::runtime_error naming the file
// when it is missing, truncated or neither format, std::invalid_argument
// when it does not fit.
void LoadModelFile(const std::string& path, const std::string& what, const std::string& shape,
                   torch::nn::Module& module,
                   const std::function<void(NamedTensors&)>& adapt = nullptr);

}  // namespace tspipe

#endif  // TSPIPE_ENGINE_MODEL_FILES_H_
