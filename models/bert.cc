#include "models/bert.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <limits>
#include <stdexcept>

namespace tspipe {
namespace {

namespace nn = torch::nn;
using nlohmann::json;

nn::LayerNorm MakeLayerNorm(const BertConfig& c) {
  return nn::LayerNorm(nn::LayerNormOptions({c.hidden}).eps(c.layer_norm_eps));
}

// BertPreTrainedModel._init_weights: N(0, 0.02) weights, zero biases,
// LayerNorm weight 1 / bias 0 (the LibTorch LayerNorm default already).
void InitLinear(nn::Linear& l) {
  torch::NoGradGuard g;
  l->weight.normal_(0.0, 0.02);
  if (l->bias.defined()) l->bias.zero_();
}

// Parameter name (HF, relative to the block's prefix) -> tensor, for loading.
using NamedParams = std::vector<std::pair<std::string, torch::Tensor>>;

void AddLinear(NamedParams& out, const std::string& name, const nn::Linear& l) {
  out.emplace_back(name + ".weight", l->weight);
  out.emplace_back(name + ".bias", l->bias);
}
void AddNorm(NamedParams& out, const std::string& name, const nn::LayerNorm& n) {
  out.emplace_back(name + ".weight", n->weight);
  out.emplace_back(name + ".bias", n->bias);
}

// The base of the three block types: each knows its HF parameter names.
class BertBlockImpl : public BlockImpl {
 public:
  explicit BertBlockImpl(BertConfig c) : c_(std::move(c)) {}
  virtual NamedParams HfParams() = 0;
  const BertConfig& config() const { return c_; }

 protected:
  BertConfig c_;
};

// A deep copy of a BERT block for a replica: same device and dtype (float64
// runs replicate float64 blocks), same values, and the same parameters
// frozen (train=head keeps the encoder frozen in every replica).
template <typename T>
std::shared_ptr<BlockImpl> ReplicateBlock(const T& original) {
  auto copy = std::make_shared<T>(original.config());
  auto& source = const_cast<T&>(original);
  auto params = source.parameters();
  if (!params.empty()) copy->to(params[0].device(), params[0].scalar_type());
  CopyState(source, *copy);
  auto copied = copy->named_parameters();
  for (const auto& p : source.named_parameters()) {
    copied[p.key()].set_requires_grad(p.value().requires_grad());
  }
  return copy;
}

class BertEmbeddingsImpl : public BertBlockImpl {
 public:
  explicit BertEmbeddingsImpl(const BertConfig& c) : BertBlockImpl(c) {
    word_ = register_module("word_embeddings", nn::Embedding(c.vocab_size, c.hidden));
    position_ = register_module("position_embeddings", nn::Embedding(c.max_positions, c.hidden));
    token_type_ = register_module("token_type_embeddings", nn::Embedding(c.type_vocab, c.hidden));
    norm_ = register_module("LayerNorm", MakeLayerNorm(c));
    dropout_ = register_module("dropout", nn::Dropout(c.dropout));
    torch::NoGradGuard g;
    for (auto* e : {&word_, &position_, &token_type_}) (*e)->weight.normal_(0.0, 0.02);
  }
  Activation Forward(const Activation& in) override {
    if (in.size() != 2) {
      throw std::invalid_argument("BERT embeddings take {token ids, attention mask}, got " +
                                  std::to_string(in.size()) + " tensors");
    }
    const torch::Tensor& ids = in[0];
    const int64_t t = ids.size(1);
    if (t > c_.max_positions) {
      throw std::invalid_argument("a sequence of " + std::to_string(t) +
                                  " tokens is longer than the model's " +
                                  std::to_string(c_.max_positions) + " positions");
    }
    torch::Tensor positions = torch::arange(t, ids.options().dtype(torch::kLong));
    torch::Tensor h = word_(ids) + position_(positions).unsqueeze(0) +
                      token_type_->weight[0].view({1, 1, c_.hidden});
    return {dropout_(norm_(h)), in[1]};
  }
  std::shared_ptr<BlockImpl> Replicate() const override { return ReplicateBlock(*this); }
  NamedParams HfParams() override {
    NamedParams p = {{"word_embeddings.weight", word_->weight},
                     {"position_embeddings.weight", position_->weight},
                     {"token_type_embeddings.weight", token_type_->weight}};
    AddNorm(p, "LayerNorm", norm_);
    return p;
  }
  torch::Tensor word_weight() const { return word_->weight; }

 private:
  nn::Embedding word_{nullptr}, position_{nullptr}, token_type_{nullptr};
  nn::LayerNorm norm_{nullptr};
  nn::Dropout dropout_{nullptr};
};

// Post-LayerNorm: h = LN(x + Attn(x)); out = LN(h + FFN(h)).
class BertLayerImpl : public BertBlockImpl {
 public:
  explicit BertLayerImpl(const BertConfig& c) : BertBlockImpl(c) {
    if (c.hidden % c.heads != 0) {
      throw std::invalid_argument("BERT width " + std::to_string(c.hidden) +
                                  " is not divisible by " + std::to_string(c.heads) + " heads");
    }
    query_ = register_module("query", nn::Linear(c.hidden, c.hidden));
    key_ = register_module("key", nn::Linear(c.hidden, c.hidden));
    value_ = register_module("value", nn::Linear(c.hidden, c.hidden));
    attn_out_ = register_module("attention_output", nn::Linear(c.hidden, c.hidden));
    attn_norm_ = register_module("attention_norm", MakeLayerNorm(c));
    inter_ = register_module("intermediate", nn::Linear(c.hidden, c.intermediate));
    out_ = register_module("output", nn::Linear(c.intermediate, c.hidden));
    out_norm_ = register_module("output_norm", MakeLayerNorm(c));
    dropout_ = register_module("dropout", nn::Dropout(c.dropout));
    for (auto* l : {&query_, &key_, &value_, &attn_out_, &inter_, &out_}) InitLinear(*l);
  }
  Activation Forward(const Activation& in) override {
    const torch::Tensor& x = in[0];
    const torch::Tensor& mask = in[1];
    const int64_t n = x.size(0), t = x.size(1), h = c_.heads, d = c_.hidden / c_.heads;
    auto heads = [&](const torch::Tensor& y) { return y.view({n, t, h, d}).transpose(1, 2); };
    torch::Tensor q = heads(query_(x)), k = heads(key_(x)), v = heads(value_(x));
    torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(d));
    // BertModel's extended mask: 0 for real keys, the dtype's lowest value
    // for padding, added to the scores.
    const double lowest = x.scalar_type() == torch::kDouble
                              ? std::numeric_limits<double>::lowest()
                              : static_cast<double>(std::numeric_limits<float>::lowest());
    torch::Tensor additive =
        (1.0 - mask.to(x.scalar_type())).mul(lowest).view({n, 1, 1, t});
    torch::Tensor probs = dropout_(torch::softmax(scores + additive, -1));
    torch::Tensor context = torch::matmul(probs, v).transpose(1, 2).reshape({n, t, c_.hidden});
    torch::Tensor a = attn_norm_(x + dropout_(attn_out_(context)));
    torch::Tensor y = out_norm_(a + dropout_(out_(torch::gelu(inter_(a)))));
    return {y, mask};
  }
  std::shared_ptr<BlockImpl> Replicate() const override { return ReplicateBlock(*this); }
  NamedParams HfParams() override {
    NamedParams p;
    AddLinear(p, "attention.self.query", query_);
    AddLinear(p, "attention.self.key", key_);
    AddLinear(p, "attention.self.value", value_);
    AddLinear(p, "attention.output.dense", attn_out_);
    AddNorm(p, "attention.output.LayerNorm", attn_norm_);
    AddLinear(p, "intermediate.dense", inter_);
    AddLinear(p, "output.dense", out_);
    AddNorm(p, "output.LayerNorm", out_norm_);
    return p;
  }

 private:
  nn::Linear query_{nullptr}, key_{nullptr}, value_{nullptr}, attn_out_{nullptr}, inter_{nullptr},
      out_{nullptr};
  nn::LayerNorm attn_norm_{nullptr}, out_norm_{nullptr};
  nn::Dropout dropout_{nullptr};
};

// BertForMaskedLM's name of the decoder weight.
constexpr char kBertDecoderName[] = "cls.predictions.decoder.weight";

class BertMlmHeadImpl : public BertBlockImpl {
 public:
  explicit BertMlmHeadImpl(const BertConfig& c) : BertBlockImpl(c) {
    dense_ = register_module("transform_dense", nn::Linear(c.hidden, c.hidden));
    norm_ = register_module("transform_norm", MakeLayerNorm(c));
    decoder_ = register_parameter("decoder", torch::zeros({c.vocab_size, c.hidden}));
    bias_ = register_parameter("bias", torch::zeros({c.vocab_size}));
    InitLinear(dense_);
  }
  Activation Forward(const Activation& in) override {
    torch::Tensor z = norm_(torch::gelu(dense_(in[0])));
    return {torch::matmul(z, decoder().t()) + bias_, in[0], in[1]};
  }
  std::shared_ptr<BlockImpl> Replicate() const override { return ReplicateBlock(*this); }
  // BertForMaskedLM's names; the decoder weight is tied to the word
  // embeddings there, so checkpoints usually hold it only as those.
  NamedParams HfParams() override {
    NamedParams p;
    AddLinear(p, "cls.predictions.transform.dense", dense_);
    AddNorm(p, "cls.predictions.transform.LayerNorm", norm_);
    p.emplace_back("cls.predictions.bias", bias_);
    return p;
  }
  // The shared table when ShareBertDecoder made one, else its own.
  torch::Tensor decoder() const { return shared_.defined() ? shared_ : decoder_; }
  void Share(torch::Tensor word_embeddings) {
    decoder_.set_requires_grad(false);
    shared_ = std::move(word_embeddings);
  }

 private:
  nn::Linear dense_{nullptr};
  nn::LayerNorm norm_{nullptr};
  torch::Tensor decoder_, bias_;
  torch::Tensor shared_;  // Not a parameter of this block: the embeddings'.
};

template <typename T>
T* As(const Block& b) {
  return dynamic_cast<T*>(b.get());
}

int GetInt(const json& j, const char* field, const std::string& path) {
  if (!j.contains(field) || !j[field].is_number_integer() || j[field].get<int64_t>() <= 0) {
    throw std::runtime_error(path + ": field '" + field + "' is missing or not a positive integer");
  }
  return j[field].get<int>();
}

}  // namespace

BertConfig BertConfig::FromJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read the BERT config " + path);
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw std::runtime_error(path + " is not JSON: " + e.what());
  }
  if (j.value("model_type", std::string()) != "bert") {
    throw std::runtime_error(path + ": model_type is not \"bert\"");
  }
  if (j.value("hidden_act", std::string("gelu")) != "gelu") {
    throw std::runtime_error(path + ": hidden_act " + j["hidden_act"].dump() +
                             " is not supported (only \"gelu\")");
  }
  if (j.value("position_embedding_type", std::string("absolute")) != "absolute") {
    throw std::runtime_error(path + ": only absolute position embeddings are supported");
  }
  BertConfig c;
  c.vocab_size = GetInt(j, "vocab_size", path);
  c.hidden = GetInt(j, "hidden_size", path);
  c.layers = GetInt(j, "num_hidden_layers", path);
  c.heads = GetInt(j, "num_attention_heads", path);
  c.intermediate = GetInt(j, "intermediate_size", path);
  c.max_positions = GetInt(j, "max_position_embeddings", path);
  c.type_vocab = GetInt(j, "type_vocab_size", path);
  c.layer_norm_eps = j.value("layer_norm_eps", 1e-12);
  c.dropout = j.value("hidden_dropout_prob", 0.1);
  if (c.hidden % c.heads != 0) {
    throw std::runtime_error(path + ": hidden_size " + std::to_string(c.hidden) +
                             " is not divisible by num_attention_heads " + std::to_string(c.heads));
  }
  return c;
}

BertConfig ReadPretrainedBertConfig(const std::string& dir) {
  for (const char* file : {"config.json", "model.safetensors"}) {
    const std::string path = dir + "/" + file;
    if (!std::ifstream(path)) {
      throw std::runtime_error(path + " is missing (a pretrained BERT directory holds " +
                               "config.json and model.safetensors, as Hugging Face saves them)");
    }
  }
  return BertConfig::FromJsonFile(dir + "/config.json");
}

PretrainedBert ReadPretrainedBert(const std::string& dir) {
  PretrainedBert out;
  out.config = ReadPretrainedBertConfig(dir);
  out.weights_path = dir + "/model.safetensors";
  out.tensors = ReadSafetensors(out.weights_path);
  return out;
}

BlockList MakeBert(const BertConfig& c, bool with_head) {
  BlockList blocks;
  auto embeddings = std::make_shared<BertEmbeddingsImpl>(c);
  blocks.push_back(embeddings);
  for (int i = 0; i < c.layers; ++i) blocks.push_back(std::make_shared<BertLayerImpl>(c));
  if (with_head) {
    auto head = std::make_shared<BertMlmHeadImpl>(c);
    torch::NoGradGuard g;
    head->decoder().copy_(embeddings->word_weight());
    blocks.push_back(head);
  }
  return blocks;
}

int LoadBert(const NamedTensors& tensors, const BertConfig& c, const BlockList& blocks,
             const std::string& source, const std::vector<int>& layer_map) {
  if (blocks.empty() || As<BertEmbeddingsImpl>(blocks[0]) == nullptr) {
    throw std::invalid_argument("LoadBert: the blocks do not start with BERT embeddings");
  }
  const std::string prefix = tensors.count("bert.embeddings.word_embeddings.weight") ? "bert." : "";
  torch::NoGradGuard g;
  int loaded = 0;
  auto load = [&](BertBlockImpl& block, const std::string& hf_prefix) {
    for (auto& [name, param] : block.HfParams()) {
      const std::string full = hf_prefix + name;
      torch::Tensor t = TakeTensor(tensors, full, param.sizes(), torch::kFloat32, source);
      param.copy_(t);
      ++loaded;
    }
  };
  load(*As<BertEmbeddingsImpl>(blocks[0]), prefix + "embeddings.");
  int layer = 0;
  for (size_t b = 1; b < blocks.size(); ++b) {
    if (auto* l = As<BertLayerImpl>(blocks[b])) {
      const int from = layer_map.empty() ? layer : layer_map.at(layer);
      load(*l, prefix + "encoder.layer." + std::to_string(from) + ".");
      ++layer;
    } else if (auto* head = As<BertMlmHeadImpl>(blocks[b])) {
      if (tensors.count("cls.predictions.bias")) load(*head, "");
      // BERT ties the decoder to the word embeddings, and its checkpoints
      // hold it only as those; a student trained untied (see
      // BertTensors) brings its own.
      if (tensors.count(kBertDecoderName)) {
        head->decoder().copy_(TakeTensor(tensors, kBertDecoderName, head->decoder().sizes(),
                                         torch::kFloat32, source));
        ++loaded;
      } else {
        head->decoder().copy_(As<BertEmbeddingsImpl>(blocks[0])->word_weight());
      }
    } else {
      throw std::invalid_argument("LoadBert: block " + std::to_string(b) + " is not a BERT block");
    }
  }
  if (!layer_map.empty() && static_cast<int>(layer_map.size()) != layer) {
    throw std::invalid_argument("LoadBert: a layer map of " + std::to_string(layer_map.size()) +
                                " entries for " + std::to_string(layer) + " layers");
  }
  return loaded;
}

NamedTensors BertHeadTensors(const Block& head) {
  auto* h = As<BertMlmHeadImpl>(head);
  if (h == nullptr) throw std::invalid_argument("BertHeadTensors: not a masked-LM head block");
  NamedTensors out;
  for (auto& [name, t] : h->HfParams()) out[name] = t.detach().to(torch::kCPU).clone();
  return out;
}

NamedTensors BertTensors(const BlockList& blocks) {
  NamedTensors out;
  int layer = 0;
  for (const Block& b : blocks) {
    std::string prefix;
    if (As<BertEmbeddingsImpl>(b)) {
      prefix = "embeddings.";
    } else if (As<BertLayerImpl>(b)) {
      prefix = "encoder.layer." + std::to_string(layer++) + ".";
    } else if (!As<BertMlmHeadImpl>(b)) {
      throw std::invalid_argument("BertTensors: a block is not a BERT block");
    }
    for (auto& [name, t] : dynamic_cast<BertBlockImpl&>(*b).HfParams()) {
      out[prefix + name] = t.detach().to(torch::kCPU).clone();
    }
    // The decoder too: a parameter of its own (tied during training by
    // summed gradients, or not with tie_decoder=false), so a student trained
    // untied keeps what it learnt.
    if (auto* head = As<BertMlmHeadImpl>(b)) {
      out[kBertDecoderName] = head->decoder().detach().to(torch::kCPU).clone();
    }
  }
  return out;
}

void ShareBertDecoder(const BlockList& blocks) {
  auto* e = blocks.empty() ? nullptr : As<BertEmbeddingsImpl>(blocks[0]);
  auto* h = blocks.empty() ? nullptr : As<BertMlmHeadImpl>(blocks.back());
  if (e == nullptr || h == nullptr) {
    throw std::invalid_argument("ShareBertDecoder: the blocks are not a BERT with a head");
  }
  h->Share(e->word_weight());
}

torch::Tensor BertMlmHeadWeight(const Block& head) {
  auto* h = As<BertMlmHeadImpl>(head);
  if (h == nullptr) throw std::invalid_argument("BertMlmHeadWeight: not a masked-LM head block");
  return h->decoder();
}

torch::Tensor BertWordEmbeddings(const Block& embeddings) {
  auto* e = As<BertEmbeddingsImpl>(embeddings);
  if (e == nullptr) throw std::invalid_argument("BertWordEmbeddings: not a BERT embeddings block");
  return e->word_weight();
}

}  // namespace tspipe
