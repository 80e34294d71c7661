#!/usr/bin/env python3
"""Loads a student that tspipe exported (--export=student.safetensors) with
PyPI's safetensors and torch, rebuilds the same network in plain PyTorch
(written here from the papers' definitions, not from tspipe's code), loads
the file with load_state_dict(strict=True) and runs one forward.

  --model=resnet  the KD / supervised / codistillation student
                  (models/resnet.h: stem conv-BN-ReLU, He et al.'s basic
                  blocks, global average pool and a linear classifier);
  --model=byol    BYOL's online network (Grill et al. 2020): that ResNet
                  body, the pool, then projector and predictor MLPs
                  (Linear-BN-ReLU-Linear).

With --golden=F it writes F (safetensors): the input, the outputs in eval
mode (batch norm's running statistics) and in train mode (batch
statistics), for //engine:export_test, which compares tspipe's C++
forward with them and needs no Python. tools/make_export_goldens.sh makes
the committed goldens. Without --golden it prints the outputs' summary.

  python3 -m venv ~/.cache/tspipe/pytorch-venv
  ~/.cache/tspipe/pytorch-venv/bin/pip install torch==2.11.0 safetensors numpy
  ~/.cache/tspipe/pytorch-venv/bin/python tools/pytorch_forward.py \
      student.safetensors --model=resnet
"""
import argparse

import torch
from safetensors.torch import load_file, save_file
from torch import nn


class Stem(nn.Module):
    """3x3 convolution, batch norm, ReLU."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """He et al. 2016: two 3x3 convolutions and a residual connection, a 1x1
    projection when the shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class GlobalPool(nn.Module):
    def forward(self, x):
        return x.mean((2, 3))


class Head(nn.Module):
    def __init__(self, cin, classes):
        super().__init__()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


class Mlp(nn.Module):
    def __init__(self, cin, hidden, cout):
        super().__init__()
        self.fc1 = nn.Linear(cin, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, cout)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def resnet_body(in_channels, widths, blocks):
    """The stem, then blocks[g] basic blocks of widths[g] channels; each group
    after the first halves the resolution in its first block."""
    layers = [Stem(in_channels, widths[0])]
    cin = widths[0]
    for g, (width, count) in enumerate(zip(widths, blocks)):
        for b in range(count):
            layers.append(BasicBlock(cin, width, 2 if g > 0 and b == 0 else 1))
            cin = width
    return layers, cin


def build(args):
    layers, features = resnet_body(args.in_channels, args.widths, args.blocks)
    if args.model == "resnet":
        layers.append(Head(features, args.classes))
    else:
        layers += [GlobalPool(), Mlp(features, args.hidden, args.projection),
                   Mlp(args.projection, args.hidden, args.projection)]
    return nn.Sequential(*layers)


def int_list(text):
    return [int(v) for v in text.split(",")]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("student", help="safetensors file written by tspipe's --export")
    p.add_argument("--model", choices=["resnet", "byol"], default="resnet")
    p.add_argument("--widths", type=int_list, default=[16, 32, 64])
    p.add_argument("--blocks", type=int_list, default=[1, 1, 1])
    p.add_argument("--in_channels", type=int, default=1)
    p.add_argument("--image_size", type=int, default=28)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--projection", type=int, default=64)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--golden", help="write input and outputs here (safetensors)")
    args = p.parse_args()

    state = load_file(args.student)
    dtype = state[next(k for k in state if k.endswith("weight"))].dtype
    net = build(args).to(dtype)
    # strict: every name PyTorch expects is in the file, and nothing else.
    net.load_state_dict(state, strict=True)

    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.samples, args.in_channels, args.image_size, args.image_size,
                    generator=gen, dtype=dtype)
    with torch.no_grad():
        net.eval()
        eval_out = net(x)
        net.train()  # Batch statistics (and running stats updated, unused).
        train_out = net(x)
    print(f"{args.student}: {len(state)} tensors loaded strictly into a PyTorch "
          f"{args.model} network; eval output {tuple(eval_out.shape)} "
          f"mean {eval_out.mean().item():.6f}, train output mean {train_out.mean().item():.6f}")
    if args.golden:
        save_file({"input": x.contiguous(), "eval_output": eval_out.contiguous(),
                   "train_output": train_out.contiguous()}, args.golden,
                  metadata={"model": args.model, "torch": torch.__version__,
                            "widths": ",".join(map(str, args.widths)),
                            "blocks": ",".join(map(str, args.blocks))})
        print(f"wrote {args.golden}")


if __name__ == "__main__":
    main()
