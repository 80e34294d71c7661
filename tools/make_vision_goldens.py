#!/usr/bin/env python3
"""Golden files of //models:vision_models_test, from torchvision and timm.

    python3 -m venv ~/.cache/tspipe/pytorch-venv
    ~/.cache/tspipe/pytorch-venv/bin/pip install torch==2.11.0 torchvision==0.26.0 \
        timm safetensors numpy
    ~/.cache/tspipe/pytorch-venv/bin/python tools/make_vision_goldens.py

Writes, under tests/golden/:
  vision_names.txt: "<model> <tensor> <d0,d1,...>" for every state_dict
    tensor of resnet18, resnet50 and resnet152 (torchvision, 3 channels,
    1000 classes) and of vit_tiny, vit_base and vit_large with patch 16 at
    224x224 (timm, 1000 classes): the names and shapes tspipe must give.
  vision_forward.safetensors: for small instances (resnet18 and resnet50 at
    3x32x32 with 10 classes, vit_tiny_patch16 at 3x32x32 with 10 classes),
    in float64, after Fill (the weight rule below, which the C++ test applies
    too, so no weights are stored): the input, the eval-mode output, the
    train-mode output, for every parameter the sum and the sum of squares of
    its gradient after one backward of sum(train_output * Cosines), and for
    every batch-norm buffer its sum after that train-mode forward. Also
    timm's resample_abs_pos_embed of a filled [1, 197, 192] pos_embed onto a
    2x2 grid.
  vision_kd_training.safetensors: knowledge distillation in plain PyTorch,
    float64: a resnet34 teacher (eval mode, frozen) into a resnet18 student
    (train mode) at 3x32x32 with 10 classes, both Filled, KD_STEPS steps of
    SGD (lr 0.05, momentum 0.9, weight decay 5e-4) on batches of 8 made by
    the Sines rule (labels i mod 10), each batch split into 2 micro-batches
    of 4 run one after the other (as a pipeline runs them: batch norm sees
    micro-batches, its running statistics updated micro-batch by
    micro-batch), each micro-batch's loss scaled by 1/2 and backpropagated,
    the gradients accumulated, then one optimizer step. Records every step's
    loss (the mean of the micro-batch losses) and the sum and sum of squares
    of every final student parameter and buffer.
The C++ sides are models/vision_models_test.cc and
backends/vision_kd_pytorch_test.cc; keep them in step.
"""
import math
import os
import sys

import timm
import torch
import torchvision
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden")


def fill(model):
    """Deterministic weights both sides compute: tensor k of the state dict
    in name order gets sin(0.7 i + 1.3 k) over its elements i, scaled so that
    matrices and kernels have ~1/sqrt(fan_in) entries, norm weights sit near
    1, biases and running means near 0 and running variances in [1, 1.5]."""
    state = model.state_dict()
    with torch.no_grad():
        for k, name in enumerate(sorted(state)):
            t = state[name]
            if not t.is_floating_point():
                continue
            n = t.numel()
            base = torch.sin(torch.arange(n, dtype=torch.float64) * 0.7 + 1.3 * k)
            if name.endswith("running_var"):
                v = 1 + 0.5 * base.abs()
            elif t.dim() >= 2:
                v = base / math.sqrt(n / t.shape[0])
            elif name.endswith("weight"):
                v = 1 + 0.2 * base
            else:
                v = 0.1 * base
            t.copy_(v.reshape(t.shape).to(t.dtype))


def sines(shape, phase):
    n = math.prod(shape)
    return torch.sin(torch.arange(n, dtype=torch.float64) * 0.37 + phase).reshape(shape)


def cosines(shape):
    n = math.prod(shape)
    return torch.cos(torch.arange(n, dtype=torch.float64) * 0.91).reshape(shape)


def forward_golden(prefix, model, out):
    model = model.double()
    fill(model)
    x = sines((2, 3, 32, 32), 0.1)
    model.eval()
    with torch.no_grad():
        out[prefix + "eval_output"] = model(x)
    model.train()
    y = model(x)
    (y * cosines(tuple(y.shape))).sum().backward()
    out[prefix + "input"] = x
    out[prefix + "train_output"] = y.detach()
    for name, p in model.named_parameters():
        out[prefix + "grad_sum." + name] = p.grad.sum().reshape(1)
        out[prefix + "grad_sumsq." + name] = p.grad.pow(2).sum().reshape(1)
    for name, b in model.named_buffers():
        if b.is_floating_point():
            out[prefix + "buffer_sum." + name] = b.sum().reshape(1)


KD_STEPS = 5
KD_BATCH = 8
KD_MICROBATCHES = 2


def kd_loss(s, t, y, temperature=4.0, lam=0.1):
    """tspipe's KdLoss: CE + lambda T^2 KL(softmax(t/T) || softmax(s/T))."""
    kl = torch.nn.functional.kl_div(torch.log_softmax(s / temperature, 1),
                                    torch.softmax(t / temperature, 1), reduction="batchmean")
    return torch.nn.functional.cross_entropy(s, y) + lam * temperature ** 2 * kl


def kd_training_golden(out):
    teacher = torchvision.models.resnet34(num_classes=10).double()
    student = torchvision.models.resnet18(num_classes=10).double()
    fill(teacher)
    fill(student)
    teacher.eval()
    student.train()
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    losses = []
    for step in range(KD_STEPS):
        x = sines((KD_BATCH, 3, 32, 32), 0.1 + step)
        y = torch.arange(KD_BATCH) % 10
        opt.zero_grad()
        total = 0.0
        for xm, ym in zip(x.chunk(KD_MICROBATCHES), y.chunk(KD_MICROBATCHES)):
            with torch.no_grad():
                t = teacher(xm)
            loss = kd_loss(student(xm), t, ym) / KD_MICROBATCHES
            loss.backward()
            total += loss.item()
        opt.step()
        losses.append(total)
    out["loss"] = torch.tensor(losses, dtype=torch.float64)
    for name, t in student.state_dict().items():
        if t.is_floating_point():
            out["sum." + name] = t.sum().reshape(1)
            out["sumsq." + name] = t.pow(2).sum().reshape(1)


def names_lines(label, model):
    return [f"{label} {name} {','.join(str(d) for d in t.shape)}"
            for name, t in model.state_dict().items()]


def main():
    torch.manual_seed(0)
    lines = []
    for name in ("resnet18", "resnet50", "resnet152"):
        lines += names_lines(name, getattr(torchvision.models, name)(num_classes=1000))
    for name in ("vit_tiny_patch16", "vit_base_patch16", "vit_large_patch16"):
        lines += names_lines(name, timm.create_model(name + "_224", pretrained=False,
                                                     num_classes=1000))
    with open(os.path.join(GOLDEN, "vision_names.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")

    out = {}
    forward_golden("resnet18.", torchvision.models.resnet18(num_classes=10), out)
    forward_golden("resnet50.", torchvision.models.resnet50(num_classes=10), out)
    forward_golden("vit_tiny_patch16.",
                   timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                                     num_classes=10), out)
    pos = sines((1, 197, 192), 0.2)
    out["resample.output"] = resample_abs_pos_embed(pos, new_size=(2, 2), num_prefix_tokens=1)
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(GOLDEN, "vision_forward.safetensors"),
              metadata={"torch": torch.__version__, "torchvision": torchvision.__version__,
                        "timm": timm.__version__})
    kd = {}
    kd_training_golden(kd)
    save_file(kd, os.path.join(GOLDEN, "vision_kd_training.safetensors"),
              metadata={"torch": torch.__version__, "torchvision": torchvision.__version__})
    print(f"wrote {len(lines)} names and {len(out)} golden tensors "
          f"(torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"timm {timm.__version__})", file=sys.stderr)


if __name__ == "__main__":
    main()
