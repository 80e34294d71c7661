#!/usr/bin/env python3
"""Converts a PyTorch state dict (.pth / .pt / .bin) into a safetensors file
that tspipe loads strictly as a teacher (--teacher_checkpoint) or an initial
student (--initial_checkpoint), e.g. torchvision's or timm's pretrained
weights:

    python3 -m venv ~/.cache/tspipe/pytorch-venv
    ~/.cache/tspipe/pytorch-venv/bin/pip install torch==2.11.0 safetensors
    ~/.cache/tspipe/pytorch-venv/bin/python tools/pth_to_safetensors.py \\
        resnet50-11ad3fa6.pth resnet50.safetensors

Accepts a bare state dict or a training checkpoint holding one under
"state_dict", "model" or "model_state_dict"; drops the "module." prefix that
DataParallel / DistributedDataParallel add; --strip_prefix / --add_prefix
rename further (a BYOL or MoCo backbone saved under "backbone." loads into
tspipe's online network under the same prefix). Tensor names must then be
PyTorch's (torchvision's and timm's state_dict names: models/vision_models.h).
Writes to a temporary name and renames, so a failed run leaves no file.
"""
import argparse
import os
import sys

import torch
from safetensors.torch import save_file


def state_dict_of(obj, path):
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    sys.exit(f"pth_to_safetensors: {path} holds no state dict (a dict of tensors, or one under "
             "state_dict / model / model_state_dict)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--strip_prefix", default="", help="drop this prefix from every name")
    parser.add_argument("--add_prefix", default="", help="then put this one in front")
    args = parser.parse_args()
    try:
        obj = torch.load(args.input, map_location="cpu", weights_only=True)
    except Exception as e:  # Missing, truncated or not a torch file: one line.
        sys.exit(f"pth_to_safetensors: cannot read {args.input}: {str(e).splitlines()[0]}")
    tensors = {}
    for name, t in state_dict_of(obj, args.input).items():
        if not isinstance(t, torch.Tensor):
            continue
        if name.startswith("module."):
            name = name[len("module."):]
        if args.strip_prefix and name.startswith(args.strip_prefix):
            name = name[len(args.strip_prefix):]
        tensors[args.add_prefix + name] = t.detach().contiguous()
    if not tensors:
        sys.exit(f"pth_to_safetensors: {args.input} holds no tensors")
    tmp = args.output + ".tmp"
    save_file(tensors, tmp)
    os.replace(tmp, args.output)
    print(f"wrote {len(tensors)} tensors to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
