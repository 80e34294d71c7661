// BERT (Devlin et al. 2019) as a block sequence, the shape Hugging Face's
// BertModel / BertForMaskedLM compute, so that pretrained weights load and any
// balance cuts it:
//   block 0      embeddings: word + position + token type 0, LayerNorm, dropout;
//   blocks 1..L  one post-LayerNorm transformer layer each (GELU);
//   block L+1    (optional) the masked-LM head: dense, GELU, LayerNorm, then a
//                decoder onto the vocabulary plus a bias.
// Activations: the input is {token ids [N, T] int64, attention mask [N, T]
// int64, 1 = real token, 0 = padding}; between blocks {hidden [N, T, H],
// mask}, so the mask crosses stage boundaries with the hidden states; the
// head's output is {logits [N, T, V], last hidden [N, T, H], mask}. Padded
// keys are masked out of attention.
#ifndef TSPIPE_MODELS_BERT_H_
#define TSPIPE_MODELS_BERT_H_

#include <torch/torch.h>

#include <string>
#include <vector>

#include "core/partition.h"
#include "io/safetensors.h"

namespace tspipe {

struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden = 384;
  int layers = 6;
  int heads = 12;
  int64_t intermediate = 1536;
  int64_t max_positions = 512;
  int64_t type_vocab = 2;
  double layer_norm_eps = 1e-12;
  double dropout = 0.1;  // Hidden and attention-probability dropout.

  // Reads a Hugging Face config.json (hidden_size, num_hidden_layers, ...).
  // Throws std::runtime_error naming the file and the field when it is
  // missing, not a BERT with absolute positions and GELU, or a field is bad.
  static BertConfig FromJsonFile(const std::string& path);
};

// A randomly initialised BERT (weights N(0, 0.02), biases 0, LayerNorm 1 and
// 0, as BertPreTrainedModel does): embeddings, `config.layers` layers, and
// the masked-LM head when `with_head`. The head's decoder starts as a copy
// of the word embeddings (BERT ties them; see BertMlmHeadWeight).
BlockList MakeBert(const BertConfig& config, bool with_head);

// Loads a BertModel checkpoint (tensor names embeddings.*, encoder.layer.N.*,
// as in all-MiniLM-L6-v2's model.safetensors, optionally prefixed "bert.")
// into the embeddings and layers of `blocks` (from MakeBert), and, when the
// blocks end in a head and the checkpoint has cls.predictions.* tensors, the
// head too; a head without them gets its decoder set to the loaded word
// embeddings. `layer_map[i]` is the checkpoint layer that block 1 + i takes
// (empty = 0, 1, 2, ...), which is how a DistilBERT student takes every other
// teacher layer. Throws std::runtime_error naming `source` and the tensor
// when one is missing or has the wrong shape or dtype. Returns the number of
// tensors loaded.
int LoadBert(const NamedTensors& tensors, const BertConfig& config, const BlockList& blocks,
             const std::string& source, const std::vector<int>& layer_map = {});

// A pretrained BERT as Hugging Face saves one: config.json and
// model.safetensors in `dir`.
struct PretrainedBert {
  BertConfig config;
  NamedTensors tensors;
  std::string weights_path;
};
// Throws std::runtime_error naming the missing file, or the problem with
// the file.
PretrainedBert ReadPretrainedBert(const std::string& dir);
// Only its config (both files must be there, with the same errors), for
// callers that need the shape before the weights.
BertConfig ReadPretrainedBertConfig(const std::string& dir);

// The head's tensors under BertForMaskedLM's names (cls.predictions.*), for
// saving a fitted head; throws std::invalid_argument when `head` is not a
// masked-LM head block.
NamedTensors BertHeadTensors(const Block& head);

// Every tensor of `blocks` under Hugging Face's names (embeddings.*,
// encoder.layer.N.*, and cls.predictions.* for a head), on the CPU: what
// LoadBert reads, and what transformers' BertForMaskedLM loads.
NamedTensors BertTensors(const BlockList& blocks);

// The head's decoder weight [V, H] (a parameter of the head block), so a
// caller can freeze it while it equals the frozen teacher's embeddings.
torch::Tensor BertMlmHeadWeight(const Block& head);
// Makes the head of `blocks` (MakeBert with a head) compute with the
// word-embedding table itself, one tensor used twice, so that autograd sums
// both uses' gradients, as BertForMaskedLM ties them within one module. Its
// own decoder parameter is then frozen and unused, and BertTensors writes
// the table as the decoder. For a model on one device that is not
// replicated (a plain training loop); a pipeline keeps two copies and sums
// their gradients instead (ModelSet::student_ties).
void ShareBertDecoder(const BlockList& blocks);
// The word-embedding table [V, H] of an embeddings block.
torch::Tensor BertWordEmbeddings(const Block& embeddings);

}  // namespace tspipe

#endif  // TSPIPE_MODELS_BERT_H_
