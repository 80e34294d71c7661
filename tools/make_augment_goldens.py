#!/usr/bin/env python3
"""Golden file of tspipe's image augmentations, from torchvision.

    python3 -m venv ~/.cache/tspipe/pytorch-venv
    ~/.cache/tspipe/pytorch-venv/bin/pip install torch==2.11.0 torchvision==0.26.0 \
        safetensors numpy
    ~/.cache/tspipe/pytorch-venv/bin/python tools/make_augment_goldens.py

Uses torchvision.transforms.v2.functional (the functional API torchvision
recommends; on plain float CHW tensors it runs the same tensor kernels as
torchvision.transforms.functional, which this script checks), generated with
torch 2.11.0, torchvision 0.26.0 and Pillow 13.0.0. The versions actually
used are also in the safetensors metadata ("torch", "torchvision", "PIL").

The input both sides compute (nothing is stored to make it): H=37, W=53,
RGB uint8, pixel(y, x, c) = (y*7 + x*13 + c*101 + (x*y) % 17) % 256; as CHW
float, img = uint8 / 255.

Writes, under tests/golden/:
  augment_tiny.jpg: the input saved by PIL as JPEG, quality 90, default
    (4:2:0) subsampling.
  augment_tiny.png: the input saved by PIL as PNG.
  augment_ops.safetensors: float32 CHW tensors:
    input         img itself, so the C++ side can check its own formula.
    crop_down     resized_crop(img, 5, 7, 25, 40, [20, 24]), bilinear,
                  antialias (downscale in both directions).
    crop_up       resized_crop(img, 3, 4, 10, 12, [31, 29]), bilinear,
                  antialias (upscale in both directions).
    crop_full     resize(img, [24, 24]), bilinear, antialias (non-uniform).
    hflip, brightness (1.3), contrast (0.7), saturation (1.4),
    hue_pos (0.08), hue_neg (-0.1), grayscale (3 channels),
    blur (7x7, sigma 1.3), blur_big (23x23, sigma 2: the kernel is wider
    than the 20-row image, so reflect padding of 11 matters),
    solarize (0.5), normalize (ImageNet mean/std): each of crop_down.
    eval          center_crop(resize(img, 32), [28, 28]): shorter side to
                  32, so 32x45 (torchvision truncates 53*32/37 = 45.8),
                  then the central 28x28.
    jitter_chain  crop_down through adjust_contrast(0.8), adjust_hue(-0.05),
                  adjust_brightness(1.2), adjust_saturation(0.6), in order.
    jpeg_decoded  PIL's decoding of augment_tiny.jpg, CHW float / 255.
    png_decoded   PIL's decoding of augment_tiny.png (equal to input; the
                  script asserts it).
  image_folder_order.txt: torchvision's ImageFolder on a tree made of the
    empty files FOLDER_TREE names (the C++ test makes the same tree): one
    line "<class index> <path relative to the root>" per sample, in
    ImageFolder's order, after a first line listing the classes.
The C++ side is the augmentation test of tspipe's image pipeline; keep them
in step.
"""
import os
import sys

import numpy as np
import PIL
import torch
import torchvision
import torchvision.transforms.functional as F1
import torchvision.transforms.v2.functional as F
from PIL import Image
from safetensors.torch import save_file
from torchvision.transforms import InterpolationMode

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden")
BILINEAR = InterpolationMode.BILINEAR
H, W = 37, 53
MAX_BYTES = 200 * 1024


def input_u8():
    """The test image as HWC uint8 numpy, by the formula in the docstring."""
    y = np.arange(H).reshape(H, 1, 1)
    x = np.arange(W).reshape(1, W, 1)
    c = np.arange(3).reshape(1, 1, 3)
    return ((y * 7 + x * 13 + c * 101 + (x * y) % 17) % 256).astype(np.uint8)


def decode(path):
    """PIL's decoding of an image file as CHW float32 in [0, 1]."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"))
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255


def ops(f, img):
    """Every golden tensor computed from img with the functional module f."""
    out = {"input": img}
    crop_down = f.resized_crop(img, top=5, left=7, height=25, width=40, size=[20, 24],
                               interpolation=BILINEAR, antialias=True)
    out["crop_down"] = crop_down
    out["crop_up"] = f.resized_crop(img, top=3, left=4, height=10, width=12, size=[31, 29],
                                    interpolation=BILINEAR, antialias=True)
    out["crop_full"] = f.resize(img, [24, 24], interpolation=BILINEAR, antialias=True)
    out["hflip"] = f.hflip(crop_down)
    out["brightness"] = f.adjust_brightness(crop_down, 1.3)
    out["contrast"] = f.adjust_contrast(crop_down, 0.7)
    out["saturation"] = f.adjust_saturation(crop_down, 1.4)
    out["hue_pos"] = f.adjust_hue(crop_down, 0.08)
    out["hue_neg"] = f.adjust_hue(crop_down, -0.1)
    out["grayscale"] = f.rgb_to_grayscale(crop_down, num_output_channels=3)
    out["blur"] = f.gaussian_blur(crop_down, kernel_size=[7, 7], sigma=[1.3, 1.3])
    out["blur_big"] = f.gaussian_blur(crop_down, kernel_size=[23, 23], sigma=[2.0, 2.0])
    out["solarize"] = f.solarize(crop_down, 0.5)
    out["normalize"] = f.normalize(crop_down, mean=[0.485, 0.456, 0.406],
                                   std=[0.229, 0.224, 0.225])
    # An int size means "shorter side to 32", as transforms.Resize(32) does.
    out["eval"] = f.center_crop(f.resize(img, 32, interpolation=BILINEAR, antialias=True),
                                [28, 28])
    j = f.adjust_contrast(crop_down, 0.8)
    j = f.adjust_hue(j, -0.05)
    j = f.adjust_brightness(j, 1.2)
    out["jitter_chain"] = f.adjust_saturation(j, 0.6)
    return out


# Mixed case, nested folders, names that sort differently as paths than as
# components ("sub-x" before "sub/"), every extension spelling.
FOLDER_TREE = [
    "zebra/b.jpg", "zebra/a.JPG", "apple/z.png", "apple/sub/a.jpg", "apple/sub-x/c.jpeg",
    "apple/a.jpg", "Mango/m.png", "apple/sub/b/x.jpg", "apple/_u.jpg", "apple/B.jpg",
    "apple/sub/b.PNG",
]


def folder_order():
    import tempfile
    with tempfile.TemporaryDirectory() as root:
        for rel in FOLDER_TREE:
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            open(os.path.join(root, rel), "wb").close()
        ds = torchvision.datasets.ImageFolder(root, loader=lambda p: None)
        lines = [" ".join(ds.classes)]
        lines += [f"{label} {os.path.relpath(path, root)}" for path, label in ds.samples]
    with open(os.path.join(GOLDEN, "image_folder_order.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    folder_order()
    hwc = input_u8()
    img_u8 = torch.from_numpy(hwc).permute(2, 0, 1).contiguous()
    img = img_u8.float() / 255

    jpg = os.path.join(GOLDEN, "augment_tiny.jpg")
    png = os.path.join(GOLDEN, "augment_tiny.png")
    Image.fromarray(hwc, mode="RGB").save(jpg, format="JPEG", quality=90)
    Image.fromarray(hwc, mode="RGB").save(png, format="PNG")

    out = ops(F, img)
    # The v1 functional API is what older training scripts call; the C++ side
    # should match both, so make sure they have not drifted apart.
    for name, t in ops(F1, img).items():
        diff = (t - out[name]).abs().max().item()
        assert diff <= 1e-6, f"{name}: v1 and v2 functional differ by {diff}"

    out["jpeg_decoded"] = decode(jpg)
    out["png_decoded"] = decode(png)
    assert torch.equal(out["png_decoded"], img), "PNG round trip is not exact"

    for name, t in out.items():
        assert t.dtype == torch.float32 and t.dim() == 3 and t.shape[0] == 3, name
    path = os.path.join(GOLDEN, "augment_ops.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path,
              metadata={"torch": torch.__version__, "torchvision": torchvision.__version__,
                        "PIL": PIL.__version__})
    # safetensors writes through a private temporary file (mode 0600); make
    # the golden readable like its neighbours, e.g. by a sandboxed test user.
    os.chmod(path, 0o644)
    total = sum(os.path.getsize(p) for p in (path, jpg, png))
    assert total < MAX_BYTES, f"goldens are {total} bytes, over {MAX_BYTES}"
    print(f"wrote {len(out)} tensors, {total} bytes in all (torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, PIL {PIL.__version__})", file=sys.stderr)


if __name__ == "__main__":
    main()
