// A student for blockwise distillation of any teacher network: one student
// block per teacher block, with the teacher block's input and output
// shapes, so that student block i can learn teacher block i from the
// teacher's own input (algorithms/blockwise.h):
//   - the first block (stem or patch embedding) and the last (head) are
//     fresh copies of the teacher's, re-initialised;
//   - a convolutional block (N,C,H,W -> N,C',H',W') becomes a bottleneck
//     with a depthwise middle (1x1 down to a quarter of min(C, C'), 3x3
//     depthwise with the block's stride, 1x1 up; a residual when the shape
//     is kept), in the spirit of the MobileNet-style search spaces of DNA;
//   - a token block (N,T,D -> N,T,D) becomes a pre-norm transformer block
//     with the teacher's width and 64-wide heads but an MLP of width D
//     (timm's ViTs use 4D): about half the multiply-adds.
// The shapes are found by running the teacher once on one image in eval
// mode; the teacher's parameters and buffers are left as they were.
#ifndef TSPIPE_MODELS_MIRROR_STUDENT_H_
#define TSPIPE_MODELS_MIRROR_STUDENT_H_

#include <torch/torch.h>

#include <memory>
#include <string>

#include "core/partition.h"
#include "data/image_shape.h"

namespace tspipe {

struct MirrorStudent {
  // Owns every block under its index ("0.", "1.", ...).
  std::shared_ptr<torch::nn::Module> module;
  BlockList blocks;
};

// Throws std::invalid_argument naming the teacher block whose shapes no
// student block mirrors (for example one that changes a token count), and
// for a teacher of fewer than two blocks.
MirrorStudent MakeMirrorStudent(const BlockList& teacher, const ImageShape& shape);

}  // namespace tspipe

#endif  // TSPIPE_MODELS_MIRROR_STUDENT_H_
