#include "engine/model_files.h"

#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "io/file_util.h"

namespace tspipe {
namespace {

// Up to `limit` names of `names`, comma-separated, and how many more.
std::string SomeNames(const std::vector<std::string>& names, size_t limit = 4) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < limit; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > limit) out += " and " + std::to_string(names.size() - limit) + " more";
  return out;
}

enum class FileKind { kMissing, kTorchArchive, kSafetensors, kOther };

// Told apart by the first bytes: a LibTorch archive is a zip file ("PK\3\4");
// a safetensors file starts with its header's length (8 bytes) and the
// header's opening brace.
FileKind KindOf(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return FileKind::kMissing;
  char head[9] = {};
  in.read(head, sizeof(head));
  const std::streamsize got = in.gcount();
  if (got >= 4 && head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4) {
    return FileKind::kTorchArchive;
  }
  if (got == 9 && head[8] == '{') return FileKind::kSafetensors;
  return FileKind::kOther;
}

}  // namespace

NamedTensors ModuleTensors(const torch::nn::Module& module) {
  NamedTensors out;
  for (const auto& p : module.named_parameters()) out[p.key()] = p.value().detach().to(torch::kCPU);
  for (const auto& b : module.named_buffers()) out[b.key()] = b.value().detach().to(torch::kCPU);
  return out;
}

void LoadModuleTensors(const NamedTensors& tensors, torch::nn::Module& module,
                       const std::string& context) {
  std::map<std::string, torch::Tensor> targets;
  for (const auto& p : module.named_parameters()) targets[p.key()] = p.value();
  for (const auto& b : module.named_buffers()) targets[b.key()] = b.value();
  // Every problem is checked before anything is copied, so that a file that
  // does not fit leaves the module as it was.
  std::vector<std::string> missing, unexpected;
  for (const auto& [name, target] : targets) {
    if (!tensors.count(name)) missing.push_back(name);
  }
  for (const auto& [name, tensor] : tensors) {
    if (!targets.count(name)) unexpected.push_back(name);
  }
  if (!missing.empty() || !unexpected.empty()) {
    std::string why;
    if (!missing.empty()) {
      why += std::to_string(missing.size()) + " tensor(s) missing: " + SomeNames(missing);
    }
    if (!unexpected.empty()) {
      why += std::string(why.empty() ? "" : "; ") + std::to_string(unexpected.size()) +
             " unexpected tensor(s): " + SomeNames(unexpected);
    }
    throw std::invalid_argument(context + why);
  }
  for (const auto& [name, target] : targets) {
    const torch::Tensor& t = tensors.at(name);
    if (!t.sizes().equals(target.sizes())) {
      throw std::invalid_argument(context + name + " has shape " + c10::str(t.sizes()) +
                                  " in the file but " + c10::str(target.sizes()) +
                                  " in the model");
    }
    if (c10::isFloatingType(t.scalar_type()) != c10::isFloatingType(target.scalar_type())) {
      throw std::invalid_argument(context + name + " is " +
                                  std::string(c10::toString(t.scalar_type())) +
                                  " in the file but " +
                                  std::string(c10::toString(target.scalar_type())) +
                                  " in the model");
    }
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) target.copy_(tensors.at(name));
}

void LoadModelFile(const std::string& path, const std::string& what, const std::string& shape,
                   torch::nn::Module& module,
                   const std::function<void(NamedTensors&)>& adapt) {
  const std::string misfit =
      what + " checkpoint " + path + " does not fit the " + what + " (" + shape + "): ";
  switch (KindOf(path)) {
    case FileKind::kMissing:
      throw std::runtime_error(what + " checkpoint: cannot open " + path +
                               " (Trainer::SaveModel and --export write one; "
                               "//benchmarks:kd_accuracy saves its teacher)");
    case FileKind::kOther:
      throw std::runtime_error(what + " checkpoint " + path +
                               " is neither a LibTorch archive (Trainer::SaveModel) nor a "
                               "safetensors file (--export, safetensors.torch.save_file)");
    case FileKind::kSafetensors: {
      // ReadSafetensors refuses a truncated file or a bad header, naming it.
      NamedTensors tensors = ReadSafetensors(path);
      if (adapt) {
        try {
          adapt(tensors);
        } catch (const std::invalid_argument& e) {
          throw std::invalid_argument(misfit + e.what());
        }
      }
      LoadModuleTensors(tensors, module, misfit);
      return;
    }
    case FileKind::kTorchArchive:
      break;
  }
  // Module::load replaces tensors wholesale without comparing shapes, so
  // the shapes are checked after.
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& p : module.named_parameters()) shapes[p.key()] = p.value().sizes().vec();
  for (const auto& b : module.named_buffers()) shapes[b.key()] = b.value().sizes().vec();
  try {
    std::istringstream in(ReadFile(path));
    torch::serialize::InputArchive archive;
    archive.load_from(in, torch::Device(torch::kCPU));
    module.load(archive);
  } catch (const c10::Error& e) {
    throw std::invalid_argument(misfit + e.what_without_backtrace());
  }
  auto check = [&](const std::string& name, const torch::Tensor& t) {
    const std::vector<int64_t>& want = shapes.at(name);
    if (t.sizes().vec() != want) {
      throw std::invalid_argument(misfit + name + " has shape " + c10::str(t.sizes()) +
                                  " in the file but " + c10::str(c10::IntArrayRef(want)) +
                                  " in the model");
    }
  };
  for (const auto& p : module.named_parameters()) check(p.key(), p.value());
  for (const auto& b : module.named_buffers()) check(b.key(), b.value());
}

}  // namespace tspipe
